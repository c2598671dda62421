"""A whole campaign beyond text-to-video: a personalised clip from a real photograph (best of 2, generated
soundtrack mixed with a music bed), an edit of a real clip, and a second model family, side by side."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import fast_settings, row
from test_soundtrack import audio_streams, loudness

from moviegen.config import AdherenceSettings, AudioSettings
from moviegen.generation.loading import process_pipeline_cache
from moviegen.media import ffmpeg_binary, probe
from moviegen.presets import builtin_channels
from moviegen.provenance.delivery import check_delivery
from moviegen.run.plain import run_campaign_plain

CHANNEL = "x"  # the watermark is recorded, not required, here: see FAST_CONFIG in conftest.py


@pytest.mark.slow
def test_campaign_with_reference_edit_soundtrack_best_of_and_two_families(
    tmp_path, catalog_file, photo, real_clip, tiny_model
):
    music = tmp_path / "bed.wav"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=330:duration=3", str(music)], check=True
    )
    rows = [
        row("mascot", reference_image=str(photo), prompt="our astronaut mascot waves hello", best_of=2,
            audio_prompt="a bright synth jingle", music_uri=str(music), channels=[CHANNEL]),
        row("edit", source_video=str(real_clip), prompt="the coffee cup in warm autumn light", edit_strength=0.5,
            audio_prompt="soft rain on a window", channels=[CHANNEL]),
        row("kite", model="tiny-ltx", prompt="a red kite over a green hill on a windy day", channels=[CHANNEL]),
    ]  # fmt: skip
    out = tmp_path / "out"
    adherence = AdherenceSettings(model="tiny-clip", frames=4)
    settings = fast_settings(out, adherence=adherence, audio=AudioSettings(steps=2))
    process_pipeline_cache().clear()  # as in a fresh worker process: this run loads what it needs
    summary = run_campaign_plain(str(catalog_file(rows)), settings)
    assert summary.exit_code == 0, [p.describe() for p in summary.problems]
    # This run's loads, whatever the process loaded for earlier runs: one per checkpoint.
    assert summary.model_loads == {"moviegen/tiny-wan-i2v": 1, "moviegen/tiny-wan": 1, "moviegen/tiny-ltx": 1}

    preset = builtin_channels()[CHANNEL]
    published = {r["clip_id"]: r for r in summary.published}
    assert set(published) == {"mascot", "edit", "kite"}
    for clip_id, r in published.items():
        video = out / r["path"]
        assert check_delivery(video, preset, 1.0).ok
        info = probe(video)
        assert (info.width, info.height, info.frames) == (preset.width, preset.height, 30)
        [stream] = audio_streams(video)
        assert float(stream["duration"]) == pytest.approx(1.0, abs=0.05)
        # The generated soundtrack reaches the rendition; the row without an audio prompt or music is silent.
        # (The -14 LUFS rule itself is checked on a 2 s rendition in test_soundtrack: loudnorm's
        # measurement drifts on 1 s clips, about -19 LUFS here for the noise of the tiny audio model.)
        if clip_id == "kite":
            assert loudness(video) <= -69.0
        else:
            assert loudness(video) > -30.0

    scores = [r for r in pq.read_table(out / "scores").to_pylist() if r["gate"] == "adherence"]
    by_clip = {r["clip_id"]: json.loads(r["scores"]) for r in scores}
    assert set(by_clip) == {"mascot", "edit", "kite"}
    assert [c["seed"] for c in by_clip["mascot"]["candidates"]] == [7, 8]
    assert by_clip["mascot"]["chosen_seed"] in (7, 8)
    keys = {r["clip_id"]: r["clip_key"] for r in scores}
    assert keys["mascot"] == published["mascot"]["clip_key"]

    # Rerun: nothing is generated or published again, soundtracks included.
    again = run_campaign_plain(str(catalog_file(rows)), settings)
    assert again.published == [] and again.already_published == 3 and again.model_loads == {}
