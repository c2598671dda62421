"""The run report: a self-contained HTML page from run.json's facts."""

from __future__ import annotations

import html
from typing import Any


def render_report_html(run: dict[str, Any]) -> str:
    """A one-page report: counts, published renditions, and problems with what to do."""
    esc = html.escape
    published = run["published"]
    problems = run["problems"]
    rows_html = "".join(
        f"<tr><td>{esc(r['campaign_id'])}</td><td>{esc(r['clip_id'])}</td><td>{esc(r['channel'])}</td>"
        f"<td>{r['width']}x{r['height']}</td><td>{r['duration_s']:.2f} s</td>"
        f"<td><code>{esc(r['path'])}</code></td></tr>"
        for r in published
    )
    problems_html = "".join(
        f"<tr><td>{'' if p['row'] is None else p['row']}</td><td>{esc(p['clip_id'] or '')}</td>"
        f"<td>{esc(p['column'] or '')}</td><td>{esc(p['stage'])}</td><td>{esc(p['rule'])}</td>"
        f"<td>{esc(p['message'])}</td></tr>"
        for p in problems
    )
    stages = "".join(f"<li>{esc(k)}: {v:.1f} s</li>" for k, v in run["stage_seconds"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>moviegen run {esc(run["run_id"])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}th{{background:#f3f3f3}}</style></head>
<body><h1>moviegen run {esc(run["run_id"])}</h1>
<p>{run["rows"]} rows, {run["valid_rows"]} valid; {len(published)} renditions published,
{run["already_published"]} already published, {len(problems)} problems; {run["seconds"]:.1f} s.</p>
<h2>Published</h2><table><tr><th>campaign</th><th>clip</th><th>channel</th><th>size</th><th>duration</th>
<th>path</th></tr>{rows_html}</table>
<h2>Problems</h2><table><tr><th>row</th><th>clip_id</th><th>column</th><th>stage</th><th>rule</th>
<th>message</th></tr>{problems_html}</table>
<h2>Time per stage</h2><ul>{stages}</ul>
</body></html>
"""
