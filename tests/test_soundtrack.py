"""Soundtracks: text-to-audio on the tiny Stable Audio build, mixed with a music bed, rendered at -14 LUFS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from moviegen.assets import fetch_asset
from moviegen.config import AudioSettings
from moviegen.generation.device import pick_device
from moviegen.generation.soundtrack import (
    AudioModelError,
    audio_request,
    compose_bed,
    generate_soundtracks,
    resolve_audio_model,
)
from moviegen.media import ffmpeg_binary, ffprobe_binary, write_master
from moviegen.presets import builtin_channels, styles
from moviegen.render.encode import render_rendition
from moviegen.render.spec import RenditionSpec

CPU = pick_device("cpu")


def audio_streams(path: Path) -> list[dict]:
    out = subprocess.run(
        [ffprobe_binary(), "-v", "error", "-show_streams", "-select_streams", "a", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out)["streams"]


def loudness(path: Path) -> float:
    err = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        check=True,
    ).stderr.decode()
    return float(err.rsplit("I:", 1)[1].split("LUFS")[0])


@pytest.fixture(scope="module")
def soundtracks(tmp_path_factory, cache_dir):
    work = tmp_path_factory.mktemp("work")
    settings = AudioSettings(steps=2)
    requests = [
        audio_request("waves on a pebble beach, gulls", 11, 1.5, settings, cache_dir),
        audio_request("a cheerful ukulele melody", 12, 1.5, settings, cache_dir),
    ]
    return requests, generate_soundtracks(requests, work, CPU, cache_dir), work


def test_soundtracks_are_wavs_of_the_clip_length(soundtracks):
    requests, paths, _ = soundtracks
    assert set(paths) == {r.key for r in requests}
    for r in requests:
        [stream] = audio_streams(paths[r.key])
        assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == ("pcm_s16le", 44100, 2)
        assert float(stream["duration"]) == pytest.approx(1.5, abs=0.01)
    a, b = (paths[r.key].read_bytes() for r in requests)
    assert a != b  # its own prompt and seed


def test_the_same_request_is_not_generated_twice(soundtracks, cache_dir):
    requests, paths, work = soundtracks
    before = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    again = generate_soundtracks(requests, work, CPU, cache_dir)
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == before
    changed = audio_request("waves on a pebble beach, gulls", 11, 1.5, AudioSettings(steps=3), cache_dir)
    assert changed.key != requests[0].key


def test_unknown_audio_model_says_what_to_use():
    with pytest.raises(AudioModelError, match="tiny-stable-audio"):
        resolve_audio_model("someone/video-model")
    assert resolve_audio_model("stabilityai/stable-audio-open-1.0")[1].steps == 100


def test_generated_soundtrack_mixed_with_music_renders_at_channel_loudness(soundtracks, tmp_path):
    requests, paths, _ = soundtracks
    music_file = tmp_path / "bed.mp3"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=0.8", str(music_file)],
        check=True,
    )
    music = fetch_asset(str(music_file), "music", tmp_path / "assets")
    bed = compose_bed(paths[requests[0].key], music, 2.0, tmp_path / "assets")
    [stream] = audio_streams(bed.path)
    assert float(stream["duration"]) == pytest.approx(2.0, abs=0.01)  # both loop to the clip's length
    alone = compose_bed(paths[requests[0].key], None, 2.0, tmp_path / "assets")
    assert alone.sha256 != bed.sha256

    preset = builtin_channels()["x"]
    frames = np.random.default_rng(0).integers(0, 255, (32, 72, 128, 3), dtype=np.uint8)
    master = write_master(frames, 16, tmp_path / "master.mkv")
    spec = RenditionSpec(preset=preset, style=styles()["none"], duration_s=2.0, music=bed)
    out = render_rendition(master, spec, tmp_path / "x.mp4").path
    [stream] = audio_streams(out)
    assert (stream["codec_name"], int(stream["sample_rate"])) == ("aac", preset.audio_rate)
    assert float(stream["duration"]) == pytest.approx(2.0, abs=0.05)
    assert loudness(out) == pytest.approx(preset.loudness_lufs, abs=1.5)
