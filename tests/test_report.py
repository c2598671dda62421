"""The run report, run.json, the Prefect artifacts and `moviegen status`, from one real campaign run.

The campaign (module fixture, one real Prefect flow run with the tiny model) has a published clip
on two channels whose caption is hostile HTML, a row the prompt gate blocks, a row with an unknown
channel, and a clip quarantined by a test policy whose QC rule no real clip passes (as in
tests/test_safety_campaign.py). The report is then opened in headless Chromium.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import os
import subprocess
from html.parser import HTMLParser

import pytest
from browser import chromium_binary, open_page
from conftest import FAST_CONFIG, row
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from moviegen import progress
from moviegen.media import ffmpeg_binary, frame_strip
from moviegen.report.page import md_escape, render_report_html, summary_markdown

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> & "quoted" </td></table>'
STRICT_QC = "extends: default\nname: strict-qc\nframes:\n  qc:\n    frozen_diff: 100\n"
# Where the README's screenshot comes from: REPORT_SCREENSHOT=docs/report.png pytest tests/test_report.py -k chromium
SCREENSHOT_ENV = "REPORT_SCREENSHOT"


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; skipped with the reason when it is truly absent, except on CI (CI=...), which must run it."""
    binary = chromium_binary()
    if binary is None:
        reason = "chromium is not installed: run scripts/setup.sh --test (make test does)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the report's browser test", pytrace=False)
        pytest.skip(reason)
    return binary


