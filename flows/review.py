"""The review flow: a brand reviewer approves or rejects waiting renditions from the Prefect UI.

The deployment's parameters are typed, so Prefect's own run form is the reviewer's page: the
campaign, the clips (all waiting ones of the campaign when approving with none listed), the
decision, the reviewer's name and a note. It calls the same library code as ``moviegen review``.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from moviegen.config import load_settings
from moviegen.publish.review import ReviewError, approve, reject
from moviegen.store import OutputRoot


@flow(name="review", log_prints=False)
def review(
    campaign_id: str,
    decision: Literal["approve", "reject"],
    reviewer: str,
    clip_ids: list[str] | None = None,
    note: str = "",
    channel: str | None = None,
    out: str | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """Approve (publish) or reject the waiting renditions of ``clip_ids`` in ``campaign_id``.

    Returns the manifest rows written and the renditions refused; the run fails when nothing
    matched or a file changed since it was reviewed, so the reviewer sees it in the UI.
    """
    settings = load_settings(config or None, out=out or None)
    root, clips, hooks = OutputRoot(settings.out), clip_ids or [], settings.webhooks
    if decision == "approve":
        outcome = approve(root, campaign_id, clips, reviewer, note or None, channel or None, hooks)
    else:
        outcome = reject(root, campaign_id, clips, reviewer, note, channel or None, hooks)
    log = get_run_logger()
    for row in outcome.rows:
        log.info("%s %s/%s on %s: %s", row["status"], row["campaign_id"], row["clip_id"], row["channel"], row["path"])
    if outcome.refused:
        raise ReviewError("; ".join(outcome.refused))
    return {
        "decision": decision,
        "run_id": outcome.run_id,
        "renditions": [{k: row[k] for k in ("campaign_id", "clip_id", "channel", "path")} for row in outcome.rows],
        "webhooks": outcome.webhooks.to_json() if outcome.webhooks else None,
    }
