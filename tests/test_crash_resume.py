"""Crash and resume: SIGKILL a real run at several points, rerun it, and the campaign completes exactly once.

A real campaign (tiny model, real ffmpeg) runs in child processes that kill themselves with
SIGKILL at exact points (tests/crash_driver.py), each run resuming the one killed before it; a
last run completes it. Checked: every rendition published exactly once, one manifest row per
rendition, each naming a whole file (SHA-256 and ffprobe), no temporary or partial file anywhere
in the layout, and nothing already published or generated before a kill made again.
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
from moviegen.store import MANIFEST_SCHEMA, OutputRoot, sha256_file

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CHANNELS = ("mini", "mini_tall")
CLIPS = ("a", "b")
CONFIG = """
generation:
  steps: 2
  batch_size: 1
render_workers: 1
watermark_gate: recorded  # tiny-model noise at 180x320 can lose watermark bits (see conftest.FAST_CONFIG)
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


# One campaign, killed again and again: each run resumes the one before and dies at the next point.
KILLS = ("generate:2", "render:1", "publish:1", "manifest:1", "finish")


def test_killed_runs_resume_to_completion(campaign_files):
    from moviegen.config import load_settings
    from moviegen.run.plain import run_campaign_plain

    catalog, config, out = campaign_files
    runs: list[str] = []
    for point in (*KILLS, None):
        before = snapshot(out)
        recorded = {r["path"] for r in OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()}
        masters = {p: v for p, v in before.items() if p.startswith(".work/masters/") and p.endswith(".mkv")}
        if point is None:  # the last rerun runs to the end, here
            summary = run_campaign_plain(str(catalog), load_settings(str(config), out=str(out)))
            assert summary.exit_code == 0, summary.problems
            assert summary.published == [] and summary.generated == 0  # all was done; records were left
            assert summary.interrupted_runs == [runs[-1]]
            runs.append(summary.run_id)
        else:
            killed = run_child(catalog, config, out, point)
            assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stdout}{killed.stderr[-3000:]}"
            runs.append(next(r for r in sorted(p.name for p in (out / "runs").iterdir()) if r not in runs))
        after = snapshot(out)
        # Nothing done before this run was done again: masters kept as they were, recorded files untouched.
        assert {p: after.get(p) for p in masters} == masters, point
        assert {p: after.get(p) for p in recorded} == {p: before[p] for p in recorded}, point
        if point == "publish:1":
            assert any(".staging" in p and p.endswith(".mp4.tmp") for p in after)  # killed mid-copy
        if point == "manifest:1":
            pending = [p for p in after if p.startswith("journal/")]
            assert len(pending) == 1  # a video landed, its row did not: the intent says so
            landed = json.loads((out / pending[0]).read_text())
        if point == "finish":
            # The run before was killed with a whole video and no row: adopted as it was, not rendered again.
            manifest = OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
            [adopted] = [r for r in manifest if r["rendition_key"] == landed["rendition_key"]]
            assert adopted["run_id"] == runs[-2] and after[adopted["path"]] == before[adopted["path"]]

    manifest = check_complete(out)
    assert {r["run_id"] for r in manifest} <= set(runs)
    for run_id in runs[:-1]:  # every killed run is on record as interrupted, resumed by the next one
        record = json.loads((out / "runs" / run_id / "run.json").read_text())
        assert record["status"] == "interrupted" and record["resumed_by"] == runs[runs.index(run_id) + 1]
    # The killed runs' manifest parts were compacted into one part file per run.
    assert all(p.name.count("-") == 2 for p in (out / "manifest").iterdir())


def test_sigkill_of_the_cli_mid_publish_then_rerun(campaign_files):
    """The real CLI (Prefect flow) killed from outside, with its ffmpeg children, as soon as a file is published."""
    catalog, config, out = campaign_files
    moviegen = Path(sys.executable).parent / "moviegen"
    command = [str(moviegen), "run", str(catalog), "--out", str(out), "--config", str(config), "--json"]
    # A busy machine can take a while to start the ephemeral Prefect API.
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    deadline = time.monotonic() + 600
    while not list(out.glob("published/*/*/*.mp4")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = snapshot(out)

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    check_complete(out)
    assert len(result["published"]) + result["already_published"] == len(CHANNELS) * len(CLIPS)
    masters = {p: v for p, v in before.items() if p.startswith(".work/masters/") and p.endswith(".mkv")}
    assert {p: snapshot(out)[p] for p in masters} == masters
    assert result["generated"] == len(CLIPS) - len(masters)
