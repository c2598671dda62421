"""Prefect artifacts for a campaign run: a progress bar while it goes, a clip table and a summary at the end.

Problem: a run started from a schedule, an event or CI has no terminal; the people who look at it
look at the Prefect UI. Solution: the campaign flow shows the same facts as the CLI and the HTML
report there. ``ProgressTracker`` listens to the stages' progress events (moviegen/progress.py)
and keeps a progress artifact up to date (at most once a second); ``publish_run_artifacts`` adds
the clip table and the markdown summary built by ``moviegen.report`` from run.json's facts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.runtime import flow_run

from moviegen import progress
from moviegen.report.page import summary_markdown, summary_table

log = logging.getLogger(__name__)

# Artifact keys (lowercase letters, digits, dashes): each run adds a version under the same key.
PROGRESS_KEY, TABLE_KEY, SUMMARY_KEY = "campaign-progress", "campaign-clips", "campaign-summary"


class ProgressTracker:
    """A progress artifact for the current flow run, fed by the stages' progress events.

    Events come from the flow's thread and from task threads; only those of this flow run count
    (a tracker left behind by a run that crashed ignores later runs). Updates are throttled to one
    per ``interval`` seconds; ``close`` sends the last state and stops listening.
    """

    def __init__(self, run_id: str, interval: float = 1.0) -> None:
        self.flow_run_id = flow_run.id
        self.interval = interval
        self.counts = progress.StageCounts()
        self._lock = threading.Lock()
        self._sent_at = 0.0
        self._sent: tuple[float, str] | None = None
        self.artifact_id: UUID = create_progress_artifact(
            0.0, key=PROGRESS_KEY, description=f"moviegen run {run_id}: starting"
        )
        self.run_id = run_id
        progress.add_listener(self)

    def start(self, stage: str, total: int) -> None:
        if flow_run.id == self.flow_run_id:
            with self._lock:
                self.counts.start(stage, total)
            self._push()

    def advance(self, stage: str, amount: int = 1) -> None:
        if flow_run.id == self.flow_run_id:
            with self._lock:
                self.counts.advance(stage, amount)
            self._push()

    def drop(self, stage: str, amount: int = 1) -> None:
        if flow_run.id == self.flow_run_id:
            with self._lock:
                self.counts.drop(stage, amount)
            self._push()

    def _push(self, final: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not final and now - self._sent_at < self.interval:
                return
            state = (100.0 if final else round(100 * self.counts.fraction(), 1), self.counts.describe())
            if state == self._sent:
                return
            self._sent_at, self._sent = now, state
        update_progress_artifact(self.artifact_id, state[0], description=f"moviegen run {self.run_id}: {state[1]}")

    def close(self) -> None:
        """Stop listening and send the final counts: 100%, since the run is over (the counts say
        how many items each stage got through)."""
        progress.remove_listener(self)
        self._push(final=True)


def publish_run_artifacts(run: dict[str, Any], tracker: ProgressTracker | None = None) -> None:
    """Close the progress artifact and add the clip table and the markdown summary of a finished run.

    The run's outcome is already on disk (run.json, report.html): an artifact the API refuses is
    logged, not raised.
    """
    report = (run.get("report") or {}).get("path")
    report_url = f"{run['out'].rstrip('/')}/{report}" if report else None
    try:
        if tracker is not None:
            tracker.close()
        create_table_artifact(
            summary_table(run), key=TABLE_KEY, description=f"moviegen run {run['run_id']}: one row per catalog row"
        )
        create_markdown_artifact(
            summary_markdown(run, report_url), key=SUMMARY_KEY, description=f"moviegen run {run['run_id']}"
        )
    except Exception as exc:
        log.warning("the Prefect artifacts of run %s could not be created: %s", run["run_id"], exc)


REVIEW_WAITING_EVENT = "moviegen.review.waiting"  # deployments/notifications.py tells the reviewers on it


def emit_review_waiting(run: dict[str, Any]) -> int:
    """One Prefect event per campaign with renditions waiting for review: what an automation notifies people on.

    The resource is ``moviegen.campaign.<campaign_id>``; the payload holds the count, the clips,
    the report and the command that approves them. Returns the number of events emitted.
    """
    waiting: dict[str, list[dict[str, Any]]] = {}
    for row in run.get("pending_review") or []:
        waiting.setdefault(row["campaign_id"], []).append(row)
    out = run["out"]
    report = (run.get("report") or {}).get("path")
    for campaign_id, rows in sorted(waiting.items()):
        emit_event(
            event=REVIEW_WAITING_EVENT,
            resource={"prefect.resource.id": f"moviegen.campaign.{campaign_id}", "prefect.resource.name": campaign_id},
            payload={
                "campaign_id": campaign_id,
                "run_id": run["run_id"],
                "count": len(rows),
                "clips": sorted({r["clip_id"] for r in rows}),
                "report": f"{out.rstrip('/')}/{report}" if report else None,
                "approve": f"moviegen review approve {campaign_id} --by NAME --out {out}",
            },
        )
    return len(waiting)
