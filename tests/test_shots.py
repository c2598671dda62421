"""Multi-shot rows: the `shots` column validated shot by shot, the assembly's seams to the frame, the
clip_keys that make a rerun publish nothing and an edit regenerate only what depends on it, and a
three-shot ad published end to end on the default tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fast_settings, row

from moviegen.catalog.schema import write_catalog
from moviegen.costs import TIMINGS_SCHEMA
from moviegen.generation.shots import assemble_shots, fit_shot, shot_frame_counts
from moviegen.media import probe, read_frames, write_frame, write_master
from moviegen.run.context import start_run
from moviegen.run.plain import run_campaign_plain
from moviegen.run.planning import plan_campaign
from moviegen.run.screening import load_and_validate, screen_prompts
from moviegen.store import MANIFEST_SCHEMA, OutputRoot

SHOE, TRAIL, LOGO = "close-up of a red running shoe", "a runner on a forest trail at dawn", "the brand logo on white"
WIDE_SMALL = {"wide_small": {"width": 320, "height": 180, "fps": 16, "max_duration_s": 60}}


def shots(*prompts: str, duration_s: float = 4.0) -> list[dict]:
    return [{"prompt": p, "duration_s": duration_s} for p in prompts]


def ad(clip_id: str = "ad", **fields) -> dict:
    """A multi-shot row: duration_s left empty (the shots say how long the ad is)."""
    defaults = {"duration_s": None, "channels": ["wide_small"], "prompt": "a trail-running shoe ad"}
    return row(clip_id, **{**defaults, **fields})


def validated(tmp_path: Path, table: pa.Table | list[dict], **settings):
    catalog = tmp_path / "catalog.parquet"
    if isinstance(table, pa.Table):
        pq.write_table(table, catalog)
    else:
        write_catalog(table, str(catalog))
    ctx = start_run(fast_settings(tmp_path / "out", **{"channels": WIDE_SMALL, **settings}))
    return ctx, load_and_validate(str(catalog), ctx)


def planned(tmp_path: Path, rows: list[dict]):
    ctx, validation = validated(tmp_path, rows)
    assert validation.problems == []
    plan = plan_campaign(validation.specs, ctx)
    assert plan.problems == []
    return {clip.spec.clip_id: clip for clip, _ in plan.todo}


# --- assembly ---------------------------------------------------------------------------------------


def test_shot_frame_counts_follow_the_timeline_without_drift():
    assert shot_frame_counts([4.0, 4.0, 4.0], 16) == (64, 64, 64)
    assert shot_frame_counts([1 / 3] * 3, 24) == (8, 8, 8)
    counts = shot_frame_counts([0.7, 0.7, 0.7], 16)  # 11.2 frames each: 11, 11, 12 (not 3 x 11)
    assert counts == (11, 11, 12) and sum(counts) == round(2.1 * 16)


def test_fit_shot_cuts_loops_or_holds_to_the_count():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None].repeat(3, axis=-1)
    assert [int(f[0, 0, 0]) for f in fit_shot(frames, 3)] == [0, 1, 2]
    assert [int(f[0, 0, 0]) for f in fit_shot(frames, 6, "loop")] == [0, 1, 2, 3, 0, 1]
    assert [int(f[0, 0, 0]) for f in fit_shot(frames, 6, "hold")] == [0, 1, 2, 3, 3, 3]


def flat(value: int, count: int) -> np.ndarray:
    return np.full((count, 2, 2, 3), value, np.uint8)


def test_assembly_cuts_blends_and_fades_at_exact_frames():
    a, b, c = flat(0, 6), flat(240, 6), flat(120, 6)
    cut = assemble_shots([a, b, c], "cut")
    assert len(cut) == 18 and [int(v) for v in cut[5:7, 0, 0, 0]] == [0, 240] and int(cut[12, 0, 0, 0]) == 120
    cross = assemble_shots([flat(0, 8), flat(240, 8), flat(120, 8)], "crossfade", 3)
    assert len(cross) == 24 - 2 * 3  # each crossfade overlaps its shots
    assert [int(v) for v in cross[4:9, 0, 0, 0]] == [0, 60, 120, 180, 240]  # weights 1/4, 2/4, 3/4
    assert [int(v) for v in cross[9:14, 0, 0, 0]] == [240, 210, 180, 150, 120]
    fade = assemble_shots([a, b], "fade", 4)
    assert len(fade) == 12
    assert [int(v) for v in fade[6:10, 0, 0, 0]] == [120, 240, 240, 240]  # brightens from black over 2 frames
    bright = assemble_shots([b, a], "fade", 4)
    assert [int(v) for v in bright[3:6, 0, 0, 0]] == [240, 120, 0]  # darkens to black over 2 frames
    with pytest.raises(ValueError, match="shot 1 came back as"):
        assemble_shots([a, np.zeros((6, 4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="unknown transition"):
        assemble_shots([a, b], "wipe", 2)


# --- validation -------------------------------------------------------------------------------------


def test_validation_explains_every_bad_shot_value(tmp_path):
    rows = [
        ad("no-prompt", shots=[{"prompt": SHOE, "duration_s": 4.0}, {"prompt": None, "duration_s": 2.0}]),
        ad("too-long-shot", shots=[{"prompt": SHOE, "duration_s": 90.0}]),
        ad("bad-seed", shots=[{"prompt": SHOE, "duration_s": 2.0, "seed": -1}]),
        ad("mismatch", shots=shots(SHOE, TRAIL), transition="crossfade", transition_s=1.0) | {"duration_s": 8.0},
        ad("long-fade", shots=[*shots(SHOE), {"prompt": TRAIL, "duration_s": 1.0}], transition="fade",
           transition_s=0.8),
        ad("channel", shots=shots(SHOE, TRAIL, LOGO), channels=["x"]) ,
        ad("conflict", shots=shots(SHOE), reference_image=str(write_frame(flat(90, 1)[0], tmp_path / "hero.png"))),
        ad("too-many", shots=shots(*["a shot"] * 13, duration_s=1.0)),
        ad("no-i2v", shots=shots(SHOE, TRAIL), model="cogvideox-2b", continuity="last_frame"),
        ad("bad-transition", shots=shots(SHOE, TRAIL), transition="wipe"),
        ad("good", shots=shots(SHOE, TRAIL, LOGO), duration_s=12.0),
    ]  # fmt: skip
    channels = {**WIDE_SMALL, "x": {"width": 320, "height": 180, "fps": 16, "max_duration_s": 10}}
    _, validation = validated(tmp_path, rows, channels=channels)
    found = {(p.clip_id, p.column, p.rule): p.message for p in validation.problems}
    expect = {
        ("no-prompt", "shots[1].prompt", "missing"): "shots[1].prompt is empty: give every shot a prompt",
        ("too-long-shot", "shots[0].duration_s", "range"): "shots[0].duration_s 90.0 is out of range: use 0.5 to 60",
        ("bad-seed", "shots[0].seed", "range"): "shots[0].seed -1 is out of range: use 0 to 4294967295",
        ("mismatch", "duration_s", "mismatch"): "duration_s 8 is not what the shots last (4 + 4 - 1 of crossfades = "
        "7 s): give duration_s 7 or leave it empty",
        ("long-fade", "transition_s", "range"): "transition_s 0.8 is more than half the shortest shot (1 s)",
        ("channel", "shots", "too_long_for_channel"): "the shots last 12 s, which is longer than x allows (10 s)",
        ("conflict", "reference_image", "conflict"): "a row with shots takes no reference_image",
        ("too-many", "shots", "too_many"): "shots lists 13 shots; use 12 at most",
        ("no-i2v", "continuity", "unsupported_task"): "cogvideox-2b",
        ("bad-transition", "transition", "unknown_transition"): "unknown transition 'wipe'",
    }
    for key, words in expect.items():
        assert key in found, (key, found)
        assert words in found[key], (key, found[key])
    assert [s.clip_id for s in validation.specs] == ["good"]
    [good] = validation.specs
    assert (good.duration_s, [s.seed for s in good.shots]) == (12.0, [7, 8, 9])
    assert all(p.row is not None and p.clip_id for p in validation.problems)


def test_a_shot_with_an_unknown_field_or_of_the_wrong_type_is_named(tmp_path):
    struct = pa.struct([("prompt", pa.string()), ("duration_s", pa.float64()), ("zoom", pa.float64())])
    table = pa.table(
        {
            "campaign_id": ["c", "c"],
            "clip_id": ["zoom", "plain"],
            "prompt": ["an ad", "an ad"],
            "channels": [["wide_small"], ["wide_small"]],
            "shots": pa.array([[{"prompt": SHOE, "duration_s": 2.0, "zoom": 2.0}], None], pa.list_(struct)),
        }
    )
    _, validation = validated(tmp_path, table)
    [problem] = validation.problems
    assert (problem.row, problem.column, problem.rule) == (0, "shots[0].zoom", "unknown_field")
    assert "a shot takes prompt, duration_s" in problem.message
    assert [s.clip_id for s in validation.specs] == ["plain"]  # a row without shots is a plain row
    texts = pa.table({**{n: table.column(n) for n in ("campaign_id", "clip_id", "prompt", "channels")},
                      "shots": pa.array([["a shot"], ["another"]], pa.list_(pa.string()))})  # fmt: skip
    (tmp_path / "texts").mkdir()
    _, validation = validated(tmp_path / "texts", texts)
    assert {(p.column, p.rule) for p in validation.problems} == {("shots[0]", "type")}
    assert "shots[0] must be a {prompt, duration_s} struct, got text 'a shot'" in validation.problems[0].message


def test_the_prompt_gate_reads_every_shot_and_names_it(tmp_path):
    ctx, validation = validated(
        tmp_path,
        [ad("nude", shots=shots(SHOE, "a nude model on a beach")), ad("clean", shots=shots(SHOE, TRAIL))],
    )
    screened = screen_prompts(validation, ctx)
    [problem] = screened.problems
    assert (problem.clip_id, problem.stage, problem.rule, problem.column) == (
        "nude",
        "prompt",
        "denied_term",
        "shots[1].prompt",
    )
    assert [s.clip_id for s in screened.specs] == ["clean"]


# --- identity ---------------------------------------------------------------------------------------


def test_editing_a_shot_changes_its_key_and_with_last_frame_the_keys_after_it(tmp_path):
    rows = [ad("cut", shots=shots(SHOE, TRAIL, LOGO)), ad("chain", shots=shots(SHOE, TRAIL, LOGO),
                                                          continuity="last_frame")]  # fmt: skip
    before = planned(tmp_path / "a", rows)
    edited = [ad("cut", shots=shots(SHOE, TRAIL + ", rain", LOGO)),
              ad("chain", shots=shots(SHOE, TRAIL + ", rain", LOGO), continuity="last_frame")]  # fmt: skip
    after = planned(tmp_path / "b", edited)
    changed = {k: [a.clip_key != b.clip_key for a, b in zip(before[k].shots, after[k].shots, strict=True)]
               for k in ("cut", "chain")}  # fmt: skip
    assert changed == {"cut": [False, True, False], "chain": [False, True, True]}
    assert [before[k].clip_key != after[k].clip_key for k in ("cut", "chain")] == [True, True]
    cut, chain = before["cut"], before["chain"]
    assert (cut.frames, cut.shot_frames, cut.calls, chain.shots[1].after) == (
        192,
        (64, 64, 64),
        3,
        chain.shots[0].clip_key,
    )
    assert chain.shots[1].model.info.name == "tiny-wan-i2v" and chain.shots[0].model.info.name == "tiny-wan"
    crossfaded = planned(tmp_path / "c", [ad("x", shots=shots(SHOE, TRAIL), transition="crossfade", transition_s=0.5)])
    assert (crossfaded["x"].frames, crossfaded["x"].transition_frames) == (128 - 8, 8)
    assert [(s["start_s"], s["end_s"]) for s in crossfaded["x"].shots_record()] == [(0.0, 4.0), (3.5, 7.5)]


def test_plan_counts_the_multi_shot_rows(tmp_path):
    catalog = tmp_path / "catalog.parquet"
    write_catalog([row("ad", duration_s=None, shots=shots(SHOE, TRAIL, LOGO, duration_s=2.0)), row("plain"),
                   row("chain", duration_s=None, shots=shots(SHOE, TRAIL), continuity="last_frame")],
                  str(catalog))  # fmt: skip
    moviegen = str(Path(sys.executable).with_name("moviegen"))
    done = subprocess.run([moviegen, "plan", str(catalog), "--json"], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["multi_shot"] == {"rows": 2, "shots": 5, "image_to_video": ["tiny-wan-i2v"]}
    human = " ".join(subprocess.run([moviegen, "plan", str(catalog)], capture_output=True, text=True,
                                    env=os.environ).stdout.split())  # fmt: skip
    assert "2 multi-shot row(s): 5 shots, each generated and cached on its own" in human
    assert "start from the shot before on tiny-wan-i2v; tiny-wan-i2v is loaded besides the rows' models" in human


# --- end to end -------------------------------------------------------------------------------------


def plain_masters(folder: Path) -> dict[str, int]:
    """The masters in the work folder (not their watermarked copies), with their modification times."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mkv") if "." not in p.stem}


