"""End to end: a real Prefect run of a small catalog, the files and the manifest, and a rerun."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import row

from moviegen.media import probe
from moviegen.run.renditions import _render_and_publish
from moviegen.store import MANIFEST_SCHEMA, REJECTED_SCHEMA, OutputRoot, sha256_file

pytestmark = pytest.mark.slow

ROWS = [
    row("alpha", channels=["youtube", "tiktok"], caption="Fresh: 50% off!"),
    row("beta", channels=["linkedin"], style="warm", aspect="1:1", duration_s=1.5),
    row("broken", channels=["myspace"]),
]


def published_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / "published").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, prefect_api, tiny_model):
    """One real campaign flow run, shared by the checks below."""
    import flows.campaign
    from flows.campaign import campaign, settings_handed_over
    from moviegen.catalog.schema import write_catalog
    from moviegen.config import load_settings

    base = tmp_path_factory.mktemp("campaign")
    catalog = base / "catalog.parquet"
    write_catalog(ROWS, str(catalog))
    config = base / "moviegen.yaml"
    # The mark is recorded, not required: tiny-model noise can lose bits (see conftest.FAST_CONFIG).
    config.write_text("generation:\n  steps: 2\nrender_workers: 1\nwatermark_gate: recorded\n")
    out = base / "out"
    # Count the renditions in progress at once: the flow submits all three to its task runner's 16 threads.
    inside, lock = {"now": 0, "most": 0}, threading.Lock()
    real = _render_and_publish

    def counted(*args, **kwargs):
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                inside["now"] -= 1

    # As `moviegen run` does: the caller loads the settings once and hands them to the flow.
    settings, loads_in_flow = load_settings(str(config), out=str(out)), []

    def load_in_flow(*args, **kwargs):
        loads_in_flow.append(args)
        return load_settings(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("moviegen.run.renditions._render_and_publish", counted)
        patch.setattr(flows.campaign, "load_settings", load_in_flow)
        with settings_handed_over(settings, str(config), preview=False):
            result = campaign(catalog=str(catalog), out=settings.out, config=str(config))
    result["most_renditions_at_once"] = inside["most"]
    result["settings_loaded_in_flow"] = len(loads_in_flow)
    return catalog, config, out, result


def test_settings_are_loaded_once_per_run(first_run):
    """The flow ran on the settings its caller loaded (in memory, not as a stored flow parameter)."""
    *_, result = first_run
    assert result["settings_loaded_in_flow"] == 0


def test_a_flow_called_without_handed_over_settings_loads_its_own(tmp_path, fast_config):
    from flows.campaign import settings_for_run, settings_handed_over
    from moviegen.config import load_settings

    handed = load_settings(str(fast_config), out=str(tmp_path / "a"))
    with settings_handed_over(handed, str(fast_config), preview=False):
        assert settings_for_run(str(fast_config), handed.out, False) is handed
        other = settings_for_run(str(fast_config), str(tmp_path / "b"), False)  # another output: not the hand-over
    assert other is not handed and other.out.endswith("/b")
    assert settings_for_run(str(fast_config), handed.out, False) is not handed  # after the block


def test_every_valid_row_and_channel_is_published(first_run):
    _, _, out, result = first_run
    expected = {
        f"published/{channel}/test-camp/{clip}.{ext}"
        for clip, channels in (("alpha", ["youtube", "tiktok"]), ("beta", ["linkedin"]))
        for channel in channels
        for ext in ("mp4", "json", "jpg")
    }
    assert published_files(out) == expected
    assert result["exit_code"] == 1  # the broken row was rejected
    assert len(result["published"]) == 3
    for channel, clip, size, duration in [
        ("youtube", "alpha", (1920, 1080), 1.0),
        ("tiktok", "alpha", (1080, 1920), 1.0),
        ("linkedin", "beta", (1080, 1080), 1.5),
    ]:
        info = probe(out / f"published/{channel}/test-camp/{clip}.mp4")
        assert (info.width, info.height) == size
        assert info.fps == 30 and info.frames == round(duration * 30)
        assert abs(info.duration_s - duration) < 0.05
        assert info.video_codec == "h264" and info.audio_codec == "aac" and info.audio_rate == 48000


def test_renditions_are_made_render_workers_at_a_time(first_run):
    # More at once would only take the cores from the generation running beside them.
    assert first_run[3]["most_renditions_at_once"] == 1


def test_manifest_rows_match_the_files(first_run):
    _, _, out, result = first_run
    manifest = OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert len(manifest) == 3
    for entry in manifest:
        video = out / entry["path"]
        assert video.is_file()
        assert entry["sha256"] == sha256_file(video)
        info = probe(video)
        assert (entry["width"], entry["height"], entry["frames"]) == (info.width, info.height, info.frames)
        assert entry["run_id"] == result["run_id"]
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["clip_key"] == entry["clip_key"] and sidecar["disclosure"]["ai_generated"] is True
    alpha = [m for m in manifest if m["clip_id"] == "alpha"]
    assert len({m["clip_key"] for m in alpha}) == 1, "one generation serves every channel of a clip"
    assert [p.name for p in (out / "manifest").iterdir()] == [f"part-{result['run_id']}.parquet"]


def test_bad_row_is_rejected_with_row_and_column(first_run):
    _, _, out, result = first_run
    rejected = OutputRoot(str(out)).read_rows("rejected", REJECTED_SCHEMA).to_pylist()
    assert [(r["row"], r["clip_id"], r["column"], r["stage"], r["rule"]) for r in rejected] == [
        (2, "broken", "channels", "schema", "unknown_channel")
    ]
    run_json = json.loads((out / "runs" / result["run_id"] / "run.json").read_text())
    assert run_json["exit_code"] == 1 and run_json["problems"][0]["row"] == 2
    assert (out / "runs" / result["run_id"] / "report.html").read_text().count("broken") >= 1


def test_rerun_publishes_nothing_twice_and_generates_nothing(first_run):
    from flows.campaign import campaign

    catalog, config, out, _ = first_run
    before = {p: (out / p).stat().st_mtime_ns for p in published_files(out)}
    masters = sorted((out / ".work" / "masters").iterdir())
    master_times = [m.stat().st_mtime_ns for m in masters]
    again = campaign(catalog=str(catalog), out=str(out), config=str(config))
    assert again["published"] == [] and again["already_published"] == 3
    assert again["stage_seconds"].get("generate", 0) == 0
    assert {p: (out / p).stat().st_mtime_ns for p in published_files(out)} == before
    assert [m.stat().st_mtime_ns for m in masters] == master_times
    assert OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).num_rows == 3


def test_caption_change_republishes_without_regenerating(first_run, tmp_path):
    """A new caption changes the rendition, not the pixels: re-render from the kept master."""
    from flows.campaign import campaign
    from moviegen.catalog.schema import write_catalog

    _, config, out, _ = first_run
    edited = tmp_path / "edited.parquet"
    write_catalog([ROWS[0] | {"caption": "New caption"}, ROWS[1]], str(edited))
    result = campaign(catalog=str(edited), out=str(out), config=str(config))
    assert sorted(r["channel"] for r in result["published"]) == ["tiktok", "youtube"]
    assert result["already_published"] == 1 and result["exit_code"] == 0
    assert result["stage_seconds"].get("generate", 0) == 0
    sidecar = json.loads((out / "published/youtube/test-camp/alpha.json").read_text())
    assert sidecar["caption"] == "New caption"


def test_plain_loop_runs_the_same_stages(first_run, tmp_path):
    from conftest import fast_settings

    from moviegen.run.plain import run_campaign_plain

    catalog, _, out, _ = first_run
    summary = run_campaign_plain(str(catalog), fast_settings(tmp_path / "plain"))
    prefect_keys = {
        (m["clip_id"], m["channel"], m["clip_key"])
        for m in OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
        if m["clip_id"] == "beta"
    }
    plain_keys = {(r["clip_id"], r["channel"], r["clip_key"]) for r in summary.published if r["clip_id"] == "beta"}
    assert plain_keys == prefect_keys  # same clip, same key, whichever executor
    assert summary.exit_code == 1 and len(summary.published) == 3
