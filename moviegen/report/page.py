"""The run's HTML report (contact sheets, timing chart, problems) and its Markdown summary."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moviegen.media import MediaError, frame_strip
from moviegen.progress import stage_label
from moviegen.publish.webhooks import delivery_line
from moviegen.report.records import (
    ALREADY,
    FAILED,
    MAX_STRIPS,
    NOT_MADE,
    QUARANTINED,
    REJECTED,
    STRIP_FRAMES,
    STRIP_SIZE,
    _json,
    _ordered,
    read_run_rows,
    run_counts,
)
from moviegen.store import PENDING_REVIEW, PUBLISHED, REVIEW_REJECTED, OutputRoot

log = logging.getLogger(__name__)


@dataclass
class ContactSheet:
    """A strip of frames (JPEG bytes) from one published rendition or one quarantined master."""

    title: str
    subtitle: str
    jpeg: bytes | None
    error: str | None = None
    kind: str = PUBLISHED


@dataclass
class ReportFacts:
    """Everything the page shows: run.json's facts, every gate's scores, contact sheets, their cost."""

    run: dict[str, Any]
    scores: dict[tuple[str | None, str | None], dict[str, dict[str, Any]]] = field(default_factory=dict)
    sheets: list[ContactSheet] = field(default_factory=list)
    sheets_left_out: int = 0
    sheet_seconds: float = 0.0


def gather_facts(out: OutputRoot, run: dict[str, Any], max_strips: int = MAX_STRIPS) -> ReportFacts:
    """Read what the page needs from the output root: this run's scores and a contact sheet per published
    rendition and per quarantined clip (at most ``max_strips``)."""
    facts = ReportFacts(run=run)
    for row in read_run_rows(out, "scores", run["run_id"]):
        facts.scores.setdefault((row.get("campaign_id"), row.get("clip_id")), {})[row["gate"]] = _json(row["scores"])
    wanted: list[tuple[str, str, str, str]] = []  # (kind, title, subtitle, path under the root)
    for kind, rows in ((PUBLISHED, run.get("published", [])), (PENDING_REVIEW, run.get("pending_review", []))):
        for r in rows:
            size = f"{r.get('width')}x{r.get('height')}, {float(r.get('duration_s') or 0):.1f} s"
            wanted.append((kind, f"{r['campaign_id']}/{r['clip_id']}", f"{r['channel']} · {size}", r["path"]))
    for clip in run.get("clips", []):
        if clip.get("quarantine"):
            master = _quarantined_master(out, clip["quarantine"])
            reason = next((p["message"] for p in clip["problems"] if p["status"] == QUARANTINED), "")
            wanted.append((QUARANTINED, f"{clip['campaign_id']}/{clip['clip_id']}", reason, master or ""))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="moviegen-report-") as tmp:
        for kind, title, subtitle, relative in wanted[:max_strips]:
            facts.sheets.append(_sheet(out, kind, title, subtitle, relative, Path(tmp)))
    facts.sheets_left_out = max(0, len(wanted) - max_strips)
    facts.sheet_seconds = time.perf_counter() - started
    return facts


def _quarantined_master(out: OutputRoot, folder: str) -> str | None:
    try:
        names = out.fs.ls(out.path(*folder.split("/")), detail=False)
    except (FileNotFoundError, ValueError):
        return None
    masters = [n.rsplit("/", 1)[-1] for n in names if n.rsplit("/", 1)[-1].startswith("master.")]
    return f"{folder}/{masters[0]}" if masters else None


def _sheet(out: OutputRoot, kind: str, title: str, subtitle: str, relative: str, tmp: Path) -> ContactSheet:
    if not relative:
        return ContactSheet(title, subtitle, None, "its file is not under the output root any more", kind)
    try:
        source = out.path(*relative.split("/"))
        if not out.is_local:  # ffmpeg reads local files: fetch a remote one first
            local = tmp / relative.rsplit("/", 1)[-1]
            out.fs.get(source, str(local))
            source = str(local)
        return ContactSheet(title, subtitle, frame_strip(Path(source), STRIP_FRAMES, STRIP_SIZE), None, kind)
    except (MediaError, OSError, ValueError) as exc:
        return ContactSheet(title, subtitle, None, f"no frames: {exc}", kind)


def write_report(out: OutputRoot, run: dict[str, Any]) -> dict[str, Any]:
    """Build ``runs/<run_id>/report.html`` from the run's facts and files; return what it cost.

    A report that cannot be built never fails the run: the reason is logged and returned.
    """
    started = time.perf_counter()
    try:
        facts = gather_facts(out, run)
        page = render_report_html(facts)
        path = out.write_bytes(page.encode(), "runs", run["run_id"], "report.html")
    except Exception as exc:  # the run's outcome is already on record; the page is a view of it
        log.warning("the report of run %s could not be written: %s", run.get("run_id"), exc)
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "path": path,
        "bytes": len(page.encode()),
        "contact_sheets": sum(1 for s in facts.sheets if s.jpeg),
        "contact_sheet_seconds": round(facts.sheet_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute: ``<>&"'`` escaped; None as an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


STATUS_LABELS = {
    PUBLISHED: "published",
    ALREADY: "already published",
    PENDING_REVIEW: "waiting for review",
    REVIEW_REJECTED: "rejected in review",
    QUARANTINED: "quarantined",
    REJECTED: "rejected",
    FAILED: "failed",
    NOT_MADE: "not made",
}

CSS = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}.muted{color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}.card{background:#fff;border:1px solid var(--line);
border-radius:8px;padding:10px 14px;min-width:120px}.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600;white-space:nowrap}td.num{text-align:right;white-space:nowrap}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;
white-space:nowrap}.published,.pass{background:var(--ok)}.already_published,.not_made{background:#8c959f}.pending_review{background:#bf8700}
.quarantined{background:var(--warn)}
.rejected,.failed,.fail{background:var(--bad)}.text{max-width:280px;overflow-wrap:anywhere}
.chip{display:inline-block;border:1px solid var(--line);border-radius:4px;padding:0 5px;margin:1px 2px 1px 0;
font-size:12px;white-space:nowrap}.chip.fail{color:#fff;border-color:var(--bad)}
.sheets{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid var(--line);
border-radius:8px;padding:8px;max-width:100%}figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:12px;margin-top:4px;max-width:640px;overflow-wrap:anywhere}
details pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:11px;max-width:420px}
code{font-size:12px;overflow-wrap:anywhere}td.id{white-space:nowrap}td.id code{overflow-wrap:normal}
ul.channels{margin:0;padding-left:16px}
"""


