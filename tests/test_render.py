"""Renditions with real ffmpeg encodes: presets, fits, styles, text, sound, the processor path, keys.

Masters are tiny (160x90, 1 s at 16 fps); most renditions use a small custom preset so each
encode takes a fraction of a second. Only the per-preset test renders at the real channel sizes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from moviegen.assets import fetch_asset
from moviegen.media import ffmpeg_binary, probe, read_frames, write_master
from moviegen.presets import ChannelPreset, Style, builtin_channels, builtin_styles
from moviegen.provenance.delivery import check_delivery, inspect_rendition
from moviegen.render.encode import count_lossy_encodes, render_rendition, write_poster
from moviegen.render.graph import crop_box
from moviegen.render.overlays import render_text
from moviegen.render.spec import RenditionSpec, rendition_key, resolve_lut

SMALL = ChannelPreset(name="small", width=180, height=320, fps=30, max_duration_s=60, safe_zone={"bottom": 0.15})
SQUARE = ChannelPreset(name="square", width=160, height=160, fps=30, max_duration_s=60)
NONE = Style(name="none")


def pattern(frames: int = 16, width: int = 160, height: int = 90, moving: bool = True) -> np.ndarray:
    """Colourful test frames: a horizontal hue ramp, a vertical brightness ramp, a moving square."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        out[i, ..., 0] = (x * 255 // (width - 1)).astype(np.uint8)
        out[i, ..., 1] = (y * 255 // (height - 1)).astype(np.uint8)
        out[i, ..., 2] = ((width - 1 - x) * 200 // (width - 1) + 30).astype(np.uint8)
        if moving:
            s = (i * 5) % (width - 20)
            out[i, 30:50, s : s + 20] = (250, 250, 250)
    return out


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> Path:
    return write_master(pattern(), 16, tmp_path_factory.mktemp("masters") / "pattern.mkv")


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> Path:
    """Left half red, right half blue: shows which side a crop keeps."""
    frames = np.zeros((16, 90, 160, 3), np.uint8)
    frames[:, :, :80] = (220, 20, 20)
    frames[:, :, 80:] = (20, 20, 220)
    return write_master(frames, 16, tmp_path_factory.mktemp("masters") / "halves.mkv")


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    """A still, mid-grey-ish gradient: colour shifts and grain show plainly on it."""
    frames = np.repeat(pattern(16, moving=False).mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    return write_master(frames, 16, tmp_path_factory.mktemp("masters") / "grey.mkv")


def render(master: Path, tmp_path: Path, name: str = "out", **spec_fields) -> tuple[Path, object]:
    fields = {"preset": SMALL, "style": NONE, "duration_s": 0.5, **spec_fields}
    style = fields["style"]
    if style.lut and "lut" not in fields:
        fields["lut"] = resolve_lut(style.lut, tmp_path / "assets")
    result = render_rendition(master, RenditionSpec(**fields), tmp_path / f"{name}.mp4")
    return result.path, result


def frames_of(path: Path) -> np.ndarray:
    return read_frames(path).astype(np.float64)


# 1. Every preset, as shipped -------------------------------------------------------------------


@pytest.mark.parametrize("channel", sorted(builtin_channels()))
def test_every_preset_renders_to_its_spec(channel, master, tmp_path):
    preset = builtin_channels()[channel]
    path, result = render(master, tmp_path, preset=preset, caption="Hello", duration_s=0.5)
    report = check_delivery(path, preset, 0.5)
    assert report.violations == []
    info, facts = report.info, report.facts
    assert (info.width, info.height, info.fps, info.frames) == (preset.width, preset.height, preset.fps, 15)
    assert (info.video_codec, info.profile, info.pix_fmt) == ("h264", "High", "yuv420p")
    assert facts.level == round(float(preset.level) * 10)
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == ("aac", 48000, 2)
    assert facts.boxes.index("moov") < facts.boxes.index("mdat")
    assert facts.color["space"] == "bt709"
    assert result.lossy_encodes == 1


# 2. Fit strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize(("anchor", "red_share"), [("left", 1.0), ("center", 0.5), ("right", 0.0)])
def test_crop_keeps_the_anchored_part(anchor, red_share, halves, tmp_path):
    preset = SMALL.model_copy(update={"anchor": anchor})
    path, _ = render(halves, tmp_path, preset=preset)
    assert check_delivery(path, preset, 0.5).ok
    frame = frames_of(path)[0]
    red = (frame[..., 0] > frame[..., 2]).mean()
    assert red == pytest.approx(red_share, abs=0.06)


def test_crop_box_geometry():
    assert crop_box((1920, 1080), 9 / 16, "center") == (608, 1080, 656, 0)
    assert crop_box((1920, 1080), 9 / 16, "left") == (608, 1080, 0, 0)
    assert crop_box((1080, 1920), 16 / 9, "bottom") == (1080, 608, 0, 1312)
    assert crop_box((100, 100), 1.0, "top") == (100, 100, 0, 0)


def test_pad_shows_the_whole_picture_over_a_blurred_copy(halves, tmp_path):
    preset = SMALL.model_copy(update={"fit": "pad"})
    path, _ = render(halves, tmp_path, preset=preset)
    assert check_delivery(path, preset, 0.5).ok
    frame = frames_of(path)[0]
    # The whole 16:9 picture sits in the middle band: red on the left, blue on the right.
    band = frame[140:180]
    assert band[:, :80, 0].mean() > 150 and band[:, 100:, 2].mean() > 150
    # Above it is no black bar but a dimmed, blurred copy of the picture's colours.
    top = frame[:40]
    assert top.mean() > 40
    assert top[:, :60, 0].mean() > top[:, :60, 2].mean() and top[:, -60:, 2].mean() > top[:, -60:, 0].mean()


# 3. Styles move pixels the expected way ---------------------------------------------------------


def _style(**fields) -> Style:
    return Style(name="test", **fields)


def _red_minus_blue(f: np.ndarray) -> float:
    return float((f[..., 0] - f[..., 2]).mean())


def _chroma(f: np.ndarray) -> float:
    return float((f.max(axis=-1) - f.min(axis=-1)).mean())


def test_grades_move_colour_in_the_expected_direction(master, grey, tmp_path):
    looks = builtin_styles()
    base = frames_of(render(master, tmp_path, "none")[0])
    warm = frames_of(render(master, tmp_path, "warm", style=looks["warm"])[0])
    cool = frames_of(render(master, tmp_path, "cool", style=looks["cool"])[0])
    mono = frames_of(render(master, tmp_path, "mono", style=looks["mono"])[0])
    vivid = frames_of(render(master, tmp_path, "vivid", style=looks["vivid"])[0])
    bright = frames_of(render(master, tmp_path, "bright", style=_style(brightness=0.15))[0])
    contrast = frames_of(render(master, tmp_path, "contrast", style=_style(contrast=1.5))[0])
    assert _red_minus_blue(warm) > _red_minus_blue(base) + 5
    assert _red_minus_blue(cool) < _red_minus_blue(base) - 5
    assert _chroma(mono) < 4 < _chroma(base)
    assert _chroma(vivid) > _chroma(base) * 1.15
    assert bright.mean() > base.mean() + 15
    assert contrast.std() > base.std() * 1.2
    # A LUT: sepia turns a neutral grey picture brown (red above blue).
    sepia = frames_of(render(grey, tmp_path, "sepia", style=looks["sepia"].model_copy(update={"vignette": 0}))[0])
    plain = frames_of(render(grey, tmp_path, "plain")[0])
    assert abs(_red_minus_blue(plain)) < 3 and _red_minus_blue(sepia) > 20


def test_vignette_darkens_corners_and_grain_moves(grey, tmp_path):
    plain = frames_of(render(grey, tmp_path, "plain")[0])
    vignette = frames_of(render(grey, tmp_path, "vignette", style=_style(vignette=0.8))[0])
    grain = frames_of(render(grey, tmp_path, "grain", style=_style(grain=0.6))[0])

    def corners_vs_centre(f):
        return f[:, :30, :30].mean() / f[:, 145:175, 75:105].mean()

    assert corners_vs_centre(vignette) < corners_vs_centre(plain) * 0.8
    # The master is still: frame-to-frame change comes from the grain only.
    assert np.abs(np.diff(grain, axis=0)).mean() > np.abs(np.diff(plain, axis=0)).mean() + 2


def test_time_styles_keep_the_frame_count(master, tmp_path):
    for name, style in [
        ("fast", _style(speed=2.0)),
        ("hold", _style(extend="hold")),
        ("blend", _style(motion="blend")),
        ("interpolate", _style(motion="interpolate")),
    ]:
        path, _ = render(master, tmp_path, name, style=style, preset=SQUARE, duration_s=1.5)
        assert check_delivery(path, SQUARE, 1.5).ok, name
    # hold freezes the last frame once the 1 s master runs out; loop starts again.
    held = frames_of(tmp_path / "hold.mp4")
    assert np.abs(held[-1] - held[-10]).mean() < 1.0
    looped = frames_of(render(master, tmp_path, "loop", preset=SQUARE, duration_s=1.5)[0])
    assert np.abs(looped[-1] - looped[-10]).mean() > 3.0


# 4. Text: literal, inside the safe zone, any script ---------------------------------------------


class Capture:
    """An identity frame processor that keeps what it saw."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.batches: list[int] = []

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.frames.append(frames.copy())
        self.batches.append(len(frames))
        return frames

    @property
    def all(self) -> np.ndarray:
        return np.concatenate(self.frames)


TRICKY = [
    '50% off: don\'t "miss" it',
    "C:\\path\\to\\file; [out] %{pts} %%{eif\\:1\\:d}",
    "line one\nline two: 'quoted'",
    "',drawtext=text=pwned:fontsize=200[x];[x]null",
    "春季新品 周五发布",
    "تخفيضات الربيع تبدأ الآن",
    "नमस्ते दुनिया",
]


@pytest.mark.parametrize("caption", TRICKY)
def test_captions_render_literally_inside_the_safe_zone(caption, master, tmp_path):
    plain, with_text = Capture(), Capture()
    render_rendition(master, RenditionSpec(SMALL, NONE, 0.5), tmp_path / "plain.mp4", processor=plain)
    result = render_rendition(
        master, RenditionSpec(SMALL, NONE, 0.5, caption=caption), tmp_path / "text.mp4", processor=with_text
    )
    assert check_delivery(result.path, SMALL, 0.5).ok
    # No user text reaches ffmpeg: the command lines only name PNG files we wrote.
    flat = " ".join(" ".join(cmd) for cmd in result.commands)
    for token in caption.replace("\n", " ").split():
        if len(token) > 2:
            assert token not in flat
    changed = np.abs(with_text.all.astype(int) - plain.all.astype(int)).max(axis=(0, 3)) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 300, "the caption did not appear"
    x, y, w, h = SMALL.safe_zone.box(SMALL.width, SMALL.height)
    assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
    assert ys.min() > SMALL.height / 2  # captions sit at the bottom of the safe zone


def test_title_cta_card_and_logo(master, tmp_path):
    from PIL import Image

    logo_file = tmp_path / "logo.png"
    Image.new("RGBA", (64, 32), (0, 255, 0, 255)).save(logo_file)
    logo = fetch_asset(str(logo_file), "logo", tmp_path / "assets")
    seen = Capture()
    spec = RenditionSpec(SMALL, NONE, 1.5, title="Spring drop", caption="New in store", cta="Shop now", logo=logo)
    render_rendition(master, spec, tmp_path / "brand.mp4", processor=seen)
    frames = seen.all.astype(int)
    assert len(frames) == 45 and spec.card_s == pytest.approx(0.525)
    first, last = frames[5], frames[-1]
    # The end card dims the frame and shows the call to action on a light button in the centre.
    assert last[:60].mean() < first[:60].mean() * 0.7
    button = render_text(spec.cta_layer(), spec.size, SMALL.safe_zone)
    w, h = button.image.size
    assert abs(button.x + w / 2 - SMALL.width / 2) <= 1
    assert last[button.y + 2, button.x + 6 : button.x + w - 6].min() > 200  # the plate's top edge
    assert last[button.y : button.y + h, button.x : button.x + w].min() < 60  # the dark letters on it
    assert first[button.y + 2, button.x + 6 : button.x + w - 6].mean() < 200  # not there before the card
    # The green logo sits in the top-right corner of the safe zone on every frame.
    x, y, w, _ = SMALL.safe_zone.box(SMALL.width, SMALL.height)
    corner = frames[:, y : y + 10, x + w - 20 : x + w]
    assert (corner[..., 1] > 200).all() and (corner[..., 0] < 60).all()


# 5. The processor path ---------------------------------------------------------------------------


def test_identity_processor_gives_the_same_pixels_as_the_direct_path(master, tmp_path):
    looks = builtin_styles()
    spec = RenditionSpec(
        SMALL, looks["cinematic"], 1.0, caption="Same pixels", title="Hi", lut=resolve_lut("teal_orange", tmp_path)
    )
    direct = render_rendition(master, spec, tmp_path / "direct.mp4")
    seen = Capture()
    piped = render_rendition(master, spec, tmp_path / "piped.mp4", processor=seen, batch_frames=4)
    assert np.array_equal(read_frames(direct.path), read_frames(piped.path))
    assert direct.lossy_encodes == piped.lossy_encodes == 1
    assert len(piped.commands) == 2 and max(seen.batches) <= 4 and sum(seen.batches) == 30


def test_a_processor_changes_the_encoded_frames(master, tmp_path):
    def invert(frames):
        return 255 - frames

    path = render_rendition(master, RenditionSpec(SQUARE, NONE, 0.5), tmp_path / "inv.mp4", processor=invert).path
    plain = render_rendition(master, RenditionSpec(SQUARE, NONE, 0.5), tmp_path / "plain.mp4").path
    assert np.abs(frames_of(path) + frames_of(plain) - 255).mean() < 4


def test_a_bad_processor_is_refused_and_leaves_no_file(master, tmp_path):
    def half(frames):
        return frames[:, ::2]

    with pytest.raises(ValueError, match="must return uint8 frames"):
        render_rendition(master, RenditionSpec(SQUARE, NONE, 0.5), tmp_path / "bad.mp4", processor=half)
    assert list(tmp_path.glob("*.mp4")) == [] and not list(tmp_path.glob(".*tmp*"))


def test_lossy_encodes_are_counted_from_command_lines():
    assert count_lossy_encodes([["ffmpeg", "-i", "a.mkv", "-c:v", "libx264", "o.mp4"]]) == 1
    assert count_lossy_encodes([["ffmpeg", "-i", "a", "-c:v", "ffv1", "m.mkv"], ["ffmpeg", "-f", "rawvideo", "-"]]) == 0


# 6. Sound ------------------------------------------------------------------------------------------


def _integrated_lufs(path: Path) -> float:
    proc = subprocess.run(
        [
            ffmpeg_binary(),
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-af",
            "ebur128",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    summary = proc.stderr.decode().rsplit("Summary:", 1)[1]
    return float(summary.split("I:")[1].split()[0])


def test_music_is_normalised_to_minus_14_lufs_and_loops(master, tmp_path):
    music = tmp_path / "quiet.wav"
    subprocess.run(
        [
            ffmpeg_binary(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:duration=1.2:sample_rate=44100",
            "-af",
            "volume=-28dB",
            str(music),
        ],
        check=True,
    )
    asset = fetch_asset(str(music), "music", tmp_path / "assets")
    assert asset.input_format == "wav"
    path, _ = render(master, tmp_path, "music", preset=SQUARE, duration_s=3.0, music=asset)
    report = check_delivery(path, SQUARE, 3.0)
    assert report.ok, report.violations
    assert (report.info.audio_rate, report.info.audio_channels) == (48000, 2)
    assert _integrated_lufs(path) == pytest.approx(-14.0, abs=1.0)
    # The 1.2 s bed loops to fill 3 s: there is sound in the last second before the fade.
    tail = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-ss", "2.0", "-t", "0.4", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert np.abs(np.frombuffer(tail, np.int16)).max() > 1000


def test_a_peaky_bed_is_compressed_rather_than_clipped(master, tmp_path):
    clicks = tmp_path / "clicks.wav"
    expr = "0.01*sin(2*PI*220*t)+if(lt(mod(t\\,0.5)\\,0.003)\\,0.95\\,0)"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", f"aevalsrc={expr}:d=3:s=48000", str(clicks)], check=True
    )
    asset = fetch_asset(str(clicks), "music", tmp_path / "assets")
    path, _ = render(master, tmp_path, "clicks", preset=SQUARE, duration_s=2.0, music=asset)
    proc = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True,
        check=True,
    )
    peak = float(proc.stderr.decode().rsplit("True peak:", 1)[1].split("Peak:")[1].split()[0])
    assert peak <= -0.5  # dBTP: the gain that would reach -14 LUFS is not applied blindly


def test_without_music_the_track_is_silent(master, tmp_path):
    path, _ = render(master, tmp_path, "silent", preset=SQUARE)
    pcm = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"], capture_output=True
    ).stdout
    assert len(pcm) > 0 and np.abs(np.frombuffer(pcm, np.int16)).max() == 0


# 7. Identity: keys and bytes ---------------------------------------------------------------------


def test_rendition_key_covers_what_changes_the_bytes(tmp_path):
    base = RenditionSpec(SMALL, NONE, 1.0, caption="Hi")
    key = rendition_key("clip", base)
    music_a, music_b = tmp_path / "a.wav", tmp_path / "b.wav"
    for path, freq in ((music_a, 440), (music_b, 550)):
        subprocess.run(
            [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={freq}:duration=0.5", str(path)],
            check=True,
        )
    variants = [
        RenditionSpec(SMALL, NONE, 1.0, caption="Hi!"),
        RenditionSpec(SMALL, _style(saturation=1.1), 1.0, caption="Hi"),
        RenditionSpec(SMALL.model_copy(update={"crf": 22}), NONE, 1.0, caption="Hi"),
        RenditionSpec(SMALL, NONE, 1.5, caption="Hi"),
        RenditionSpec(SMALL, NONE, 1.0, caption="Hi", music=fetch_asset(str(music_a), "music", tmp_path / "c")),
    ]
    keys = {rendition_key("clip", v) for v in variants} | {rendition_key("other", base), key}
    keys.add(rendition_key("clip", base, processor_key="watermark:v1:deadbeef"))
    assert len(keys) == 8
    assert rendition_key("clip", RenditionSpec(SMALL, NONE, 1.0, caption="Hi")) == key
    # Same URI, new content: a new key.
    with_a = rendition_key("clip", variants[-1])
    music_a.write_bytes(music_b.read_bytes())
    spec = RenditionSpec(SMALL, NONE, 1.0, caption="Hi", music=fetch_asset(str(music_a), "music", tmp_path / "c"))
    assert rendition_key("clip", spec) != with_a


def test_same_spec_same_bytes(master, tmp_path):
    spec = RenditionSpec(SQUARE, builtin_styles()["film"], 0.5, caption="Again", lut=resolve_lut("film_fade", tmp_path))
    a = render_rendition(master, spec, tmp_path / "a.mp4").path
    b = render_rendition(master, spec, tmp_path / "b.mp4").path
    assert a.read_bytes() == b.read_bytes()
    poster = write_poster(a, tmp_path / "a.jpg", at_s=0.2)
    assert poster.stat().st_size > 0 and probe(poster).width == SQUARE.width


def test_duration_over_the_channel_limit_is_refused():
    short = SMALL.model_copy(update={"max_duration_s": 2.0})
    with pytest.raises(ValueError, match="does not fit small"):
        RenditionSpec(short, NONE, 3.0)


def test_inspect_reports_the_keyframe_interval(master, tmp_path):
    preset = SQUARE.model_copy(update={"gop_s": 0.5})
    path, _ = render(master, tmp_path, "gop", preset=preset, duration_s=2.0)
    facts = inspect_rendition(path)
    assert facts.max_keyframe_gap == 15
