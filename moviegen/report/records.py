"""Per-clip records of a run (status, gates, renditions, seconds) and reading runs back from the output root."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq

from moviegen.catalog.check import CatalogValidation
from moviegen.progress import STAGES
from moviegen.records import CampaignPlan, Master, Rendition
from moviegen.spec import Problem
from moviegen.store import PENDING_REVIEW, PUBLISHED, REVIEW_REJECTED, OutputRoot

# Clip and rendition statuses, in the order the report lists them. "published" is the manifest's own
# status (store.PUBLISHED): one word, one meaning; so are "pending_review" and "review_rejected".
ALREADY, QUARANTINED, REJECTED, FAILED, NOT_MADE = (
    "already_published",
    "quarantined",
    "rejected",
    "failed",
    "not_made",
)

STATUSES = (PUBLISHED, ALREADY, PENDING_REVIEW, REVIEW_REJECTED, QUARANTINED, REJECTED, FAILED, NOT_MADE)

# Problems whose rule says something broke (rather than a rule said no): the clip "failed".
FAILURE_RULES = frozenset({"error", "ffmpeg"})

# Stage order for timings: the progress stages, then the rendition's inner steps as they land.
STAGE_ORDER = (*STAGES[:2], "plan", *STAGES[2:4], "watermark", "render", "provenance", "delivery", "publish")

# Manifest columns about the final file's marks; older manifests or runs may lack some of them.
MARK_COLUMNS = ("watermark_payload", "watermark_bit_accuracy", "c2pa_state", "c2pa_signer", "label")

# Contact sheets: frames per strip and their longest side; at most this many strips per report.
STRIP_FRAMES = 4

STRIP_SIZE = 160

MAX_STRIPS = 200


def problem_status(problem: Problem) -> str:
    """quarantined (held in quarantine/), failed (something broke) or rejected (a rule said no)."""
    if problem.details.get("quarantine"):
        return QUARANTINED
    return FAILED if problem.rule in FAILURE_RULES else REJECTED


def clip_records(
    out: OutputRoot,
    run_id: str,
    validation: CatalogValidation,
    plan: CampaignPlan,
    masters: Iterable[Master],
    renditions: Iterable[Rendition],
    problems: Iterable[Problem],
) -> list[dict[str, Any]]:
    """One record per catalog row the run saw: status, channels, gate results, problems and seconds per stage.

    Gate results come from this run's ``scores/`` rows. A row's status is ``quarantined`` when a
    gate held its clip back, ``failed`` when something broke, ``rejected`` when a rule refused the
    row or a rendition, ``published`` when every channel is out (some possibly from earlier runs)
    and ``already_published`` when nothing had to be made. Each channel has its own status.
    """
    records: dict[int, dict[str, Any]] = {}

    def record(row: int, campaign_id: str | None, clip_id: str | None) -> dict[str, Any]:
        if row not in records:
            records[row] = {
                "row": row,
                "campaign_id": campaign_id,
                "clip_id": clip_id,
                "status": None,
                "prompt": None,
                "caption": None,
                "clip_key": None,
                "channels": {},
                "gates": {},
                "quarantine": None,
                "problems": [],
                "seconds": {},
            }
        return records[row]

    by_clip: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in validation.specs:
        rec = record(spec.row, spec.campaign_id, spec.clip_id)
        rec.update(prompt=spec.prompt, caption=spec.caption)
        if spec.shots:  # the times as written; a generated row's record below has them to the frame
            rec["shots"] = [{"prompt": shot.prompt, "duration_s": shot.duration_s} for shot in spec.shots]
        rec["channels"] = {channel: {"status": NOT_MADE} for channel in spec.channels}
        by_clip[(spec.campaign_id, spec.clip_id)] = rec
    for row in plan.already_published:
        rec = by_clip.get((row["campaign_id"], row["clip_id"]))
        if rec is not None:
            rec["clip_key"] = row.get("clip_key")
            rec["channels"][row["channel"]] = {"status": ALREADY, "path": row["path"], **_marks(row)}
    for row in [*plan.awaiting_review, *plan.rejected_in_review]:  # rendered by an earlier run; decided or not
        rec = by_clip.get((row["campaign_id"], row["clip_id"]))
        if rec is not None:
            rec["clip_key"] = row.get("clip_key")
            rec["channels"][row["channel"]] = {"status": row["status"], "path": row["path"], **_review(row)}
    for m in masters:
        rec = record(m.clip.spec.row, m.clip.spec.campaign_id, m.clip.spec.clip_id)
        rec["clip_key"], rec["reused_master"] = m.clip.clip_key, m.reused
        if m.clip.shots:
            rec["shots"] = m.clip.shots_record()
        elif m.clip.continuation is not None and m.clip.segments > 1:
            rec["segments"], rec["continued_on"] = m.clip.segments, m.clip.continuation.info.name
        _add_seconds(rec["seconds"], {"generate": m.seconds, "frame_gate": m.gate_seconds})
    for r in renditions:
        rec = record(r.clip.spec.row, r.clip.spec.campaign_id, r.clip.spec.clip_id)
        channel = rec["channels"].setdefault(r.channel, {"status": NOT_MADE})
        channel["seconds"] = {k: round(v, 3) for k, v in r.seconds.items()}
        _add_seconds(rec["seconds"], r.seconds)
        if r.row is not None:
            channel.update(status=r.row["status"], path=r.row["path"], **_marks(r.row))
    for p in problems:
        if p.row is None:  # the catalog as a whole (a missing column): not one row's
            continue
        rec = record(p.row, p.campaign_id, p.clip_id)
        status = problem_status(p)
        entry = {"stage": p.stage, "rule": p.rule, "column": p.column, "message": p.message, "status": status}
        channel_name = p.details.get("channel")
        if channel_name:
            entry["channel"] = channel_name
            channel = rec["channels"].setdefault(channel_name, {"status": NOT_MADE})
            if channel["status"] != FAILED:  # one failure is enough to call the channel failed
                channel.update(status=status, stage=p.stage, rule=p.rule)
        rec["problems"].append(entry)
        if p.details.get("quarantine"):
            rec["quarantine"] = p.details["quarantine"]
    for gate_row in read_run_rows(out, "scores", run_id):
        rec = records.get(gate_row.get("row"))
        if rec is not None and gate_row.get("clip_id") == rec["clip_id"]:
            rec["gates"][gate_row["gate"]] = gate_summary(gate_row)
    for rec in records.values():
        rec["status"] = clip_status(rec)
        rec["seconds"] = {k: round(v, 3) for k, v in _ordered(rec["seconds"]).items()}
    return [records[row] for row in sorted(records)]


def clip_status(rec: dict[str, Any]) -> str:
    """A clip's status from its problems and its channels' statuses (see ``clip_records``)."""
    found = {p["status"] for p in rec["problems"]}
    for status in (QUARANTINED, FAILED, REJECTED):
        if status in found:
            return status
    channels = [c["status"] for c in rec["channels"].values()]
    for status in (REVIEW_REJECTED, PENDING_REVIEW):  # a person still has to look, or said no
        if status in channels and all(c in (PUBLISHED, ALREADY, PENDING_REVIEW, REVIEW_REJECTED) for c in channels):
            return status
    if PUBLISHED in channels and all(c in (PUBLISHED, ALREADY) for c in channels):
        return PUBLISHED
    if channels and all(c == ALREADY for c in channels):
        return ALREADY
    return NOT_MADE


def run_counts(clips: list[dict[str, Any]], published: int, already_published: int) -> dict[str, int]:
    """Clips per status, renditions published now and before, and renditions waiting for review."""
    by_status = Counter(c["status"] for c in clips)
    waiting = sum(ch.get("status") == PENDING_REVIEW for c in clips for ch in c.get("channels", {}).values())
    return {
        **{status: by_status.get(status, 0) for status in STATUSES},
        "renditions_published": published,
        "renditions_already_published": already_published,
        "renditions_pending_review": waiting,
    }


def gate_summary(score_row: dict[str, Any]) -> dict[str, Any]:
    """One gate's decision for a clip, with its headline score (the full scores stay in ``scores/``)."""
    summary = {"passed": score_row.get("passed"), "rule": score_row.get("rule"), "policy": score_row.get("policy")}
    name, value = headline_score(score_row.get("gate"), _json(score_row.get("scores")))
    if name is not None:
        summary.update(score_name=name, score=value)
    return summary


