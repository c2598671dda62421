"""Review before publishing: renditions wait under ``review/`` until a person approves or rejects them.

Problem: a brand or legal reviewer has to see what goes out before it is public; a folder that
fills by itself cannot wait for them, and a file changed after review must not be published.
Solution: with ``review`` on for a campaign, a rendition that passed every gate is finished as
usual (watermark, label, credentials, delivery gate) but placed under ``review/`` with a
``pending_review`` manifest row. ``approve`` checks each file against the sha256 its row recorded
(what was reviewed is what is published) and publishes it the way a run does: intent first, poster
and sidecar, the video last, then the ``published`` row with ``reviewed_by``, ``reviewed_at`` and
``review_note``. ``reject`` appends a ``review_rejected`` row and a ``rejected/`` row (stage
``review``) and moves the files to ``retired/``; the decision stands for that rendition key, so a
rerun does not send it to review again. The CLI (``moviegen review``) and the Prefect ``review``
flow both call these functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moviegen.config import WebhookSettings
from moviegen.publish.manifest import (
    adopt_interrupted,
    clear_intent,
    latest_reviews,
    pending_intents,
    record_intent,
    superseded_key,
)
from moviegen.publish.webhooks import DeliveryReport, deliver_manifest_rows
from moviegen.store import (
    MANIFEST_SCHEMA,
    PENDING_REVIEW,
    PUBLISHED,
    REJECTED_SCHEMA,
    REVIEW_REJECTED,
    OutputRoot,
    move_rendition,
    new_run_id,
    published_paths,
    retired_paths,
    review_paths,
    sha256_file,
    utc_now,
)


class ReviewError(ValueError):
    """A review decision cannot be carried out; the message says which rendition and what to do."""


@dataclass
class ReviewOutcome:
    """What one approve or reject call did: the manifest rows it wrote, and what it refused."""

    decision: str
    run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one message per rendition that was not decided
    webhooks: DeliveryReport | None = None  # the decision's events, sent to the configured webhooks


def pending_reviews(
    out: OutputRoot, campaign_id: str | None = None, clip_ids: Sequence[str] = (), channel: str | None = None
) -> list[dict[str, Any]]:
    """The manifest rows of the renditions waiting for review, by campaign, clip and channel."""
    settle_interrupted_approvals(out)
    rows = [
        row
        for (campaign, clip, ch), row in latest_reviews(out).items()
        if row["status"] == PENDING_REVIEW
        and campaign_id in (None, campaign)
        and (not clip_ids or clip in clip_ids)
        and channel in (None, ch)
    ]
    return sorted(rows, key=lambda r: (r["campaign_id"], r["clip_id"], r["channel"]))


def review_listing(row: dict[str, Any]) -> dict[str, Any]:
    """The stable JSON of one waiting rendition (``moviegen review list --json``)."""
    return {k: row[k] for k in ("campaign_id", "clip_id", "channel", "path", "rendition_key")}


def approve(
    out: OutputRoot,
    campaign_id: str,
    clip_ids: Sequence[str],
    by: str,
    note: str | None = None,
    channel: str | None = None,
    webhooks: Sequence[WebhookSettings] = (),
) -> ReviewOutcome:
    """Publish the waiting renditions of ``clip_ids`` (every waiting one of the campaign when empty).

    Each file must still be the one its manifest row recorded (sha256); one that is not is refused
    and stays waiting. Raises ReviewError when nothing of that campaign (and clips) waits. The
    ``published`` events go to ``webhooks``.
    """
    outcome = ReviewOutcome("approve", new_run_id())
    for row in _chosen(out, campaign_id, clip_ids, channel, by):
        problem = _changed_since_review(out, row)
        if problem:
            outcome.refused.append(problem)
            continue
        outcome.rows.append(_publish_reviewed(out, row, by, note, outcome.run_id))
    outcome.webhooks = deliver_manifest_rows(out, webhooks, outcome.rows, outcome.run_id)
    return outcome


def reject(
    out: OutputRoot,
    campaign_id: str,
    clip_ids: Sequence[str],
    by: str,
    note: str,
    channel: str | None = None,
    webhooks: Sequence[WebhookSettings] = (),
) -> ReviewOutcome:
    """Refuse the waiting renditions of ``clip_ids``: never published, recorded with the note, files retired.

    The ``rejected`` events go to ``webhooks``.
    """
    if not clip_ids:
        raise ReviewError("name the clips to reject: a whole campaign is never rejected by omission")
    if not note.strip():
        raise ReviewError("a rejection needs a note saying why (--note), for the people who edit the row")
    outcome = ReviewOutcome("reject", new_run_id())
    for row in _chosen(out, campaign_id, clip_ids, channel, by):
        now = utc_now()
        source = review_paths(row["channel"], row["campaign_id"], row["clip_id"])
        target = retired_paths(row["channel"], row["campaign_id"], row["clip_id"], row["rendition_key"])
        move_rendition(out, source, target)
        decided = {
            **row,
            "run_id": outcome.run_id,
            "path": "/".join(target["video"]),
            "status": REVIEW_REJECTED,
            "supersedes": None,
            "published_at": now,
            **_reviewed(by, note, now),
        }
        out.append_rows("manifest", MANIFEST_SCHEMA, [decided], outcome.run_id)
        details = {"channel": row["channel"], "rendition_key": row["rendition_key"], "reviewed_by": by}
        rejected = {
            "run_id": outcome.run_id,
            "campaign_id": row["campaign_id"],
            "clip_id": row["clip_id"],
            "row": None,
            "column": None,
            "stage": "review",
            "rule": "reviewer",
            "reason": note,
            "details": json.dumps(details),
            "rejected_at": now,
        }
        out.append_rows("rejected", REJECTED_SCHEMA, [rejected], outcome.run_id)
        outcome.rows.append(decided)
    outcome.webhooks = deliver_manifest_rows(out, webhooks, outcome.rows, outcome.run_id)
    return outcome


def settle_interrupted_approvals(out: OutputRoot) -> list[dict[str, Any]]:
    """Finish approvals a killed process left between moving the video and writing its row.

    An approval records its published row as an intent first (as a run does), so the manifest
    catches up with what is in ``published/``: adopted when the video landed whole, forgotten (the
    rendition still waits) when it did not.
    """
    adopted = []
    for key in sorted(pending_intents(out)):
        try:
            intent = out.read_json("journal", f"{key}.json") or {}
        except (OSError, ValueError):
            continue
        if intent.get("reviewed_by") and (row := adopt_interrupted(out, key, intent["run_id"], intent)) is not None:
            adopted.append(row)
    return adopted


def _chosen(
    out: OutputRoot, campaign_id: str, clip_ids: Sequence[str], channel: str | None, by: str
) -> list[dict[str, Any]]:
    if not by.strip():
        raise ReviewError("say who decides (--by NAME): the manifest records the reviewer")
    rows = pending_reviews(out, campaign_id, clip_ids, channel)
    if not rows:
        what = f"campaign {campaign_id!r}" + (f", clips {', '.join(clip_ids)}" if clip_ids else "")
        what += f", channel {channel}" if channel else ""
        raise ReviewError(f"nothing of {what} is waiting for review: `moviegen review list` shows what is")
    missing = sorted(set(clip_ids) - {r["clip_id"] for r in rows})
    if missing:
        raise ReviewError(f"clips {', '.join(missing)} of campaign {campaign_id!r} are not waiting for review")
    return rows


def _changed_since_review(out: OutputRoot, row: dict[str, Any]) -> str | None:
    video = f"{out.root}/{row['path']}"
    name = f"{row['campaign_id']}/{row['clip_id']} on {row['channel']}"
    if not out.fs.exists(video):
        return f"{name}: {row['path']} is gone; run the campaign again to render it for review"
    if sha256_file(video, out.fs) != row["sha256"]:
        return f"{name}: {row['path']} changed since it was rendered (sha256 differs); it stays waiting"
    return None


def _reviewed(by: str, note: str | None, at: Any) -> dict[str, Any]:
    return {"reviewed_by": by, "reviewed_at": at, "review_note": note or None}


def _publish_reviewed(out: OutputRoot, row: dict[str, Any], by: str, note: str | None, run_id: str) -> dict[str, Any]:
    """Move one reviewed rendition into ``published/`` and append its published row (intent first)."""
    source = review_paths(row["channel"], row["campaign_id"], row["clip_id"])
    target = published_paths(row["channel"], row["campaign_id"], row["clip_id"])
    now = utc_now()
    published = {
        **row,
        "run_id": run_id,
        "path": "/".join(target["video"]),
        "status": PUBLISHED,
        "supersedes": superseded_key(target, row["rendition_key"], out),
        "published_at": now,
        **_reviewed(by, note, now),
    }
    record_intent(out, published)
    sidecar = out.read_json(*source["sidecar"]) or {}
    out.move(source["poster"], target["poster"])
    out.write_json(
        {**sidecar, "reviewed_by": by, "reviewed_at": now.isoformat(), "review_note": note}, *target["sidecar"]
    )
    out.remove(*source["sidecar"])
    out.move(source["video"], target["video"])  # last: the rendition is public from here
    out.append_rows("manifest", MANIFEST_SCHEMA, [published], run_id)
    clear_intent(out, row["rendition_key"])
    return published
