"""The cost model: fitting recorded timings, priors, and ``moviegen plan``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import row

from moviegen.costs import (
    GENERATE,
    LOAD,
    RENDER,
    SHARD,
    TIMINGS_SCHEMA,
    CostModel,
    fit_rate,
    load_cost_model,
    render_workers_for,
    timing_row,
    work_units,
)
from moviegen.store import OutputRoot, utc_now

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))


def test_fit_recovers_rate_and_fixed_cost():
    samples = [(u, 3.0 * u + 0.5) for u in (0.1, 0.2, 0.4, 0.8)]
    rate = fit_rate(samples, "test")
    assert rate.per_unit_s == pytest.approx(3.0) and rate.per_item_s == pytest.approx(0.5)
    assert rate.samples == 4 and rate.seconds(1.0) == pytest.approx(3.5)
    # One size only: everything is charged per unit.
    same = fit_rate([(0.2, 1.0), (0.2, 1.2)], "test")
    assert same.per_item_s == 0 and same.seconds(0.2) == pytest.approx(1.1)
    assert fit_rate([], "test") is None


def _record(out: OutputRoot, rows: list[dict]) -> None:
    out.append_rows("timings", TIMINGS_SCHEMA, rows, "run-x")


def test_load_cost_model_calibrates_from_timings_and_keeps_priors_for_the_rest(tmp_path):
    out = OutputRoot(str(tmp_path))
    now = utc_now()
    rows = [
        timing_row(
            "r", GENERATE, "tiny-wan", f"c/{f}", "cuda:1", 2.0 * work_units(480, 272, f, 2) + 0.1, now, 480, 272, f, 2
        )
        for f in (17, 33, 49)
    ]
    rows += [
        timing_row("r", RENDER, "x", f"c/{n}", "cuda", 0.5 + 0.01 * work_units(1280, 720, n), now, 1280, 720, n)
        for n in (30, 60)
    ]
    rows += [timing_row("r", SHARD, None, f"shard-{s}", "cuda", s, now) for s in (5.0, 6.0, 30.0)]
    rows += [timing_row("r", LOAD, "tiny-wan", None, "cuda", 1.5, now)]
    rows += [timing_row("r", GENERATE, "tiny-wan", "c/x", "cpu", 99.0, now, 480, 272, 17, 2)]  # another device
    _record(out, rows)
    cost = load_cost_model(out, "cuda")
    tiny = cost.rate("tiny-wan")
    assert tiny.per_unit_s == pytest.approx(2.0) and tiny.per_item_s == pytest.approx(0.1)
    assert tiny.source == "calibrated from 3 clips"
    assert cost.render.per_unit_s == pytest.approx(0.01) and cost.render.per_item_s == pytest.approx(0.5)
    assert cost.shard_s == 6.0 and cost.shard_samples == 3  # the median: one slow start is noise
    assert cost.model_load_s("tiny-wan") == 1.5
    assert cost.rate("wan2.1-t2v-1.3b").source == "prior"
    # Without a device: the kind most recorded clips ran on.
    assert load_cost_model(out).device == "cuda"
    assert load_cost_model(OutputRoot(str(tmp_path / "empty"))).device == "cuda"
    assert load_cost_model(out, "cpu").rate("tiny-wan").seconds(work_units(480, 272, 17, 2)) == pytest.approx(99.0)


def test_unknown_models_are_priced_as_the_slowest_known_one():
    cost = CostModel(device="cuda")
    assert cost.rate("someone/wan-finetune") == max(
        (cost.rate(m) for m in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b")), key=lambda r: r.per_unit_s
    )


def test_plan_command_prints_estimate_and_layout(tmp_path, catalog_file):
    catalog = catalog_file(
        [row(f"s{i}", duration_s=1.0) for i in range(6)]
        + [row(f"l{i}", duration_s=5.0, model="wan2.1-t2v-1.3b", channels=["tiktok", "youtube"]) for i in range(3)]
        + [row("bad", channels=["fax"])]
    )
    out = tmp_path / "out"
    now = utc_now()
    _record(
        OutputRoot(str(out)),
        [timing_row("r", GENERATE, "wan2.1-t2v-1.3b", "c/l0", "cuda", 100.0, now, 832, 480, 81, 50)],
    )
    env = {**os.environ}
    result = subprocess.run(
        [MOVIEGEN, "plan", str(catalog), "--workers", "3", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["rows"], plan["valid"], plan["workers"]) == (10, 9, 3)
    assert [(p["row"], p["column"], p["rule"]) for p in plan["problems"]] == [(9, "channels", "unknown_channel")]
    assert plan["cost_model"]["device"] == "cuda"
    big = plan["by_model"]["wan2.1-t2v-1.3b"]
    assert big["clips"] == 3 and big["gpu_s"] == pytest.approx(300.0, rel=0.01)
    assert big["rate"]["source"] == "calibrated from 1 clips"
    assert len(plan["shards"]) == 3
    assert sorted(r for s in plan["shards"] for r in s["rows"]) == list(range(9))
    # Each worker gets one of the three long clips.
    assert sorted(sum(r >= 6 for r in s["rows"]) for s in plan["shards"]) == [1, 1, 1]
    assert plan["wall_s"] >= plan["ideal_s"] and 0 < plan["efficiency"] <= 1

    human = subprocess.run(
        [MOVIEGEN, "plan", str(catalog), "-w", "3", "--out", str(out)], capture_output=True, text=True
    )
    assert human.returncode == 0, human.stderr
    assert "9 of 10 rows would run on cuda" in human.stdout and "shard-002" in human.stdout
    assert "row 9, clip_id bad, column channels: unknown channel 'fax'" in " ".join(human.stderr.split())


def test_render_workers_cover_a_clips_renditions_while_the_gpu_makes_the_next():
    # 3 renditions of 10 CPU s each per 6.7 GPU s: 4.48 cores' worth; 16 cores leave 15 after the feeder.
    fast = render_workers_for(16, 6.7, 3, 10.0)
    assert fast.needed == pytest.approx(30 / 6.7)
    assert (fast.available, fast.render_workers, fast.cpu_bound) == (15, 5, False)
    # The same work on 4 cores: 3 left, so the GPU waits; render_workers stops at what the cores hold.
    small = render_workers_for(4, 6.7, 3, 10.0)
    assert (small.available, small.render_workers, small.cpu_bound) == (3, 3, True)
    # A 50-step clip (66 GPU s) leaves the same renditions plenty of time.
    slow = render_workers_for(4, 66.0, 3, 10.0)
    assert (slow.render_workers, slow.cpu_bound) == (1, False) and slow.needed == pytest.approx(30 / 66)
    # Exactly enough is not CPU-bound; nothing to render still gets one worker; one core keeps one.
    assert (render_workers_for(3, 10.0, 2, 10.0).render_workers, render_workers_for(3, 10.0, 2, 10.0).cpu_bound) == (
        2,
        False,
    )
    assert render_workers_for(8, 5.0, 0, 10.0).render_workers == 1
    assert render_workers_for(1, 1.0, 1, 1.0).available == 1
    for bad in ((0, 1.0, 1, 1.0), (4, 0.0, 1, 1.0), (4, 1.0, -1, 1.0)):
        with pytest.raises(ValueError):
            render_workers_for(*bad)


def test_plan_says_when_a_worker_would_be_cpu_bound(tmp_path, catalog_file):
    # The tiny model on a GPU makes a clip in a fraction of a second: its renditions cannot keep up.
    fast = catalog_file([row(f"t{i}", duration_s=5.0, channels=["tiktok", "youtube"]) for i in range(2)])
    result = subprocess.run(
        [MOVIEGEN, "plan", str(fast), "--device", "cuda", "--cores", "4", "--out", str(tmp_path / "o"), "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sizing = json.loads(result.stdout)["render_sizing"]
    assert (sizing["cores"], sizing["render_workers"]) == (4, 2)
    (shard,) = sizing["shards"].values()
    assert shard["renditions_per_clip"] == 2 and shard["cpu_seconds_per_rendition"] > 1
    expected = shard["renditions_per_clip"] * shard["cpu_seconds_per_rendition"] / shard["clip_seconds_gpu"]
    assert shard["needed"] == pytest.approx(expected, rel=0.01)
    assert shard["cpu_bound"] and shard["available"] == 3 and shard["render_workers"] == 3
    human = subprocess.run(
        [MOVIEGEN, "plan", str(fast), "--device", "cuda", "--cores", "4", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert human.returncode == 0 and "CPU-bound" in human.stdout and "the GPU would wait" in human.stdout

    # 50 steps of the 1.3B model take minutes per clip: the same renditions keep up on 4 cores.
    slow = catalog_file(
        [row(f"w{i}", duration_s=5.0, model="wan2.1-t2v-1.3b", channels=["tiktok", "youtube"]) for i in range(2)],
        "slow.parquet",
    )
    result = subprocess.run(
        [MOVIEGEN, "plan", str(slow), "--device", "cuda", "--cores", "4", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "renditions keep up on 4 cores" in result.stdout and "CPU-bound" not in result.stdout