def render_report_html(facts: ReportFacts | dict[str, Any]) -> str:
    """The report page for a run: counts, time per stage, clips, contact sheets, rejected rows.

    Takes ``ReportFacts`` (``gather_facts``) or run.json's dict alone (then without scores or
    contact sheets). Self-contained: no script, no request; images are embedded.
    """
    if isinstance(facts, dict):
        facts = ReportFacts(run=facts)
    run = facts.run
    clips = run.get("clips", [])
    counts = run.get("counts") or run_counts(clips, len(run.get("published", [])), run.get("already_published", 0))
    exit_code = run.get("exit_code")
    verdict = "every valid row published" if exit_code == 0 else "finished with rows held back or failed"
    if exit_code == 0 and run.get("pending_review"):
        verdict = "every valid row published or waiting for review"
    sections = [
        f"<h1>moviegen run <code>{esc(run['run_id'])}</code></h1>",
        f'<p class="muted">{esc(verdict)} (exit status {esc(exit_code)}) · {esc(run.get("started_at") or "")}'
        f" · {float(run.get('seconds') or 0):.1f} s · executor {esc(run.get('executor'))} · {esc(run.get('generator'))}"
        f" · output <code>{esc(run.get('out'))}</code></p>",
        _cards(run, counts),
        f'<p class="muted">{esc(delivery_line(run["webhooks"]))}</p>' if run.get("webhooks") else "",
        _waiting(run),
        "<h2>Where the time went</h2>",
        timing_chart(run.get("stage_seconds", {}), float(run.get("seconds") or 0)),
        f"<h2>Clips ({len(clips)})</h2>",
        _clips_table(clips, facts.scores),
        f"<h2>Contact sheets ({len(facts.sheets)})</h2>",
        _sheets(facts),
        f"<h2>Rejected and failed ({len(run.get('problems', []))})</h2>",
        _problems_table(run.get("problems", [])),
        f'<p class="muted">Contact sheets took {facts.sheet_seconds:.1f} s. Every decision\'s scores: '
        f"<code>scores/</code>; held-back clips: <code>quarantine/</code>; rows: <code>rejected/</code>; "
        f"renditions: <code>manifest/</code>.</p>",
    ]
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>moviegen run {esc(run['run_id'])}</title><style>{CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(sections) + "\n</main></body></html>\n"
    )


