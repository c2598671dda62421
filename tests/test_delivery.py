"""The delivery gate: real renditions that break their preset are refused, with the reason named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from moviegen.media import write_master
from moviegen.presets import ChannelPreset, Style
from moviegen.provenance.delivery import check_delivery, delivery_violations, inspect_rendition, mp4_boxes
from moviegen.render.encode import render_rendition
from moviegen.render.spec import RenditionSpec

PRESET = ChannelPreset(name="small", width=160, height=160, fps=30, max_duration_s=60)
NONE = Style(name="none")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("delivery")
    # A still picture of noise: no scene cuts (one keyframe per GOP), and a first frame heavy enough to
    # show in the bitrate.
    still = np.random.default_rng(0).integers(0, 255, (90, 160, 3), np.uint8)
    master = write_master(np.repeat(still[None], 16, axis=0), 16, folder / "m.mkv")
    return render_rendition(master, RenditionSpec(PRESET, NONE, 1.0), folder / "ok.mp4").path


def test_a_good_rendition_passes(rendered):
    report = check_delivery(rendered, PRESET, 1.0)
    assert report.ok and report.violations == []
    assert report.facts.boxes[:1] == ("ftyp",) and report.facts.max_keyframe_gap == 30


@pytest.mark.parametrize(
    ("change", "duration_s", "expected"),
    [
        ({"width": 320}, 1.0, "size 160x160, preset wants 320x160"),
        ({"fps": 25}, 1.0, "30 fps, preset wants 25"),
        ({}, 2.0, "30 frames, 2 s at 30 fps needs 60"),
        ({"max_duration_s": 0.5}, 1.0, "takes at most 0.5 s"),
        ({"profile": "main"}, 1.0, "profile High, preset wants main"),
        ({"level": "3.0"}, 1.0, "level 4, preset allows up to 3.0"),
        ({"audio_rate": 44100}, 1.0, "audio aac at 48000 Hz, preset wants aac at 44100 Hz"),
        ({"audio_channels": 1}, 1.0, "2 audio channels, preset wants 1"),
        ({"gop_s": 0.5}, 1.0, "keyframes up to 30 frames apart, preset wants 15"),
        ({"maxrate_kbps": 50, "bufsize_kbps": 50}, 1.0, "over the ceiling (50 kbit/s with a 50 kbit buffer"),
    ],
)
def test_a_rendition_that_breaks_its_preset_is_refused(rendered, change, duration_s, expected):
    preset = PRESET.model_copy(update=change)
    violations = check_delivery(rendered, preset, duration_s).violations
    assert any(expected in v for v in violations), violations


def test_moov_after_mdat_is_refused(tmp_path, rendered):
    slow_start = PRESET.model_copy(update={"faststart": False})
    master = write_master(np.full((8, 90, 160, 3), 90, np.uint8), 16, tmp_path / "m.mkv")
    path = render_rendition(master, RenditionSpec(slow_start, NONE, 0.5), tmp_path / "late.mp4").path
    assert mp4_boxes(path).index("moov") > mp4_boxes(path).index("mdat")
    assert check_delivery(path, slow_start, 0.5).ok
    violations = check_delivery(path, PRESET, 0.5).violations
    assert violations == ["moov comes after mdat: playback cannot start before the download ends (+faststart)"]


def test_codec_pixel_format_colour_and_audio_facts_are_checked(rendered):
    facts = inspect_rendition(rendered)
    info = dataclasses.replace(facts.info, video_codec="hevc", pix_fmt="yuv444p", audio_codec=None, audio_rate=None)
    broken = dataclasses.replace(facts, info=info, color={"space": "bt470bg", "range": "pc"}, sample_aspect="4:3")
    violations = delivery_violations(broken, PRESET, 1.0)
    for expected in (
        "video codec hevc, preset wants h264",
        "pixel format yuv444p, preset wants yuv420p",
        "colour bt470bg/pc, preset wants bt709/tv",
        "sample aspect ratio 4:3",
        "audio None at None Hz",
    ):
        assert any(expected in v for v in violations), (expected, violations)


def test_a_truncated_file_is_not_an_mp4(tmp_path, rendered):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(rendered.read_bytes()[:2000])
    assert "moov" in mp4_boxes(rendered) and mp4_boxes(cut)[0] == "ftyp"
    with pytest.raises(Exception):  # noqa: B017 - ffprobe refuses it, whichever way it says so
        check_delivery(cut, PRESET, 1.0)