def headline_score(gate: str | None, scores: dict[str, Any]) -> tuple[str | None, float | None]:
    """The number a reviewer looks at first: the classifier's highest, the top detector label, the CLIP score."""
    if gate == "prompt" and scores.get("classifier"):
        return "classifier", max(scores["classifier"].values())
    if gate == "frames" and scores.get("labels"):
        label = max(scores["labels"], key=scores["labels"].get)
        return label, scores["labels"][label]
    if gate == "adherence" and scores.get("clip_score") is not None:
        return "clip_score", scores["clip_score"]
    return None, None


def _marks(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in MARK_COLUMNS if k in row}


def _review(row: dict[str, Any]) -> dict[str, Any]:
    return {**_marks(row), **{k: row[k] for k in ("reviewed_by", "review_note") if row.get(k)}}


def _add_seconds(into: dict[str, float], seconds: dict[str, float]) -> None:
    for stage, value in seconds.items():
        if value:
            into[stage] = into.get(stage, 0.0) + value


def _ordered(seconds: dict[str, float]) -> dict[str, float]:
    """Stages in the order a clip passes them; stages this module does not know go last."""
    known = [s for s in STAGE_ORDER if s in seconds]
    return {s: seconds[s] for s in [*known, *sorted(set(seconds) - set(known))]}


def _json(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_run_rows(out: OutputRoot, dataset: str, run_id: str) -> list[dict[str, Any]]:
    """A run's rows of a dataset (``scores``, ``manifest``, ``rejected``) with whatever columns its parts have.

    Only the run's own part files are read (they are named after it), so the cost does not grow
    with the output root's history; parts written by other versions may lack or add columns.
    """
    folder = out.path(dataset)
    if not out.fs.exists(folder):
        return []
    prefix = f"part-{run_id}"
    rows: list[dict[str, Any]] = []
    for name in sorted(out.fs.ls(folder, detail=False)):
        base = name.rsplit("/", 1)[-1]
        if base.startswith(prefix) and base.endswith(".parquet") and ".tmp-" not in base:
            with out.fs.open(name, "rb") as f:
                rows += [r for r in pq.read_table(f).to_pylist() if r.get("run_id") == run_id]
    return rows


def run_ids(out: OutputRoot) -> list[str]:
    """The runs under ``<out>/runs/`` that finished (have a run.json), oldest first: run ids sort by start time."""
    folder = out.path("runs")
    if not out.fs.exists(folder):
        return []
    names = [n.rstrip("/").rsplit("/", 1)[-1] for n in out.fs.ls(folder, detail=False)]
    return sorted(n for n in names if out.fs.exists(f"{folder}/{n}/run.json"))


def read_run(out: OutputRoot, run_id: str) -> dict[str, Any] | None:
    """A run's run.json, or None when there is none; raises UnsafePathError for an id that is not a slug."""
    path = out.path("runs", run_id, "run.json")
    if not out.fs.exists(path):
        return None
    with out.fs.open(path, "rb") as f:
        return json.load(f)
