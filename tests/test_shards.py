"""Shard planning by cost, shard catalogs and gathering shard results (no Prefect, no model)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from conftest import row

from moviegen.catalog.check import validate_catalog
from moviegen.catalog.schema import read_catalog, write_catalog
from moviegen.config import Settings
from moviegen.costs import CostModel
from moviegen.generation.generate import grouping_batch_size
from moviegen.models.registry import resolve_model
from moviegen.presets import channel_presets, styles
from moviegen.records import CampaignPlan
from moviegen.run.planning import generation_request
from moviegen.run.shards import (
    CATALOG_ROW,
    ShardOutcome,
    ShardResult,
    WorkItem,
    gather_shards,
    plan_shards,
    restore_catalog_rows,
    work_item,
    write_shard_catalogs,
)
from moviegen.spec import ClipPlan, ClipSpec
from moviegen.store import OutputRoot

MODELS = ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "tiny-wan"]
CHANNELS = [("youtube",), ("tiktok", "instagram_reels"), ("x",), ("youtube", "youtube_shorts", "linkedin")]


def spec(i: int, **fields) -> ClipSpec:
    base = {"row": i, "campaign_id": "sim", "clip_id": f"c{i:05d}", "prompt": f"scene {i}", "channels": ("x",)}
    base["model"] = "tiny-wan"
    return ClipSpec(**{**base, **fields})


def test_ten_thousand_mixed_clips_on_64_workers_within_ten_percent_of_ideal():
    """Mixed durations and models: the planned makespan is within 10% of total work / workers."""
    rng = random.Random(20240601)
    settings, presets, cost = Settings(), channel_presets({}), CostModel(device="cuda")
    items = [
        work_item(
            spec(
                i,
                model=rng.choice(MODELS),
                duration_s=rng.choice([1.0, 2.0, 3.0, 5.0, 8.0, 10.0]),
                aspect=rng.choice(["16:9", "9:16", "1:1"]),
                channels=rng.choice(CHANNELS),
            ),
            rng.choice(CHANNELS),
            settings,
            presets,
            cost,
        )
        for i in range(10_000)
    ]
    layout = plan_shards(items, shards=64, batch_size=grouping_batch_size(settings.generation), cost=cost)
    assert len(layout.shards) == 64
    assert sorted(i.row for s in layout.shards for i in s.items) == list(range(10_000)), "every clip once"
    assert layout.makespan_s <= 1.10 * layout.ideal_s, (layout.makespan_s, layout.ideal_s)
    # Slow models are spread, not piled on a few shards.
    for model in ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b"):
        per_shard = [sum(i.generate_s for i in s.items if i.model == model) for s in layout.shards]
        assert sum(per_shard) > 0 and max(per_shard) > 0
        assert sum(1 for x in per_shard if x > 0) >= 48, f"{model} runs on most shards"
    # Row counts differ wildly between shards, cost does not: balance is by cost, not by count.
    counts = [len(s.items) for s in layout.shards]
    assert max(counts) > 1.5 * min(counts)


def test_counting_rows_would_be_far_worse():
    """The same clips dealt out by row count: the cost-balanced layout finishes much sooner."""
    cost = CostModel(device="cuda")
    settings, presets = Settings(), channel_presets({})
    long = [
        work_item(spec(i, model="wan2.1-t2v-14b", duration_s=5.0), ("x",), settings, presets, cost) for i in range(8)
    ]
    short = [work_item(spec(i, duration_s=1.0), ("x",), settings, presets, cost) for i in range(8, 72)]
    items = long + short
    layout = plan_shards(items, shards=8, batch_size=1, cost=cost)
    assert sorted(sum(i.model == "wan2.1-t2v-14b" for i in s.items) for s in layout.shards) == [1] * 8
    by_count = [items[k * 9 : (k + 1) * 9] for k in range(8)]  # 9 rows each, in catalog order
    by_count_makespan = max(sum(i.seconds for i in shard) for shard in by_count)
    assert layout.makespan_s < 0.2 * by_count_makespan


def test_a_continued_row_prices_its_extra_segments_on_the_model_that_continues_it():
    """Wan 2.1 1.3B has no image-to-video build: its 15 s row's two continuations run on the 14B i2v one."""
    cost, settings, presets = CostModel(device="cuda"), Settings(), channel_presets({})
    item = work_item(spec(0, model="wan2.1-t2v-1.3b", duration_s=15.0), ("x",), settings, presets, cost)
    assert (item.segments, item.continuation) == (3, "wan2.1-i2v-14b-480p")
    r = generation_request(spec(0, model="wan2.1-t2v-1.3b", duration_s=15.0), resolve_model("wan2.1-t2v-1.3b").info,
                           settings)  # fmt: skip
    call = (r.width, r.height, r.num_frames, r.steps)
    own, companion = cost.generate_seconds("wan2.1-t2v-1.3b", *call), cost.generate_seconds(item.continuation, *call)
    assert companion > 2 * own  # the companion is the 14B model: pricing it as the 1.3B would hide most of the row
    assert item.generate_s == pytest.approx(own + 2 * companion)


