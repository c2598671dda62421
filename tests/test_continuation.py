"""Continued segments (extend: continue): planning, the clip_key, seams read back, Wan's companion and LTX's own
image-to-video pipeline, and a 15 s row on the default model published whole instead of looped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_settings, row

from moviegen.catalog.schema import write_catalog
from moviegen.costs import TIMINGS_SCHEMA
from moviegen.generation.continuation import eased_segment
from moviegen.media import probe, read_frames
from moviegen.models.registry import resolve_model
from moviegen.publish.manifest import latest_renditions
from moviegen.run.context import start_run
from moviegen.run.masters import generate_masters
from moviegen.run.plain import run_campaign_plain
from moviegen.run.planning import plan_campaign
from moviegen.run.screening import load_and_validate
from moviegen.spec import SEAM_FRAMES
from moviegen.store import MANIFEST_SCHEMA, OutputRoot

KITE = "a red kite over sand dunes at dusk, slow pan"


def planned(tmp_path, rows, **settings):
    catalog = tmp_path / "catalog.parquet"
    write_catalog(rows, str(catalog))
    ctx = start_run(fast_settings(tmp_path / "out", **settings))
    plan = plan_campaign(load_and_validate(str(catalog), ctx).specs, ctx)
    assert plan.problems == []
    return ctx, {clip.spec.clip_id: clip for clip, _ in plan.todo}


def repeats_one_clip_earlier(frames: np.ndarray, period: int, tolerance: float = 2.0) -> list[int]:
    """Frames (from ``period`` on) that are within ``tolerance`` (mean absolute difference) of the frame
    ``period`` earlier: what a loop of a ``period``-frame clip shows."""
    values = frames.astype(np.int16)
    return [t for t in range(period, len(frames)) if np.abs(values[t] - values[t - period]).mean() < tolerance]


def test_segments_follow_the_models_clip_length():
    wan, ltx = resolve_model("tiny-wan").info, resolve_model("tiny-ltx").info
    assert [wan.segments_for(s) for s in (1, 5, 5.1, 10, 15, 60)] == [1, 1, 2, 2, 3, 12]
    assert (wan.frames_for(15), wan.frames_needed(15)) == (81, 241)
    assert [ltx.segments_for(s) for s in (10, 10.7, 12, 30)] == [1, 1, 2, 3]


def test_long_rows_continue_unless_they_ask_to_loop_and_short_rows_keep_their_keys(tmp_path, tiny_model):
    _, clips = planned(
        tmp_path,
        [row("long", duration_s=15.0, prompt=KITE), row("looped", duration_s=15.0, extend="loop", prompt=KITE),
         row("held", duration_s=15.0, extend="hold", prompt=KITE), row("short"),
         row("cog", model="tiny-cogvideox", duration_s=9.0)],
    )  # fmt: skip
    long, looped, held, short, cog = (clips[k] for k in ("long", "looped", "held", "short", "cog"))
    assert (long.segments, long.continuation.info.name, long.frames) == (3, "tiny-wan-i2v", 241)
    assert (looped.segments, looped.continuation, looped.frames) == (1, None, 81)
    assert held.segments == 1 and short.segments == 1
    assert long.request == looped.request  # the first segment is the looped clip's request...
    assert long.clip_key != looped.clip_key == held.clip_key  # ...but the master is another one
    assert (cog.segments, cog.continuation.info.name) == (2, "tiny-cogvideox-i2v")  # 49 frames at 8 fps a call
    _, again = planned(tmp_path / "again", [row("long", duration_s=15.0, prompt=KITE, seed=8)])
    assert again["long"].clip_key != long.clip_key


@pytest.mark.parametrize(("model", "seconds", "aspect"), [("tiny-wan", 1.0, "1:1"), ("tiny-ltx", 1.0, "1:1"),
                                                      ("tiny-cogvideox", 2.0, "16:9")])  # fmt: skip
def test_continuation_on_the_familys_image_to_video_pipeline(tmp_path, tiny_model, model, seconds, aspect):
    """Short segments (9 frames a call) so each family's continuation runs quickly; the seams are read back."""
    ctx, clips = planned(tmp_path, [row("c", model=model, duration_s=seconds, aspect=aspect)])
    one_call = clips["c"]
    base = replace(one_call.request, num_frames=9)
    expected = one_call.model.info.frames_needed(seconds)  # 17 at 16 fps (Wan, CogVideoX's 2 s at 8), 25 (LTX)
    segments = 1 + -(-(expected - 9) // 8)
    companion = {"tiny-wan": "tiny-wan-i2v", "tiny-ltx": "tiny-ltx", "tiny-cogvideox": "tiny-cogvideox-i2v"}[model]
    clip = replace(one_call, request=base, segments=segments, continuation=resolve_model(companion),
                   continuation_revision="test")  # fmt: skip
    [master] = generate_masters([clip], ctx)
    assert master.problem is None, master.problem
    frames = read_frames(master.path)
    assert len(frames) == clip.frames == expected
    first = clip.model.info.name
    [alone] = generate_masters([replace(one_call, request=base)], ctx)  # the same first call, not continued
    assert np.array_equal(read_frames(alone.path), frames[:9]), first  # segment 1 is the text-to-video clip
    # The seam at frame 9 eases in from frame 8: the first new frame is mostly frame 8.
    step = np.abs(frames[9].astype(int) - frames[8].astype(int)).mean()
    jump = np.abs(frames[9 + SEAM_FRAMES].astype(int) - frames[8].astype(int)).mean()
    assert step < jump or jump < 1.0
    assert not repeats_one_clip_earlier(frames, 9)


def test_a_segment_drops_its_start_frame_and_eases_in():
    last = np.zeros((2, 2, 3), np.uint8)
    segment = np.full((6, 2, 2, 3), 250, np.uint8)
    eased = eased_segment(last, segment, seam=4)
    assert [int(v) for v in eased[:, 0, 0, 0]] == [50, 100, 150, 200, 250]
    assert segment[1:].min() == 250  # the model's frames are left as they came
    with pytest.raises(ValueError, match="came back as"):
        eased_segment(last, np.zeros((3, 4, 4, 3), np.uint8))


@pytest.mark.slow
def test_a_15_s_row_is_published_whole_from_continued_segments(tmp_path, tiny_model):
    channels = {"wide_small": {"width": 320, "height": 180, "fps": 16, "max_duration_s": 60}}
    catalog = tmp_path / "catalog.parquet"
    write_catalog([row("long", duration_s=15.0, channels=["wide_small"])], str(catalog))
    settings = fast_settings(tmp_path / "out", channels=channels)
    summary = run_campaign_plain(str(catalog), settings)
    assert summary.exit_code == 0, summary.problems
    [published] = summary.published
    assert published["segments"] == 3
    video = tmp_path / "out" / published["path"]
    info = probe(video)
    assert (info.frames, round(info.duration_s, 1)) == (240, 15.0)
    frames = read_frames(video)
    assert not repeats_one_clip_earlier(frames, 81)  # a loop would repeat every frame 81 frames on
    looped = np.concatenate([frames[:81], frames[:81], frames[:78]])
    assert len(repeats_one_clip_earlier(looped, 81)) == 240 - 81  # the check sees a loop
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert sidecar["segments"] == 3
    rows = OutputRoot(settings.out).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert [r["segments"] for r in rows] == [3]
    # The continuation's calls are timed apart and recorded as the model that made them (cost data).
    timings = OutputRoot(settings.out).read_rows("timings", TIMINGS_SCHEMA).to_pylist()
    generated = {t["model"]: t for t in timings if t["kind"] == "generate"}
    assert sorted(generated) == ["tiny-wan", "tiny-wan-i2v"]
    assert all(t["seconds"] > 0 and t["frames"] == 81 for t in generated.values())
    [record] = summary.clips  # the run's report says how the clip was made
    assert (record["segments"], record["continued_on"]) == (3, "tiny-wan-i2v")
    report = (tmp_path / "out" / "runs" / summary.run_id / "report.html").read_text()
    assert "3 continued segments, on tiny-wan-i2v" in report
    again = run_campaign_plain(str(catalog), settings)
    assert again.published == [] and again.generated == 0
    assert latest_renditions(OutputRoot(settings.out))[("test-camp", "long", "wide_small")]["segments"] == 3


def test_plan_shows_the_continuations_extra_calls_and_load(tmp_path):
    catalog = tmp_path / "catalog.parquet"
    write_catalog([row("long", duration_s=15.0), row("short")], str(catalog))
    moviegen = str(Path(sys.executable).with_name("moviegen"))
    done = subprocess.run([moviegen, "plan", str(catalog), "--json"], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["continuations"] == {"tiny-wan-i2v": {"clips": 1, "calls": 2}}
    human = subprocess.run([moviegen, "plan", str(catalog)], capture_output=True, text=True, env=os.environ)
    assert "1 clip(s) longer than one call are continued from their last frame: 2 more call(s) on tiny-wan-i2v" in (
        " ".join(human.stdout.split())
    )
    assert "tiny-wan-i2v is loaded besides the rows' models" in " ".join(human.stdout.split())