def _cards(run: dict[str, Any], counts: dict[str, int]) -> str:
    items = [
        ("catalog rows", run.get("rows", 0)),
        ("valid rows", run.get("valid_rows", 0)),
        ("renditions published", counts.get("renditions_published", 0)),
        ("already published", counts.get("renditions_already_published", 0)),
        ("waiting for review", counts.get("renditions_pending_review", 0)),
        ("clips quarantined", counts.get(QUARANTINED, 0)),
        ("rows rejected", counts.get(REJECTED, 0)),
        ("clips failed", counts.get(FAILED, 0)),
    ]
    cards = "".join(f'<div class="card"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in items)
    return f'<div class="cards">{cards}</div>'


def _waiting(run: dict[str, Any]) -> str:
    """The renditions waiting for review, and the command that approves them (their sheets are below)."""
    waiting = run.get("pending_review") or []
    if not waiting:
        return ""
    out = run.get("out") or "OUT"
    commands = "".join(
        f"<li><code>moviegen review approve {esc(c)} --by NAME --out {esc(out)}</code></li>"
        for c in sorted({r["campaign_id"] for r in waiting})
    )
    return (
        f"<h2>Waiting for review ({len(waiting)})</h2>"
        f'<p class="muted">Under <code>review/</code>; nothing of these is public yet. Approve them all with the '
        f"command below, name clips to approve some, or <code>moviegen review reject CAMPAIGN CLIP --by NAME "
        f"--note WHY</code>; <code>moviegen review list</code> shows them.</p><ul>{commands}</ul>"
    )


def timing_chart(stage_seconds: dict[str, float], wall_seconds: float, width: int = 720) -> str:
    """Horizontal bars, one per stage (seconds of work, summed over clips), as inline SVG."""
    stages = _ordered({k: float(v) for k, v in stage_seconds.items() if v})
    if not stages:
        return '<p class="muted">No stage recorded any time.</p>'
    label_w, value_w, bar_h, gap = 110, 70, 18, 6
    scale = (width - label_w - value_w) / max(stages.values())
    height = len(stages) * (bar_h + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="seconds per stage" font-family="system-ui,sans-serif" font-size="12">'
    ]
    for i, (stage, seconds) in enumerate(stages.items()):
        y = gap + i * (bar_h + gap)
        bar = max(1.0, seconds * scale)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end">{esc(stage_label(stage))}</text>'
            f'<rect x="{label_w}" y="{y}" width="{bar:.1f}" height="{bar_h}" rx="3" fill="#0969da">'
            f"<title>{esc(stage_label(stage))}: {seconds:.2f} s</title></rect>"
            f'<text x="{label_w + bar + 6:.1f}" y="{y + 13}">{seconds:.1f} s</text>'
        )
    parts.append("</svg>")
    total = sum(stages.values())
    note = (
        f'<p class="muted">Seconds of work per stage, summed over clips ({total:.1f} s in all); the run took '
        f"{wall_seconds:.1f} s from start to end because renders overlap with generation.</p>"
    )
    return "".join(parts) + note