@pytest.fixture(scope="module")
def three_shot_ad(tmp_path_factory, tiny_model):
    """One three-shot ad of 4 s cuts published on the default tiny model (16 fps channel), beside a
    two-shot row chained from last frames (1 s shots, crossfaded over 4 frames); then rerun."""
    tmp = tmp_path_factory.mktemp("shots")
    catalog = tmp / "catalog.parquet"
    chain = ad("chain", shots=shots(SHOE, TRAIL, duration_s=1.0), continuity="last_frame", transition="crossfade",
               transition_s=0.25)  # fmt: skip
    write_catalog([ad(shots=shots(SHOE, TRAIL, LOGO)), chain], str(catalog))
    settings = fast_settings(tmp / "out", channels=WIDE_SMALL)
    first = run_campaign_plain(str(catalog), settings)
    masters = plain_masters(tmp / "out" / ".work" / "masters")
    again = run_campaign_plain(str(catalog), settings)
    return tmp, catalog, settings, first, masters, again


def generate_timings(settings, run_id: str) -> list[tuple[str, str, int]]:
    """The run's generate timings (the cost model's data): item, model and frames, one per call recorded."""
    rows = OutputRoot(settings.out).read_rows("timings", TIMINGS_SCHEMA).to_pylist()
    return sorted(
        (t["item"], t["model"], t["frames"]) for t in rows if t["run_id"] == run_id and t["kind"] == "generate"
    )


