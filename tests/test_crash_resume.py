"""Crash and resume: SIGKILL a real run at several points, rerun it, and the campaign completes exactly once.

Each case starts a real campaign (tiny model, real ffmpeg) in a child process that kills itself
with SIGKILL at one exact point (tests/crash_driver.py), then reruns the same catalog in this
process and checks: every rendition published exactly once, one manifest row per rendition, each
naming a whole file (SHA-256 and ffprobe), no temporary or partial file anywhere in the layout, and
nothing that was already published or generated before the kill made again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import row

from moviegen.media import probe
from moviegen.publish import MANIFEST_SCHEMA, OutputRoot, sha256_file

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CHANNELS = ("mini", "mini_tall")
CLIPS = ("a", "b", "c")
CONFIG = """
generation:
  steps: 2
  batch_size: 1
render_workers: 1
channels:
  mini: {label: Mini, width: 320, height: 180, fps: 15, max_duration_s: 60}
  mini_tall: {label: Mini tall, width: 180, height: 320, fps: 15, max_duration_s: 60}
"""


@pytest.fixture
def campaign_files(tmp_path, catalog_file, tiny_model):
    catalog = catalog_file([row(clip, channels=list(CHANNELS), duration_s=1.0, seed=i) for i, clip in enumerate(CLIPS)])
    config = tmp_path / "moviegen.yaml"
    config.write_text(CONFIG)
    return catalog, config, tmp_path / "out"


def run_child(catalog: Path, config: Path, out: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HERE / "crash_driver.py"), str(catalog), str(config), str(out), point],
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under the output root (scratch included) -> (inode, mtime): what a rerun must not redo."""
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def check_complete(out: Path) -> list[dict]:
    """Every rendition published once, each manifest row naming a whole file; nothing temporary left."""
    expected = {
        f"published/{ch}/test-camp/{clip}.{ext}" for ch in CHANNELS for clip in CLIPS for ext in ("mp4", "json", "jpg")
    }
    found = {str(p.relative_to(out)) for p in (out / "published").rglob("*") if p.is_file()}
    assert found == expected, "published/ holds exactly the renditions, no temporary or partial file"
    manifest = OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert len(manifest) == len(CHANNELS) * len(CLIPS)
    assert len({r["rendition_key"] for r in manifest}) == len(manifest)
    assert len({(r["clip_id"], r["channel"]) for r in manifest}) == len(manifest)
    for entry in manifest:
        video = out / entry["path"]
        assert sha256_file(video) == entry["sha256"] and video.stat().st_size == entry["bytes"]
        info = probe(video)
        assert (info.width, info.height, info.frames) == (entry["width"], entry["height"], entry["frames"])
        assert info.video_codec == "h264" and info.frames > 0
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["rendition_key"] == entry["rendition_key"]
    leftovers = [p for p in out.rglob("*") if p.is_file() and (".tmp" in p.name or ".staging" in p.parts)]
    assert leftovers == []
    assert not (out / "journal").exists() or list((out / "journal").iterdir()) == []
    assert not (out / ".work" / "renders").exists() or list((out / ".work" / "renders").iterdir()) == []
    return manifest


@pytest.mark.parametrize("point", ["generate:2", "render:2", "publish:2", "manifest:3", "finish"])
def test_killed_run_resumes_to_completion(campaign_files, point):
    from conftest import fast_settings  # noqa: F401  (conftest's environment applies to the child too)

    from moviegen.config import load_settings
    from moviegen.pipeline import run_campaign_plain

    catalog, config, out = campaign_files
    killed = run_child(catalog, config, out, point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    before = snapshot(out)
    killed_run = next((out / "runs").iterdir()).name
    recorded = {r["path"] for r in OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()}
    masters = {p: v for p, v in before.items() if p.startswith(".work/masters/") and p.endswith(".mkv")}
    staged_video = any(".staging" in p and p.endswith(".mp4.tmp") for p in before)

    summary = run_campaign_plain(str(catalog), load_settings(str(config), out=str(out)))

    assert summary.exit_code == 0, summary.problems
    manifest = check_complete(out)
    after = snapshot(out)
    # Nothing already done was done again: masters kept (not rewritten), recorded renditions untouched,
    # and only clips without a master were generated.
    assert {p: after[p] for p in masters} == masters
    assert all(after[p] == before[p] for p in recorded)
    assert summary.generated == len(CLIPS) - len(masters)
    # The killed run is on record as interrupted, and this run says it resumed it.
    assert json.loads((out / "runs" / killed_run / "run.json").read_text())["status"] == "interrupted"
    assert summary.interrupted_runs == [killed_run]
    if point.startswith("manifest"):
        # Its video had landed whole: adopted as it was (same file), not rendered again.
        assert summary.adopted == 1
        adopted = [r for r in manifest if r["run_id"] == killed_run and r["path"] not in recorded]
        assert len(adopted) == 1 and after[adopted[0]["path"]] == before[adopted[0]["path"]]
    if point.startswith("publish"):
        assert staged_video and summary.adopted == 0  # the staged copy was swept, the video made again
    if point == "finish":
        assert summary.published == [] and summary.generated == 0  # everything was done; only records left


def test_sigkill_of_the_cli_mid_publish_then_rerun(campaign_files):
    """The real CLI (Prefect flow) killed from outside, with its ffmpeg children, as soon as a file is published."""
    catalog, config, out = campaign_files
    moviegen = Path(sys.executable).parent / "moviegen"
    command = [str(moviegen), "run", str(catalog), "--out", str(out), "--config", str(config), "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(out.glob("published/*/*/*.mp4")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = snapshot(out)

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    check_complete(out)
    assert len(result["published"]) + result["already_published"] == len(CHANNELS) * len(CLIPS)
    masters = {p: v for p, v in before.items() if p.startswith(".work/masters/") and p.endswith(".mkv")}
    assert {p: snapshot(out)[p] for p in masters} == masters
    assert result["generated"] == len(CLIPS) - len(masters)
