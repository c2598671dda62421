"""Renditions inside a campaign: assets checked at planning, every published file passes delivery."""

from __future__ import annotations

import subprocess

import fsspec
import pyarrow.parquet as pq
import pytest
from conftest import fast_settings, row

from moviegen.media import ffmpeg_binary
from moviegen.presets import builtin_channels
from moviegen.provenance.delivery import check_delivery
from moviegen.run.context import start_run
from moviegen.run.plain import run_campaign_plain
from moviegen.run.planning import plan_campaign
from moviegen.run.screening import load_and_validate


def test_a_row_whose_logo_cannot_be_fetched_is_rejected_before_generation(tmp_path, catalog_file):
    with fsspec.open("memory://brand-kit/readme.txt", "w") as f:
        f.write("the logo was never uploaded")
    path = catalog_file([row("good"), row("nologo", logo_uri="memory://brand-kit/logo.png")])
    ctx = start_run(fast_settings(tmp_path / "out"))
    validation = load_and_validate(str(path), ctx)
    assert validation.problems == []  # the URL is well formed: only fetching it can tell
    plan = plan_campaign(validation.specs, ctx)
    assert [clip.spec.clip_id for clip, _ in plan.todo] == ["good"]
    [problem] = plan.problems
    assert (problem.row, problem.clip_id, problem.column, problem.stage, problem.rule) == (
        1,
        "nologo",
        "logo_uri",
        "render",
        "asset",
    )
    assert "does not exist" in problem.message


@pytest.mark.slow
def test_campaign_with_brand_text_music_and_looks(tmp_path, catalog_file, tiny_model):
    from PIL import Image

    logo = tmp_path / "logo.png"
    Image.new("RGBA", (120, 60), (255, 200, 0, 255)).save(logo)
    music = tmp_path / "bed.wav"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=4", str(music)], check=True
    )
    rows = [
        row(
            "launch",
            channels=["tiktok", "linkedin"],
            duration_s=1.5,
            style="cinematic",
            title="Spring drop",
            caption="50% off: don't miss it \\o/",
            cta="Shop now",
            logo_uri=str(logo),
            music_uri=str(music),
        ),
        row("plain", channels=["youtube"], duration_s=1.0, style="mono", anchor="top", caption="Только сегодня"),
    ]
    out = tmp_path / "out"
    summary = run_campaign_plain(str(catalog_file(rows)), fast_settings(out))
    assert summary.exit_code == 0, [p.message for p in summary.problems]
    assert len(summary.published) == 3
    for published in summary.published:
        preset = builtin_channels()[published["channel"]]
        report = check_delivery(out / published["path"], preset, published["duration_s"])
        assert report.ok, report.violations
    manifest = pq.read_table(out / "manifest").to_pylist()
    assert {r["channel"] for r in manifest} == {"tiktok", "linkedin", "youtube"}
    # A second run finds every rendition already published under the same rendition key.
    again = run_campaign_plain(str(catalog_file(rows)), fast_settings(out))
    assert again.published == [] and again.already_published == 3