def published(summary, clip_id: str) -> dict:
    [found] = [p for p in summary.published if p["clip_id"] == clip_id]
    return found


@pytest.mark.slow
def test_a_three_shot_ad_publishes_12_s_with_its_seams_at_the_shot_boundaries(three_shot_ad):
    tmp, _, settings, first, _, again = three_shot_ad
    assert first.exit_code == 0, first.problems
    video = tmp / "out" / published(first, "ad")["path"]
    info = probe(video)
    assert (info.frames, round(info.duration_s, 2)) == (192, 12.0)
    manifests = OutputRoot(settings.out).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    [manifest] = [m for m in manifests if m["clip_id"] == "ad"]
    assert (manifest["shots"], manifest["segments"]) == (3, 3)
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert [(s["prompt"], s["start_s"], s["end_s"], s["frames"]) for s in sidecar["shots"]] == [
        (SHOE, 0.0, 4.0, 64), (TRAIL, 4.0, 8.0, 64), (LOGO, 8.0, 12.0, 64)]  # fmt: skip
    masters = tmp / "out" / ".work" / "masters"
    whole = read_frames(masters / f"{manifest['clip_key']}.mkv")
    assert len(whole) == 192
    for k, shot in enumerate(sidecar["shots"]):  # each shot's frames sit exactly where the timeline puts them
        own = read_frames(masters / f"{shot['clip_key']}.mkv")
        assert np.array_equal(whole[64 * k : 64 * (k + 1)], own[:64]), k
    [record] = [c for c in first.clips if c["clip_id"] == "ad"]  # the run's report lists the shots
    assert [(s["prompt"], s["start_s"], s["end_s"]) for s in record["shots"]] == [
        (SHOE, 0.0, 4.0), (TRAIL, 4.0, 8.0), (LOGO, 8.0, 12.0)]  # fmt: skip
    report = (tmp / "out" / "runs" / first.run_id / "report.html").read_text()
    assert f"shots[1] 4.00–8.00 s: {TRAIL}" in report
    # Each shot is timed as the call it was, on the model that made it (the chain's second shot on i2v).
    [(item, model, frames)] = {t for t in generate_timings(settings, first.run_id) if t[0] == "test-camp/ad"}
    assert (item, model) == ("test-camp/ad", "tiny-wan") and frames >= 64
    assert len(generate_timings(settings, first.run_id)) == 3 + 2
    assert [m for i, m, _ in generate_timings(settings, first.run_id) if i == "test-camp/chain"] == [
        "tiny-wan", "tiny-wan-i2v"]  # fmt: skip
    assert again.published == [] and again.generated == 0 and again.exit_code == 0