class PageParser(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


# The real run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, prefect_api, tiny_model):
    """One real campaign flow run with published, quarantined and rejected rows."""
    from flows.campaign import campaign
    from moviegen.catalog.schema import write_catalog

    base = tmp_path_factory.mktemp("report")
    (base / "strict-qc.yaml").write_text(STRICT_QC)
    config = base / "moviegen.yaml"
    config.write_text(FAST_CONFIG + f"safety:\n  campaign_policies:\n    qc-camp: {base / 'strict-qc.yaml'}\n")
    catalog = base / "catalog.parquet"
    rows = [
        row("lake", prompt="a calm mountain lake at sunrise, <b>mist</b> & fog", channels=["youtube", "tiktok"],
            caption=HOSTILE),
        row("evasion", prompt="a N.u.d.e model on a beach"),
        row("still", campaign_id="qc-camp", prompt="a slow pan over a red barn"),
        row("broken", channels=["myspace"]),
    ]  # fmt: skip
    write_catalog(rows, str(catalog))
    out = base / "out"
    state = campaign(catalog=str(catalog), out=str(out), config=str(config), return_state=True)
    result = state.result()
    return out, result, state.state_details.flow_run_id


@pytest.mark.slow
def test_run_json_has_a_record_per_row_and_seconds_per_stage(report_run):
    out, result, _ = report_run
    run = json.loads((out / "runs" / result["run_id"] / "run.json").read_text())
    assert run == result
    # The keys scripts already use are still there.
    assert {"run_id", "published", "problems", "stage_seconds", "exit_code", "already_published"} <= set(run)
    clips = {c["clip_id"]: c for c in run["clips"]}
    assert {k: c["status"] for k, c in clips.items()} == {
        "lake": "published",
        "evasion": "rejected",
        "still": "quarantined",
        "broken": "rejected",
    }
    assert [c["row"] for c in run["clips"]] == [0, 1, 2, 3]
    lake = clips["lake"]
    assert {k: v["status"] for k, v in lake["channels"].items()} == {"youtube": "published", "tiktok": "published"}
    assert lake["channels"]["tiktok"]["path"] == "published/tiktok/test-camp/lake.mp4"
    assert lake["caption"] == HOSTILE
    assert (lake["gates"]["prompt"]["passed"], lake["gates"]["frames"]["passed"]) == (True, True)
    assert lake["gates"]["prompt"]["score_name"] == "classifier" and 0 <= lake["gates"]["prompt"]["score"] < 0.9
    assert set(lake["seconds"]) >= {"generate", "frame_gate", "render", "publish"}
    assert all(v > 0 for v in lake["seconds"].values())
    assert set(lake["channels"]["youtube"]["seconds"]) >= {"render", "publish"}

    still = clips["still"]
    assert still["quarantine"] == "quarantine/qc-camp/still"
    assert still["gates"]["frames"] == {**still["gates"]["frames"], "passed": False, "rule": "frozen"}
    assert still["channels"] == {"youtube": {"status": "not_made"}}
    assert [(p["stage"], p["rule"], p["status"]) for p in still["problems"]] == [("frames", "frozen", "quarantined")]
    assert clips["evasion"]["gates"]["prompt"]["rule"] == "denied_term"
    assert clips["broken"]["problems"][0]["column"] == "channels" and clips["broken"]["gates"] == {}

    assert run["counts"] == {
        "published": 1,
        "already_published": 0,
        "pending_review": 0,
        "review_rejected": 0,
        "quarantined": 1,
        "rejected": 2,
        "failed": 0,
        "not_made": 0,
        "renditions_published": 2,
        "renditions_already_published": 0,
        "renditions_pending_review": 0,
    }
    stages = run["stage_seconds"]
    assert list(stages)[:3] == ["validate", "prompt_gate", "plan"]
    assert set(stages) >= {"validate", "prompt_gate", "plan", "generate", "frame_gate", "render", "publish"}
    assert run["report"]["path"] == f"runs/{run['run_id']}/report.html"
    assert run["report"]["contact_sheets"] == 3 and run["report"]["contact_sheet_seconds"] > 0
    assert run["started_at"]


@pytest.mark.slow
def test_report_page_has_counts_chart_clips_contact_sheets_and_reasons(report_run):
    out, result, _ = report_run
    page = (out / result["report"]["path"]).read_text()
    parsed = parse(page)
    text = " ".join(" ".join(parsed.text).split())

    # Self-contained: every image is an embedded JPEG, nothing else is loaded, no script at all.
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 3
    sizes = []
    for attrs in images:
        assert attrs["src"].startswith("data:image/jpeg;base64,")
        sizes.append(Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))).size)
    assert sorted(sizes) == sorted([(640, 90), (360, 160), (640, 90)])  # 16:9 and 9:16 strips of 4 frames
    assert not [t for t, _ in parsed.tags if t in ("script", "iframe", "object", "link")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    csp = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in csp and "img-src data:" in csp

    # The hostile caption is shown as text, exactly.
    assert HOSTILE in text and "<b>mist</b> & fog" in text
    assert "&lt;script&gt;window.pwned=2&lt;/script&gt;" in page

    # Counts, the timing chart (one bar per stage), the rejected rows with their reasons.
    compact = text.replace(" ", "")
    assert "4catalogrows" in compact and "2renditionspublished" in compact and "1clipsquarantined" in compact
    assert "2rowsrejected" in compact and "0clipsfailed" in compact
    assert len([t for t, _ in parsed.tags if t == "rect"]) == len([v for v in result["stage_seconds"].values() if v])
    for reason in ("a denied term", "unknown channel 'myspace'", "held in quarantine/qc-camp/still/"):
        assert reason in text
    assert "frames ✗ frozen" in text and "prompt ✓" in text
    rejected = text.split("Rejected and failed")[1]  # in catalog order
    assert rejected.index("test-camp/evasion") < rejected.index("qc-camp/still") < rejected.index("test-camp/broken")


@pytest.mark.slow
def test_report_loads_in_headless_chromium_without_errors(chromium, report_run, tmp_path):
    out, result, _ = report_run
    page = out / result["report"]["path"]
    script = """JSON.stringify({
        images: [...document.images].map(i => ({loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth})),
        pwned: typeof window.pwned,
        scripts: document.scripts.length,
        title: document.title,
        text: document.body.innerText,
        bars: document.querySelectorAll("svg rect").length,
    })"""
    loaded = open_page(page.as_uri(), script, tmp_path / "profile")

    assert loaded.errors == []
    facts = json.loads(loaded.evaluated)
    assert len(facts["images"]) == 3 and all(i["loaded"] for i in facts["images"]), facts["images"]
    assert (facts["pwned"], facts["scripts"]) == ("undefined", 0)
    assert facts["title"] == f"moviegen run {result['run_id']}"
    assert HOSTILE in facts["text"] and facts["bars"] >= 7

    shot = Image.open(io.BytesIO(loaded.screenshot))
    assert shot.format == "PNG" and shot.width == 1280 and shot.height > 900
    assert len(set(shot.convert("L").getdata())) > 50  # a rendered page, not a blank one
    (tmp_path / "report.png").write_bytes(loaded.screenshot)
    if os.environ.get(SCREENSHOT_ENV):  # the README's figure: 256 colours keep the PNG small
        shot.convert("RGB").quantize(256).save(os.environ[SCREENSHOT_ENV], optimize=True)


@pytest.mark.slow
def test_the_flow_run_shows_progress_table_and_summary_artifacts(report_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, result, flow_run_id = report_run
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"campaign-progress", "campaign-clips", "campaign-summary"}

    progress_artifact = by_key["campaign-progress"]
    assert progress_artifact.type == "progress" and float(progress_artifact.data) == 100.0
    assert "prompt gate 3/3" in progress_artifact.description and "frame gate 2/2" in progress_artifact.description
    # The quarantined clip's rendition left the render and publish totals: every bar completes.
    assert "render 2/2" in progress_artifact.description and "publish 2/2" in progress_artifact.description

    table = by_key["campaign-clips"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["clip_id"], r["status"]) for r in rows] == [
        ("lake", "published"),
        ("evasion", "rejected"),
        ("still", "quarantined"),
        ("broken", "rejected"),
    ]
    assert rows[2]["reason"].startswith("frames/frozen:")

    summary = by_key["campaign-summary"]
    report_url = f"{result['out']}/{result['report']['path']}"
    assert summary.type == "markdown" and summary.data == summary_markdown(result, report_url)
    assert "**2 renditions published**" in summary.data and "<" not in summary.data.replace("\\<", "")


