"""The rendition's audio: music or soundtrack, loudness measured and normalised to the channel's target."""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
from typing import Any

import ffmpeg

from moviegen.media import FFMPEG_TIMEOUT_S, MediaError, ffmpeg_binary
from moviegen.render.spec import RenditionSpec

TRUE_PEAK_DB = -1.5

LOUDNESS_RANGE = 11


def _music(spec: RenditionSpec) -> Any:
    assert spec.music is not None
    preset, seconds = spec.preset, spec.frames / spec.preset.fps
    options: dict[str, Any] = {"f": spec.music.input_format, "stream_loop": -1}
    audio = ffmpeg.input(spec.music.ffmpeg_url, **options).audio
    fade = min(1.0, seconds * 0.2)
    layout = "stereo" if preset.audio_channels == 2 else "mono"
    return (
        audio.filter("atrim", end=f"{seconds:.6f}")
        .filter("asetpts", "PTS-STARTPTS")
        .filter("aformat", sample_rates=preset.audio_rate, channel_layouts=layout)
        .filter("afade", t="out", st=f"{seconds - fade:.6f}", d=f"{fade:.6f}")
    )


_loudness: dict[tuple[Any, ...], dict[str, float] | None] = {}

_loudness_lock = threading.Lock()


def measure_loudness(spec: RenditionSpec) -> dict[str, float] | None:
    """First loudnorm pass over the music bed as it will be used (trimmed and faded); None when silent.

    An analysis only (decoded to a null output, nothing encoded). Cached per file, length and target.
    """
    assert spec.music is not None
    preset = spec.preset
    key = (spec.music.sha256, spec.frames, preset.fps, preset.audio_rate, preset.audio_channels, preset.loudness_lufs)
    with _loudness_lock:
        if key in _loudness:
            return _loudness[key]
    analysis = _music(spec).filter(
        "loudnorm", I=preset.loudness_lufs, TP=TRUE_PEAK_DB, LRA=LOUDNESS_RANGE, print_format="json"
    )
    args = ffmpeg.compile(ffmpeg.output(analysis, "-", f="null"), cmd=ffmpeg_binary())
    proc = subprocess.run(
        [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args[1:]],
        capture_output=True,
        check=False,
        timeout=FFMPEG_TIMEOUT_S,
    )
    text = proc.stderr.decode(errors="replace")
    found = re.findall(r"\{[^{}]*\"input_i\"[^{}]*\}", text)
    if proc.returncode != 0 or not found:
        raise MediaError(f"measuring the loudness of {spec.music.uri} failed: {text.strip()[-300:]}")
    values = json.loads(found[-1])
    measured = None
    if math.isfinite(float(values["input_i"])) and float(values["input_i"]) > -70:
        measured = {k: float(values[k]) for k in ("input_i", "input_tp", "input_lra", "input_thresh", "target_offset")}
    with _loudness_lock:
        _loudness[key] = measured
    return measured


def audio_graph(spec: RenditionSpec) -> Any:
    """The music bed, loudness-normalised to the preset's target (measured first, then one gain), or silence."""
    preset, seconds = spec.preset, spec.frames / spec.preset.fps
    layout = "stereo" if preset.audio_channels == 2 else "mono"
    if spec.music is None:
        silence = ffmpeg.input(f"anullsrc=r={preset.audio_rate}:cl={layout}", f="lavfi").audio
        return silence.filter("atrim", end=f"{seconds:.6f}")
    measured = measure_loudness(spec)
    audio = _music(spec)
    if measured is None:
        return audio
    gain = preset.loudness_lufs - measured["input_i"]
    if measured["input_tp"] + gain <= TRUE_PEAK_DB:
        # What loudnorm's linear mode does, without its 192 kHz resampling: one exact gain.
        return audio.filter("volume", volume=f"{gain:.2f}dB")
    return audio.filter(  # the peaks would clip at that gain: loudnorm compresses them instead
        "loudnorm",
        I=preset.loudness_lufs,
        TP=TRUE_PEAK_DB,
        LRA=LOUDNESS_RANGE,
        measured_I=measured["input_i"],
        measured_TP=measured["input_tp"],
        measured_LRA=measured["input_lra"],
        measured_thresh=measured["input_thresh"],
        offset=measured["target_offset"],
        linear="true",
    ).filter("aresample", preset.audio_rate)  # loudnorm works at 192 kHz internally