@pytest.mark.slow
def test_editing_one_shot_regenerates_only_that_shot(three_shot_ad):
    tmp, catalog, settings, first, masters_before, _ = three_shot_ad
    write_catalog([ad(shots=shots(SHOE, TRAIL + ", light rain", LOGO))], str(catalog))
    edited = run_campaign_plain(str(catalog), settings)
    assert edited.exit_code == 0, edited.problems
    [made] = edited.published
    sidecar = json.loads((tmp / "out" / made["path"]).with_suffix(".json").read_text())
    keys = [s["clip_key"] for s in sidecar["shots"]]
    folder = tmp / "out" / ".work" / "masters"
    now = plain_masters(folder)
    assert {name: now[name] for name in masters_before} == masters_before  # nothing made before was rewritten
    new = sorted(set(now) - set(masters_before))
    assert sorted([f"{keys[1]}.mkv", f"{made['clip_key']}.mkv"]) == new  # the edited shot and the new ad
    assert f"{keys[0]}.mkv" in masters_before and f"{keys[2]}.mkv" in masters_before  # shots 0 and 2 reused
    assert edited.generated == 1 and made["clip_key"] != published(first, "ad")["clip_key"]
    assert [(i, m) for i, m, _ in generate_timings(settings, edited.run_id)] == [("test-camp/ad", "tiny-wan")]