def _clips_table(clips: list[dict[str, Any]], scores: dict[tuple[Any, Any], dict[str, dict[str, Any]]]) -> str:
    if not clips:
        return '<p class="muted">No catalog row reached this run.</p>'
    head = (
        "<tr><th>row</th><th>clip</th><th>status</th><th>renditions: watermark, credentials</th><th>gates</th>"
        "<th>seconds per stage</th><th>prompt and caption</th></tr>"
    )
    body = []
    for c in clips:
        gates = "".join(_gate_chip(name, g) for name, g in c.get("gates", {}).items()) or '<span class="muted">—</span>'
        full = scores.get((c.get("campaign_id"), c.get("clip_id")))
        if full:
            gates += f"<details><summary>scores</summary><pre>{esc(json.dumps(full, indent=1))}</pre></details>"
        seconds = ", ".join(f"{esc(stage_label(k))} {v:.1f}" for k, v in c.get("seconds", {}).items())
        reason = ""
        if c.get("problems"):
            first = c["problems"][0]
            more = f" (+{len(c['problems']) - 1} more)" if len(c["problems"]) > 1 else ""
            where = f"{esc(first['stage'])}/{esc(first['rule'])}"
            reason = f"<br><small>{where}: {esc(first['message'])}{esc(more)}</small>"
        text = esc(c.get("prompt"))
        if c.get("caption"):
            text += f"<br><small>caption: {esc(c['caption'])}</small>"
        if c.get("segments"):
            text += f"<br><small>{c['segments']} continued segments, on {esc(c['continued_on'])}</small>"
        for k, shot in enumerate(c.get("shots", [])):
            when = f"{shot['start_s']:.2f}–{shot['end_s']:.2f} s" if "start_s" in shot else f"{shot['duration_s']} s"
            text += f"<br><small>shots[{k}] {esc(when)}: {esc(shot['prompt'])}</small>"
        body.append(
            f"<tr><td class=num>{esc(c.get('row'))}</td><td class=id><small>{esc(c.get('campaign_id'))}</small>"
            f"<br><code>{esc(c.get('clip_id'))}</code></td><td>{_badge(c.get('status'))}{reason}</td>"
            f"<td>{_channels(c.get('channels', {}))}</td><td>{gates}</td><td>{seconds}</td>"
            f'<td class="text">{text}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _badge(status: Any) -> str:
    status = str(status)
    return f'<span class="badge {esc(status)}">{esc(STATUS_LABELS.get(status, status))}</span>'


def _gate_chip(name: str, gate: dict[str, Any]) -> str:
    passed = gate.get("passed")
    mark = "✓" if passed else "✗"
    detail = f" {esc(gate['rule'])}" if gate.get("rule") else ""
    if gate.get("score_name") is not None and isinstance(gate.get("score"), int | float):
        detail += f" · {esc(gate['score_name'])} {gate['score']:.2f}"
    return f'<span class="chip{"" if passed else " fail"}">{esc(name)} {mark}{detail}</span>'


def _channels(channels: dict[str, dict[str, Any]]) -> str:
    if not channels:
        return '<span class="muted">—</span>'
    items = []
    for name, ch in channels.items():
        marks = []
        if ch.get("watermark_payload"):
            accuracy = ch.get("watermark_bit_accuracy")
            read = f" read {accuracy:.2f}" if isinstance(accuracy, int | float) else ""
            marks.append(f"watermark {esc(ch['watermark_payload'])}{read}")
        elif ch.get("status") in (PUBLISHED, ALREADY):
            marks.append("no watermark recorded")
        if ch.get("c2pa_state"):
            signer = f" by {esc(ch['c2pa_signer'])}" if ch.get("c2pa_signer") else ""
            marks.append(f"C2PA {esc(ch['c2pa_state'])}{signer}")
        elif ch.get("status") in (PUBLISHED, ALREADY):
            marks.append("no credentials recorded")
        if ch.get("label"):
            marks.append(f"label “{esc(ch['label'])}”")
        detail = f"<br><small>{' · '.join(marks)}</small>" if marks else ""
        items.append(f"<li>{esc(name)} {_badge(ch.get('status'))}{detail}</li>")
    return f'<ul class="channels">{"".join(items)}</ul>'


def _sheets(facts: ReportFacts) -> str:
    if not facts.sheets:
        return '<p class="muted">Nothing was published or quarantined in this run.</p>'
    figures = []
    for s in facts.sheets:
        if s.jpeg:
            data = base64.b64encode(s.jpeg).decode("ascii")
            image = f'<img src="data:image/jpeg;base64,{data}" alt="frames of {esc(s.title)}">'
        else:
            image = f'<p class="muted">{esc(s.error)}</p>'
        figures.append(
            f"<figure>{image}<figcaption>{_badge(s.kind)} <code>{esc(s.title)}</code> {esc(s.subtitle)}"
            "</figcaption></figure>"
        )
    more = f'<p class="muted">{facts.sheets_left_out} more not shown.</p>' if facts.sheets_left_out else ""
    return f'<div class="sheets">{"".join(figures)}</div>{more}'


def _problems_table(problems: list[dict[str, Any]]) -> str:
    if not problems:
        return '<p class="muted">Nothing was rejected and nothing failed.</p>'
    head = "<tr><th>row</th><th>clip</th><th>column</th><th>stage</th><th>rule</th><th>reason</th></tr>"
    body = "".join(
        f"<tr><td class=num>{esc(p.get('row'))}</td><td><code>{esc(p.get('campaign_id'))}/{esc(p.get('clip_id'))}"
        f"</code></td><td>{esc(p.get('column'))}</td><td>{esc(p.get('stage'))}</td><td>{esc(p.get('rule'))}</td>"
        f'<td class="text">{esc(p.get("message"))}</td></tr>'
        for p in sorted(problems, key=_by_row)
    )
    return f"<table>{head}{body}</table>"


def _by_row(problem: dict[str, Any]) -> tuple[bool, int]:
    # Catalog order; problems of the catalog as a whole (no row) first.
    row = problem.get("row")
    return (row is not None, row if isinstance(row, int) else -1)


def summary_table(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per clip (status, channels, reason, seconds): the Prefect table artifact."""
    rows = []
    for c in run.get("clips", []):
        first = c["problems"][0] if c.get("problems") else None
        rows.append(
            {
                "row": c.get("row"),
                "campaign_id": c.get("campaign_id"),
                "clip_id": c.get("clip_id"),
                "status": c.get("status"),
                "channels": ", ".join(f"{k}: {v.get('status')}" for k, v in c.get("channels", {}).items()),
                "gates": ", ".join(
                    f"{k} {'passed' if g.get('passed') else 'failed'}" for k, g in c.get("gates", {}).items()
                ),
                "reason": f"{first['stage']}/{first['rule']}: {first['message']}" if first else "",
                "seconds": round(sum(c.get("seconds", {}).values()), 2),
            }
        )
    return rows


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md_escape(text: Any) -> str:
    """Text shown literally in Markdown (and HTML), on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str("" if text is None else text).split())).replace("&", "&amp;")


