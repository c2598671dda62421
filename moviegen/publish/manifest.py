"""What is published, from the append-only manifest; intents that make a publish survive a kill."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pyarrow as pa

from moviegen.store import JOURNAL, MANIFEST_SCHEMA, PUBLISHED, RETIRED, OutputRoot, sha256_file

log = logging.getLogger(__name__)


def latest_renditions(out: OutputRoot) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest manifest row per (campaign_id, clip_id, channel), whatever its status."""
    table = out.read_rows("manifest", MANIFEST_SCHEMA)
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["published_at"]):
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

    Adds ``state`` ("current", "superseded" or "retired") and ``superseded_by`` (the run_id of the
    next row for the same channel, campaign and clip). Rows from before the refresh columns
    existed read as published.
    """
    rows = sorted(out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist(), key=lambda r: r["published_at"])
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        row["status"] = row["status"] or PUBLISHED
        key = (row["campaign_id"], row["clip_id"], row["channel"])
        if key in latest:
            latest[key]["state"], latest[key]["superseded_by"] = "superseded", row["run_id"]
        row["state"], row["superseded_by"] = ("retired" if row["status"] == RETIRED else "current"), None
        latest[key] = row
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


def adopt_interrupted(out: OutputRoot, rendition_key: str, run_id: str) -> dict[str, Any] | None:
    """Finish a publish that a killed run left between its video landing and its manifest row.

    Returns the manifest row when the video is in place and whole (its SHA-256 is the one the
    intent recorded): the row (which names the run that made it) is appended in a part file of
    ``run_id``, the run adopting it. Returns None when the video
    never landed (or was replaced since); the intent is forgotten either way.
    """
    try:
        with out.fs.open(out.path(JOURNAL, f"{rendition_key}.json"), "rb") as f:
            row = json.loads(f.read())
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