def test_batch_mates_stay_together_and_small_groups_split_across_shards():
    cost, settings, presets = CostModel(device="cpu"), Settings(), channel_presets({})
    alike = [work_item(spec(i, model="tiny-wan", duration_s=1.0), ("x",), settings, presets, cost) for i in range(6)]
    layout = plan_shards(alike, shards=2, batch_size=4, cost=cost)
    assert sorted(len(s.items) for s in layout.shards) == [3, 3]
    layout = plan_shards(alike * 1, shards=1, batch_size=4, cost=cost)
    assert [len(s.items) for s in layout.shards] == [6]
    big = [work_item(spec(i, model="tiny-wan", duration_s=1.0), ("x",), settings, presets, cost) for i in range(64)]
    layout = plan_shards(big, shards=4, batch_size=4, cost=cost)
    assert sorted(len(s.items) for s in layout.shards) == [16] * 4
    assert all(len(s.items) % 4 == 0 for s in layout.shards), "whole batches of 4 per shard"
    # Deterministic: the same input gives the same shards.
    again = plan_shards(big, shards=4, batch_size=4, cost=cost)
    assert [[i.row for i in s.items] for s in again.shards] == [[i.row for i in s.items] for s in layout.shards]


def test_a_model_is_not_loaded_on_another_shard_when_that_costs_more_than_it_saves():
    cost = CostModel(device="cuda", load_s={"wan2.1-t2v-14b": 600.0, "tiny-wan": 1.0})
    settings, presets = Settings(), channel_presets({})
    few = [
        work_item(spec(i, model="wan2.1-t2v-14b", duration_s=1.0), ("x",), settings, presets, cost) for i in range(2)
    ]
    many = [work_item(spec(i, model="tiny-wan"), ("x",), settings, presets, cost) for i in range(2, 40)]
    layout = plan_shards(few + many, shards=4, batch_size=1, cost=cost)
    holding = [s for s in layout.shards if "wan2.1-t2v-14b" in s.models]
    assert len(holding) <= 2
    assert all(s.load_s >= 600.0 for s in holding)


def test_shard_catalogs_keep_every_column_and_the_campaign_row_numbers(tmp_path):
    rows = [row(f"r{i}", caption=f"caption {i}", brand_note=f"note {i}") for i in range(5)]
    catalog = tmp_path / "catalog.parquet"
    write_catalog(rows, str(catalog))
    items = [WorkItem(i, "test-camp", f"r{i}", "tiny-wan", ("k",), 1.0 + i, 0.0) for i in (1, 3, 4)]
    layout = plan_shards(items, shards=2, batch_size=1, cost=CostModel(device="cpu"))
    out = OutputRoot(str(tmp_path / "out"))
    urls = write_shard_catalogs(str(catalog), layout, out, "run-1")
    assert set(urls) == {s.shard_id for s in layout.shards}
    seen = {}
    for shard in layout.shards:
        url = urls[shard.shard_id]
        assert url.startswith("file://") and url.endswith(f"runs/run-1/shards/{shard.shard_id}.parquet")
        table = read_catalog(url)
        assert table.column(CATALOG_ROW).to_pylist() == [i.row for i in shard.items]
        validation = validate_catalog(table, channels=channel_presets({}), styles=styles({}), default_model="tiny-wan")
        restored = restore_catalog_rows(validation, url)
        for s in restored.specs:
            assert CATALOG_ROW not in s.extra and s.extra["brand_note"] == f"note {s.row}"
            seen[s.clip_id] = s.row
    assert seen == {"r1": 1, "r3": 3, "r4": 4}