def summary_markdown(run: dict[str, Any], report_url: str | None = None) -> str:
    """Counts, time per stage and the problems as Markdown: the Prefect markdown artifact."""
    clips = run.get("clips", [])
    counts = run.get("counts") or run_counts(clips, len(run.get("published", [])), run.get("already_published", 0))
    lines = [
        f"# moviegen run {md_escape(run['run_id'])}",
        "",
        f"{run.get('rows', 0)} catalog rows, {run.get('valid_rows', 0)} valid: "
        f"**{counts['renditions_published']} renditions published**, "
        f"{counts['renditions_already_published']} already published, {counts[QUARANTINED]} clips quarantined, "
        f"{counts[REJECTED]} rejected, {counts[FAILED]} failed; {float(run.get('seconds') or 0):.1f} s "
        f"(exit status {run.get('exit_code')}).",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *(f"| {md_escape(stage_label(k))} | {v:.1f} |" for k, v in _ordered(run.get("stage_seconds", {})).items()),
    ]
    if run.get("webhooks"):
        lines += ["", md_escape(delivery_line(run["webhooks"]))]
    problems = run.get("problems", [])
    if problems:
        lines += ["", "| row | clip | stage | rule | reason |", "| ---: | --- | --- | --- | --- |"]
        for p in problems[:50]:
            clip = md_escape(f"{p.get('campaign_id') or ''}/{p.get('clip_id') or ''}")
            lines.append(
                f"| {md_escape(p.get('row'))} | {clip} | {md_escape(p.get('stage'))} | {md_escape(p.get('rule'))} "
                f"| {md_escape(p.get('message'))} |"
            )
        if len(problems) > 50:
            lines.append(f"\n{len(problems) - 50} more in `rejected/`.")
    if report_url:
        lines += ["", f"Report: `{report_url}`"]
    return "\n".join(lines) + "\n"
