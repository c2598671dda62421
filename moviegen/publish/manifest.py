"""What is published, from the append-only manifest; intents that make a publish survive a kill."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pyarrow as pa

from moviegen.store import (
    JOURNAL,
    MANIFEST_SCHEMA,
    PUBLISHED,
    RETIRED,
    REVIEW_STATUSES,
    OutputRoot,
    sha256_file,
)

log = logging.getLogger(__name__)

RenditionSlot = tuple[str, str, str]  # (campaign_id, clip_id, channel)


def latest_renditions(out: OutputRoot) -> dict[RenditionSlot, dict[str, Any]]:
    """The latest publication row per (campaign_id, clip_id, channel): published or retired.

    Review rows (a rendition waiting or rejected) are not on this track: a clip published before
    keeps its published rendition while a new one waits (see ``latest_reviews``).
    """
    return _latest(out, lambda row: (row["status"] or PUBLISHED) in (PUBLISHED, RETIRED))


def latest_reviews(out: OutputRoot) -> dict[RenditionSlot, dict[str, Any]]:
    """The latest review row per (campaign_id, clip_id, channel): pending_review, review_rejected, withdrawn, or
    its approval."""
    return _latest(out, lambda row: row["status"] in REVIEW_STATUSES or bool(row["reviewed_by"]))


def _latest(out: OutputRoot, wanted: Any) -> dict[RenditionSlot, dict[str, Any]]:
    latest: dict[RenditionSlot, dict[str, Any]] = {}
    for row in sorted(out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist(), key=lambda r: r["published_at"]):
        if wanted(row):  # a null status (parts from before the refresh columns) means published
            latest[(row["campaign_id"], row["clip_id"], row["channel"])] = row
    return latest


def published_renditions(out: OutputRoot) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest manifest row per (campaign_id, clip_id, channel) that is published and whose file is still there."""
    return {
        k: r
        for k, r in latest_renditions(out).items()
        if (r["status"] or PUBLISHED) == PUBLISHED and out.fs.exists(f"{out.root}/{r['path']}")
    }


def manifest_history(out: OutputRoot) -> list[dict[str, Any]]:
    """Every manifest row, oldest first, each with what became of it, for audits.

    Adds ``state`` and ``superseded_by`` (the run_id of the row that ended it). A publication row
    is "current", "superseded" or "retired"; a review row is "pending_review", "review_rejected",
    "withdrawn", "approved" (a published row of the same rendition followed) or "superseded" (another
    rendition of the slot went to review). Rows from before the refresh columns read as published.
    """
    rows = sorted(out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist(), key=lambda r: r["published_at"])
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        row["status"] = row["status"] or PUBLISHED
        slot = (row["campaign_id"], row["clip_id"], row["channel"])
        review = row["status"] in REVIEW_STATUSES
        track = (*slot, "review" if review else "publication")
        if track in latest:
            latest[track]["state"], latest[track]["superseded_by"] = "superseded", row["run_id"]
        waiting = latest.get((*slot, "review"))
        if not review and row["reviewed_by"] and waiting and waiting["rendition_key"] == row["rendition_key"]:
            waiting["state"], waiting["superseded_by"] = "approved", row["run_id"]
            del latest[(*slot, "review")]
        row["state"] = row["status"] if review else "retired" if row["status"] == RETIRED else "current"
        row["superseded_by"] = None
        latest[track] = row
    return rows


def record_intent(out: OutputRoot, row: dict[str, Any]) -> None:
    """Write the manifest row a publish is about to make, before any of its files moves into place."""
    out.write_json(row, JOURNAL, f"{row['rendition_key']}.json")


def clear_intent(out: OutputRoot, rendition_key: str) -> None:
    """The publish of ``rendition_key`` is complete (or abandoned): forget its intent."""
    out.remove(JOURNAL, f"{rendition_key}.json")


def pending_intents(out: OutputRoot) -> set[str]:
    """Rendition keys whose publish was started but not finished (one listing of journal/)."""
    folder = out.path(JOURNAL)
    if not out.fs.exists(folder):
        return set()
    names = (n.rsplit("/", 1)[-1] for n in out.fs.ls(folder, detail=False))
    return {n.removesuffix(".json") for n in names if n.endswith(".json")}


def adopt_interrupted(
    out: OutputRoot, rendition_key: str, run_id: str, intent: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Finish a publish that a killed run left between its video landing and its manifest row.

    Returns the manifest row when the video is in place and whole (its SHA-256 is the one the
    intent recorded): the row (which names the run that made it) is appended in a part file of
    ``run_id``, the run adopting it. Returns None when the video
    never landed (or was replaced since); the intent is forgotten either way. ``intent``: the
    journal's row when the caller has read it already.
    """
    try:
        if intent is None:
            with out.fs.open(out.path(JOURNAL, f"{rendition_key}.json"), "rb") as f:
                intent = json.loads(f.read())
        row = dict(intent)
        video = f"{out.root}/{row['path']}"
        whole = out.fs.exists(video) and sha256_file(video, out.fs) == row["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable publish intent %s: %s", rendition_key, exc)
        whole = False
    if whole:
        for f in MANIFEST_SCHEMA:  # JSON carried the timestamps as text
            if pa.types.is_timestamp(f.type) and isinstance(row.get(f.name), str):
                row[f.name] = datetime.fromisoformat(row[f.name])
        out.append_rows("manifest", MANIFEST_SCHEMA, [row], run_id)
    clear_intent(out, rendition_key)
    return row if whole else None


def superseded_key(paths: dict[str, tuple[str, ...]], key: str, out: OutputRoot) -> str | None:
    """The rendition_key of the published rendition that publishing ``key`` at ``paths`` replaces, if any."""
    if not out.exists(*paths["video"]):
        return None
    previous = (out.read_json(*paths["sidecar"]) or {}).get("rendition_key")
    return previous if previous != key else None