@pytest.mark.slow
def test_a_held_back_shot_holds_back_its_row_and_is_named(three_shot_ad, tmp_path):
    """The frame gate checks every shot, reused ones too: a black master in the second shot's place
    holds the row back with the shot named; the first shot (the ad's, reused) passes."""
    tmp = three_shot_ad[0]
    catalog = tmp_path / "catalog.parquet"
    rows = [ad("held", shots=shots(SHOE, "a dark cellar"))]
    write_catalog(rows, str(catalog))
    settings = fast_settings(tmp / "out", channels=WIDE_SMALL)
    [(clip, _)] = plan_campaign(load_and_validate(str(catalog), start_run(settings)).specs, start_run(settings)).todo
    frames = read_frames(tmp / "out" / ".work" / "masters" / f"{clip.shots[0].clip_key}.mkv")
    write_master(np.zeros_like(frames), clip.fps, tmp / "out" / ".work" / "masters" / f"{clip.shots[1].clip_key}.mkv")
    summary = run_campaign_plain(str(catalog), settings)
    assert summary.published == []
    [problem] = summary.problems
    assert (problem.stage, problem.column, problem.clip_id) == ("frames", "shots[1].prompt", "held")
    assert problem.message.startswith("shots[1]: ") and problem.details["shot"] == 1


@pytest.mark.slow
def test_last_frame_continuity_starts_each_shot_from_the_one_before(three_shot_ad):
    """The chained row: the second shot image-to-video from the first's last frame, crossfaded over 4 frames."""
    tmp, first = three_shot_ad[0], three_shot_ad[3]
    video = tmp / "out" / published(first, "chain")["path"]
    assert probe(video).frames == 16 + 16 - 4
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert [s["continues_last_frame"] for s in sidecar["shots"]] == [False, True]
    assert [(s["start_s"], s["end_s"]) for s in sidecar["shots"]] == [(0.0, 1.0), (0.75, 1.75)]
    work = tmp / "out" / ".work"
    shot0 = read_frames(work / "masters" / f"{sidecar['shots'][0]['clip_key']}.mkv")
    start = read_frames(work / "shots" / f"{sidecar['shots'][1]['clip_key']}-start.png")
    assert np.array_equal(start[0], shot0[-1])  # the second shot was conditioned on exactly that frame