@pytest.mark.slow
def test_status_shows_the_latest_or_a_given_run(report_run):
    out, result, _ = report_run
    runner = CliRunner()
    as_json = runner.invoke(app, ["status", "--out", str(out), "--json"])
    assert as_json.exit_code == 1  # the run's own status: rows were held back
    assert json.loads(as_json.stdout) == result

    human = runner.invoke(app, ["status", result["run_id"], "--out", str(out)])
    assert human.exit_code == 1
    said = " ".join(human.output.split())
    assert f"run {result['run_id']}: 2 renditions published" in said
    assert "clips: 1 published, 0 already published, 1 quarantined, 2 rejected, 0 failed" in said
    assert "seconds per stage: validate" in said and "frame gate" in said
    assert "evasion [prompt]: prompt contains 'nude'" in said  # catalog text literally, not read as markup

    unknown = runner.invoke(app, ["status", "20200101T000000Z-000000", "--out", str(out)])
    assert unknown.exit_code == 2 and f"the latest are: {result['run_id']}" in " ".join(unknown.output.split())
    empty = runner.invoke(app, ["status", "--out", str(out / "nothing-here")])
    assert empty.exit_code == 2 and "moviegen run CATALOG --out" in " ".join(empty.output.split())


# Without a campaign -------------------------------------------------------------------------------