def test_shard_catalogs_make_relative_input_paths_absolute(tmp_path, monkeypatch):
    """Shard flow runs start in the worker's checkout: a logo named relative to the campaign's folder is still found."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "logo.png").write_bytes(b"png")
    rows = [
        row("a", logo_uri="assets/logo.png", lut="teal_orange"),
        row("b", logo_uri="https://cdn.example.com/logo.png"),
        row("c", logo_uri="assets/missing.png"),
    ]
    catalog = tmp_path / "catalog.parquet"
    write_catalog(rows, str(catalog))
    items = [WorkItem(i, "test-camp", c, "tiny-wan", ("k",), 1.0, 0.0) for i, c in enumerate("abc")]
    layout = plan_shards(items, shards=1, batch_size=4, cost=CostModel(device="cpu"))
    [url] = write_shard_catalogs(str(catalog), layout, OutputRoot(str(tmp_path / "out")), "run-1").values()
    table = read_catalog(url)
    assert table.column("logo_uri").to_pylist() == [
        str(tmp_path / "assets" / "logo.png"),
        "https://cdn.example.com/logo.png",
        "assets/missing.png",  # left for validation to report, with its own wording
    ]
    assert table.column("lut").to_pylist() == ["teal_orange", None, None]


def _plan(clip_ids: list[str]) -> CampaignPlan:
    settings = Settings()
    ref = resolve_model("tiny-wan")
    todo = []
    for i, clip_id in enumerate(clip_ids):
        s = spec(i, clip_id=clip_id, model="tiny-wan", campaign_id="camp", channels=("x", "youtube"))
        todo.append((ClipPlan(s, ref, "rev", generation_request(s, ref.info, settings), ref.info.fps), s.channels))
    return CampaignPlan(todo=todo)


def _manifest_row(clip_id: str, channel: str, run_id: str) -> dict:
    return {"run_id": run_id, "campaign_id": "camp", "clip_id": clip_id, "channel": channel, "path": "p"}


def test_gather_keeps_good_shards_and_reports_only_what_a_lost_shard_did_not_make():
    plan = _plan(["a", "b", "c", "d"])
    cost = CostModel(device="cpu")
    items = [
        WorkItem(i, "camp", clip.spec.clip_id, "tiny-wan", (clip.spec.clip_id,), 10.0 - i, 0.0)
        for i, (clip, _) in enumerate(plan.todo)
    ]
    layout = plan_shards(items, shards=2, batch_size=1, cost=cost)
    good, lost = layout.shards
    result = ShardResult(
        shard_id=good.shard_id, run_id="run-2", worker="gpu-0", host="h", pid=1, device="cuda", seconds=5.0,
        setup_seconds=1.0,
        masters=[
            {"campaign_id": "camp", "clip_id": i.clip_id, "clip_key": "k", "seconds": 2.0, "gate_seconds": 0.1,
             "reused": False, "path": "/m.mkv", "problem": None}
            for i in good.items
        ],
        renditions=[
            {"campaign_id": "camp", "clip_id": i.clip_id, "channel": ch, "row": _manifest_row(i.clip_id, ch, "run-2"),
             "problems": [], "seconds": {"render": 1.0}}
            for i in good.items for ch in ("x", "youtube")
        ],
        problems=[], already_published=[], model_loads={"moviegen/tiny-wan": 1}, load_seconds={}, finished_at="t",
    )  # fmt: skip
    first_lost, second_lost = (i.clip_id for i in lost.items)
    # The lost shard published both channels of its first clip before its machine died, one of the second's.
    published = {
        ("camp", first_lost, "x"): _manifest_row(first_lost, "x", "run-2"),
        ("camp", first_lost, "youtube"): _manifest_row(first_lost, "youtube", "run-2"),
        ("camp", second_lost, "x"): _manifest_row(second_lost, "x", "run-2"),
        ("camp", second_lost, "youtube"): _manifest_row(second_lost, "youtube", "an-older-run"),
    }
    outcomes = [
        ShardOutcome(good, result, [{"state": "COMPLETED"}]),
        ShardOutcome(lost, None, [{"state": "CRASHED", "message": "No heartbeat for 90 s"}]),
    ]
    masters, renditions, problems = gather_shards(plan, outcomes, "run-2", published)
    assert problems == []
    failed = [m for m in masters if m.problem is not None]
    assert [m.clip.spec.clip_id for m in failed] == [second_lost]
    assert failed[0].problem.stage == "shard" and "No heartbeat for 90 s" in failed[0].problem.message
    assert "rerun the campaign" in failed[0].problem.message
    made = sorted((r.clip.spec.clip_id, r.channel) for r in renditions if r.row is not None)
    expected = [(i.clip_id, ch) for i in good.items for ch in ("x", "youtube")]
    expected += [(first_lost, "x"), (first_lost, "youtube"), (second_lost, "x")]
    assert made == sorted(expected)


def test_rows_a_retried_shard_found_published_by_this_run_count_as_this_runs():
    plan = _plan(["a"])
    [item] = [WorkItem(0, "camp", "a", "tiny-wan", ("a",), 1.0, 0.0)]
    layout = plan_shards([item], shards=1, batch_size=1, cost=CostModel(device="cpu"))
    result = ShardResult(
        shard_id=layout.shards[0].shard_id, run_id="run-3", worker="gpu-1", host="h", pid=1, device="cpu",
        seconds=1.0, setup_seconds=0.5, masters=[], renditions=[], problems=[],
        already_published=[_manifest_row("a", "x", "run-3"), _manifest_row("a", "youtube", "run-1")],
        model_loads={}, load_seconds={}, finished_at="t",
    )  # fmt: skip
    _, renditions, _ = gather_shards(plan, [ShardOutcome(layout.shards[0], result, [])], "run-3")
    assert [(r.channel, r.row["run_id"]) for r in renditions] == [("x", "run-3")]


def test_work_item_prices_a_planned_clip_exactly_as_its_row():
    settings, presets, cost = Settings(), channel_presets({}), CostModel(device="cuda")
    s = spec(0, model="wan2.1-t2v-1.3b", duration_s=5.0, channels=("youtube", "tiktok"))
    ref = resolve_model(s.model)
    clip = ClipPlan(s, ref, "rev", generation_request(s, ref.info, settings), ref.info.fps)
    assert work_item(s, s.channels, settings, presets, cost) == work_item(s, s.channels, settings, presets, cost, clip)
    # 81 frames of 832x480 at 50 steps on the 1.3B prior: minutes of GPU time, as the model card says.
    assert 150 < work_item(s, (), settings, presets, cost).generate_s < 400
    fewer = replace(s, steps=25)
    full = work_item(s, (), settings, presets, cost).generate_s
    assert work_item(fewer, (), settings, presets, cost).generate_s == pytest.approx(full / 2, rel=0.05)


def test_best_of_and_image_to_video_rows_are_priced_as_they_will_run():
    """Best-of-N makes N candidates; a row with a reference image runs on its model's image-to-video companion."""
    settings, presets, cost = Settings(), channel_presets({}), CostModel(device="cuda")
    s = spec(0, model="wan2.1-t2v-1.3b", duration_s=5.0)
    one = work_item(s, (), settings, presets, cost)
    three = work_item(replace(s, best_of=3), (), settings, presets, cost)
    assert three.generate_s == pytest.approx(3 * one.generate_s)
    i2v = work_item(replace(s, reference_image="https://example.com/product.png"), (), settings, presets, cost)
    companion = resolve_model(resolve_model(s.model).info.image_model)
    assert i2v.model == companion.info.name and i2v.batch_key[0] == companion.location
    assert i2v.generate_s > 5 * one.generate_s  # the 14B companion's rate
