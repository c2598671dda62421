"""The keys that decide what a rerun redoes stay exactly what they were when the code moves.

tests/data/golden_keys.json holds the clip_keys and rendition_keys computed for the demo catalog
and for rows that touch every column a key depends on (styles, colour controls, text layers, a
logo, a LUT, an image reference, best-of, a soundtrack prompt, the other families). It was written
by the code before the architecture move (issue 17). The ffmpeg, Pillow and libraqm versions that
rendition keys include are pinned here, so the file holds on any machine; everything else is
computed as a run computes it.

Regenerate only when a key is meant to change (and say so in the README):
    .venv/bin/python -m pytest tests/test_golden_keys.py --regenerate-golden   (see conftest)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import row

from moviegen.catalog.schema import write_catalog
from moviegen.config import AdherenceSettings, Settings
from moviegen.run.context import start_run
from moviegen.run.planning import plan_campaign, rendition_key_for
from moviegen.run.screening import load_and_validate, screen_prompts

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "data" / "golden_keys.json"
PINNED_TOOLS = {"ffmpeg": "ffmpeg version golden", "pillow": "golden", "raqm": "golden"}


def key_rows(logo: Path) -> list[dict]:
    """Rows that exercise every column the keys depend on, one variation each."""
    return [
        row("plain"),
        row("styled", style="cinematic", channels=["tiktok", "youtube", "linkedin"]),
        row("graded", brightness=0.05, contrast=1.1, saturation=0.9, gamma=1.05, vignette=0.3, grain=0.2),
        row("lut", lut="film_fade", style="film"),
        row("texts", title="Spring drop", cta="Shop now", caption="New colours, Friday.", hashtags=["spring"]),
        row("logo", logo_uri=str(logo), logo_position="top_left", channels=["instagram_reels", "youtube"]),
        row("framing", aspect="1:1", fit="crop", anchor="top", channels=["instagram_feed"]),
        row("timing", duration_s=2.5, speed=1.25, extend="hold", motion="blend"),
        row("settings", steps=3, guidance=4.5, seed=123, negative_prompt="blurry"),
        row("best-of", best_of=2),
        row("reference", reference_image=str(logo), prompt="our mascot waves hello"),
        row("sound", audio_prompt="a bright synth jingle"),
        row("ltx", model="tiny-ltx"),
    ]


def compute_keys(tmp_path: Path, logo: Path) -> dict[str, dict]:
    """clip_key and per-channel rendition_key of every valid row, as a run plans them."""
    catalog = tmp_path / "keys.parquet"
    write_catalog(key_rows(logo), str(catalog))
    settings = Settings(out=str(tmp_path / "out"), adherence=AdherenceSettings(model="tiny-clip"))
    ctx = start_run(settings, run_id="golden")
    keys: dict[str, dict] = {}
    for uri in (str(ROOT / "catalogs" / "demo.parquet"), str(catalog)):
        validation = screen_prompts(load_and_validate(uri, ctx), ctx)
        assert not validation.problems, validation.problems
        plan = plan_campaign(validation.specs, ctx)
        assert not plan.problems, plan.problems
        for clip, channels in plan.todo:
            keys[f"{clip.spec.campaign_id}/{clip.spec.clip_id}"] = {
                "clip_key": clip.clip_key,
                "renditions": {channel: rendition_key_for(clip, channel, ctx) for channel in channels},
            }
    return keys


@pytest.fixture
def pinned_tools(monkeypatch):
    monkeypatch.setattr("moviegen.render.spec.tool_versions", lambda: PINNED_TOOLS)


def test_keys_match_the_golden_file(tmp_path, photo, pinned_tools, request):
    keys = compute_keys(tmp_path, photo)
    if request.config.getoption("--regenerate-golden"):
        GOLDEN.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert len(golden) == 21  # 8 demo rows and 13 key rows
    assert keys == golden