def test_hostile_text_is_escaped_everywhere_on_the_page():
    """Every user-controlled string of run.json, as hostile as it gets, stays text."""
    bad = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    run = {
        "run_id": "r1",
        "out": bad,
        "generator": bad,
        "executor": bad,
        "rows": 1,
        "valid_rows": 1,
        "seconds": 1.0,
        "exit_code": 1,
        "already_published": 0,
        "published": [],
        "stage_seconds": {bad: 1.0, "render": 2.0},
        "problems": [{"row": 0, "campaign_id": bad, "clip_id": bad, "column": bad, "stage": bad, "rule": bad,
                      "message": bad}],
        "clips": [{"row": 0, "campaign_id": bad, "clip_id": bad, "status": bad, "prompt": bad, "caption": bad,
                   "channels": {bad: {"status": "published", "watermark_payload": bad, "c2pa_state": bad,
                                      "c2pa_signer": bad, "label": bad}},
                   "gates": {bad: {"passed": False, "rule": bad, "score_name": bad, "score": 0.5}},
                   "problems": [{"stage": bad, "rule": bad, "message": bad, "status": "rejected"}],
                   "seconds": {bad: 1.0}}],
    }  # fmt: skip
    parsed = parse(render_report_html(run))
    allowed = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "p", "code", "div", "b",
               "table", "tr", "th", "td", "span", "br", "small", "ul", "li", "svg", "text", "rect"}  # fmt: skip
    assert {tag for tag, _ in parsed.tags} <= allowed
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert " ".join(parsed.text).count(bad) >= 15


def test_undelivered_webhooks_are_on_the_page_with_what_to_do():
    run = {"run_id": "r1", "webhooks": {"delivered": 3, "failed": 2, "refused": 1}}
    page = " ".join(" ".join(parse(render_report_html(run)).text).split())
    for text in (page, summary_markdown(run).replace("\\", "")):  # the Markdown escapes its brackets
        assert "webhooks: 3 event(s) delivered, 2 failed (sent again on the next run), 1 refused (4xx)" in text
        assert "moviegen webhooks retry" in text
    assert "webhooks" not in " ".join(parse(render_report_html({"run_id": "r2", "webhooks": None})).text)


def test_markdown_summary_shows_text_literally():
    text = "| <script>x</script> *bold* [link](http://x) `code`"
    escaped = md_escape(text)
    assert "<" not in escaped.replace("\\<", "") and "|" not in escaped.replace("\\|", "")
    assert "[" not in escaped.replace("\\[", "") and "`" not in escaped.replace("\\`", "")
    run = {"run_id": "r1", "rows": 1, "valid_rows": 0, "seconds": 1, "exit_code": 1, "published": [],
           "already_published": 0, "stage_seconds": {"validate": 0.1},
           "problems": [{"row": 0, "campaign_id": "c", "clip_id": "a", "stage": "prompt", "rule": "x",
                         "message": text}],
           "clips": []}  # fmt: skip
    table_row = summary_markdown(run).splitlines()[-1]
    assert table_row.count(" | ") == 4  # the message's pipe did not add a column


@pytest.fixture(scope="module")
def test_videos(tmp_path_factory):
    """A 1 s 9:16 H.264 clip (read in one pass) and an 8 s 16:9 one (read with seeks), moving test patterns."""
    folder = tmp_path_factory.mktemp("videos")
    made = {}
    for name, size, seconds in (("short", "180x320", 1), ("long", "320x180", 8)):
        path = folder / f"{name}.mp4"
        subprocess.run(
            [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
             "-c:v", "libx264", "-g", "60", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
        made[name] = path
    return made


@pytest.mark.parametrize(("name", "tile"), [("short", (90, 160)), ("long", (160, 90))])
def test_frame_strip_shows_frames_from_across_the_video(test_videos, name, tile):
    strip = Image.open(io.BytesIO(frame_strip(test_videos[name], count=4, size=160)))
    assert strip.format == "JPEG" and strip.size == (4 * tile[0], tile[1])
    tiles = [strip.crop((i * tile[0], 0, (i + 1) * tile[0], tile[1])).convert("L") for i in range(4)]
    for a, b in itertools.pairwise(tiles):
        assert sum(abs(x - y) for x, y in zip(a.getdata(), b.getdata(), strict=True)) > 1000, "frames differ"


def test_stage_counts_and_several_listeners(caplog):
    counts, other = progress.StageCounts(), progress.StageCounts()

    class Broken:
        def start(self, stage, total):
            raise RuntimeError("the display went away")

        advance = start

    seen = []
    with progress.listening(counts), progress.listening(Broken()), progress.listening(other):
        progress.start("validate", 4)
        progress.advance("validate", 4)
        seen.append(counts.fraction())
        progress.start("prompt_gate", 0)
        progress.start("generate", 2)
        progress.advance("generate")
        seen.append(counts.fraction())
        progress.drop("generate")  # the other clip was held back before generating
        seen.append(counts.fraction())
    progress.advance("generate")  # no listener any more
    assert seen == [1 / 6, 2.5 / 6, 3 / 6]
    assert counts.describe() == "validate 4/4 · prompt gate 0/0 · generate 1/1" == other.describe()
    assert "the display went away" in caplog.text and caplog.records[0].levelno == logging.WARNING


def test_browser_check_catches_a_broken_page(chromium, tmp_path):
    """The browser check can fail: a missing image, a console error and an exception are all reported."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><img src="missing.png"><script>console.error("boom"); nothing();</script>')
    loaded = open_page(page.as_uri(), "JSON.stringify([...document.images].map(i => i.naturalWidth))", tmp_path / "p")
    assert json.loads(loaded.evaluated) == [0]
    assert any("missing.png" in e for e in loaded.errors)
    assert any("boom" in e for e in loaded.errors) and any(e.startswith("exception:") for e in loaded.errors)


def test_each_gate_shows_its_headline_score():
    """The number a reviewer reads first, from each gate's scores (the prompt, frame and adherence gates)."""
    prompt = {
        "gate": "prompt",
        "passed": True,
        "rule": None,
        "policy": "default",
        "scores": json.dumps({"classifier": {"profanity": 0.12, "other": 0.03}}),
    }
    frames = {
        "gate": "frames",
        "passed": False,
        "rule": "nudity",
        "policy": "strict",
        "scores": json.dumps({"labels": {"FACE_F": 0.4, "EXPOSED": 0.91}, "qc": {"black": 0.0}}),
    }
    adherence = {
        "gate": "adherence",
        "passed": True,
        "rule": None,
        "policy": "adherence",
        "scores": json.dumps({"clip_score": 0.31, "candidates": [0.28, 0.31]}),
    }
    unknown = {"gate": "frames", "passed": True, "rule": None, "policy": "default", "scores": "not json"}  # fmt: skip
    from moviegen.report.records import gate_summary

    assert gate_summary(prompt) == {"passed": True, "rule": None, "policy": "default", "score_name": "classifier",
                                    "score": 0.12}  # fmt: skip
    assert gate_summary(frames)["score_name"] == "EXPOSED" and gate_summary(frames)["score"] == 0.91
    assert (gate_summary(adherence)["score_name"], gate_summary(adherence)["score"]) == ("clip_score", 0.31)
    assert gate_summary(unknown) == {"passed": True, "rule": None, "policy": "default"}
    page = render_report_html(
        {"run_id": "r1", "clips": [{"row": 0, "campaign_id": "c", "clip_id": "a", "status": "quarantined",
                                    "gates": {"frames": gate_summary(frames), "adherence": gate_summary(adherence)}}]}
    )  # fmt: skip
    text = " ".join(" ".join(parse(page).text).split())
    assert "frames ✗ nudity · EXPOSED 0.91" in text and "adherence ✓ · clip_score 0.31" in text


def test_the_cli_bar_of_a_stage_completes_when_items_are_dropped():
    from rich.progress import Progress

    from flows.cli import _RichProgress

    bar = Progress(disable=True)
    with progress.listening(_RichProgress(bar)):
        progress.start("render", 3)
        progress.advance("render", 2)
        assert not bar.tasks[0].finished
        progress.drop("render")  # its clip was quarantined
        progress.drop("not_started")  # nothing to shrink
    (task,) = bar.tasks
    assert (task.description, task.completed, task.total, task.finished) == ("render", 2, 2, True)
