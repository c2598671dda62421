"""Channel renditions: from the lossless master to one channel's MP4, with exactly one lossy encode.

Problem: every channel wants its own size, rate, look, text and loudness, and each extra encode
(crop here, grade there, captions in a third tool) costs quality and time.
Solution: all of it is one ffmpeg filter graph, built here from typed values, and the only lossy
step is the final encode. When a frame processor is given (the invisible watermark), the graph's
output reaches Python as raw RGB frames through a pipe, in bounded batches, and a second ffmpeg
process encodes them; raw frames are lossless, so that is still one lossy encode.

    master -> speed -> extend (loop | hold) -> frame rate (duplicate | blend | interpolate)
      -> grade (eq, colour balance, 3D LUT) at the master's size -> fit (crop at an anchor, or pad
      over a blurred copy) and scale -> sharpen, vignette, grain at the channel's size
      -> title, caption, end card with the call to action, logo, extra text layers -> RGB
      [-> frame processor] -> BT.709 4:2:0 -> x264 + AAC (music or silence, -14 LUFS) -> MP4 (+faststart)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import ffmpeg
import numpy as np

from moviegen.assets import Asset, AssetError, fetch_asset, local_asset
from moviegen.media import FFMPEG_TIMEOUT_S, MediaError, StreamInfo, ffmpeg_binary, probe, run_ffmpeg
from moviegen.overlays import (
    TextLayer,
    draw_text,
    font_identity,
    overlay_image,
    render_image,
    time_window,
)
from moviegen.presets import ChannelPreset, Style, builtin_luts
from moviegen.spec import ClipSpec, stable_hash

# Bump when the graph changes in a way that changes bytes for the same inputs.
RENDER_VERSION = 2
Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]
ANCHORS = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5)}
TRUE_PEAK_DB = -1.5
LOUDNESS_RANGE = 11
WORK_FORMAT = "gbrp"  # planar RGB: what the graph works in between its input and its RGB output
LOSSY_VIDEO_ENCODERS = frozenset(
    {"libx264", "libx265", "h264", "hevc", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1", "mpeg4", "mjpeg"}
)

# Renditions made at once in this process, from the encode to the delivery gate (each uses several
# cores: ffmpeg, the watermark's onnxruntime); see set_rendition_slots.
_rendition_slots = threading.BoundedSemaphore(2)


def set_rendition_slots(count: int) -> None:
    """Limit how many renditions this process makes at once (``render_workers`` in settings)."""
    global _rendition_slots
    _rendition_slots = threading.BoundedSemaphore(max(1, count))


def rendition_slot() -> threading.BoundedSemaphore:
    """``with rendition_slot():`` waits for one of the ``render_workers`` slots and holds it.

    However many threads a task runner gives renditions, only this many encode, embed and read
    marks at once: more would only take cores from the generation running beside them.
    """
    return _rendition_slots


class FrameProcessor(Protocol):
    """Changes frames on their way to the encoder (for example the invisible watermark).

    Called in order with batches of uint8 RGB frames shaped (N, H, W, 3) at the rendition's final
    size, after the whole filter graph (text and labels included); must return an array of the
    same shape and dtype. The input array is writable and may be modified and returned, but it
    is reused for the next batch: copy what must outlive the call.
    """

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


# 1. What a rendition is -------------------------------------------------------------------------


@dataclass(frozen=True)
class RenditionSpec:
    """Everything that decides a rendition's pixels and sound, apart from the master.

    ``preset`` and ``style`` already carry the catalog row's own fit, anchor and look columns
    (``rendition_spec`` applies them). ``layers`` are extra text layers drawn last, over
    everything else (issue 6's AI-generated label goes here).
    """

    preset: ChannelPreset
    style: Style
    duration_s: float
    caption: str = ""
    title: str = ""
    cta: str = ""
    logo: Asset | None = None
    logo_position: Corner = "top_right"
    music: Asset | None = None
    lut: Asset | None = None
    layers: tuple[TextLayer, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= self.preset.max_duration_s:
            limit = self.preset.max_duration_s
            raise ValueError(f"duration {self.duration_s:g} s does not fit {self.preset.name} (0 to {limit:g} s)")
        if self.style.lut and self.lut is None:
            raise ValueError(f"style {self.style.name} names the LUT {self.style.lut!r}: resolve it with resolve_lut")

    @property
    def frames(self) -> int:
        return self.preset.frames_for(self.duration_s)

    @property
    def size(self) -> tuple[int, int]:
        return self.preset.width, self.preset.height

    @property
    def card_s(self) -> float:
        """Seconds of end card at the end (0 without a call to action)."""
        return round(min(1.5, 0.35 * self.duration_s), 3) if self.cta.strip() else 0.0

    def title_layer(self) -> TextLayer | None:
        """The title: large, at the top, over the first seconds (never over the end card)."""
        if not self.title.strip():
            return None
        end = min(3.0, max(1.0, 0.45 * self.duration_s), self.duration_s - self.card_s)
        return TextLayer(self.title, "top", size=0.07, max_lines=2, background=None, font=self.style.font, end_s=end)

    def caption_layer(self) -> TextLayer | None:
        """The caption: at the bottom of the safe zone, on a plate, until the end card."""
        if not self.caption.strip():
            return None
        end = self.duration_s - self.card_s if self.card_s else None
        return TextLayer(self.caption, "bottom", size=0.05, font=self.style.font, end_s=end)

    def cta_layer(self) -> TextLayer | None:
        """The call to action: dark text on a light button, centred on the end card."""
        if not self.card_s:
            return None
        return TextLayer(
            self.cta,
            "center",
            size=0.075,
            max_lines=2,
            color="#111111",
            background="#FFFFFFF0",
            font=self.style.font,
            start_s=self.duration_s - self.card_s,
        )

    def text_layers(self) -> list[TextLayer]:
        """Every text drawn on the rendition, in drawing order: title, caption, call to action, extra layers."""
        own = [self.title_layer(), self.caption_layer(), self.cta_layer()]
        return [*(layer for layer in own if layer is not None), *self.layers]

    def identity(self) -> dict[str, Any]:
        """A JSON-able description of everything above, with file contents as hashes."""
        return {
            "preset": self.preset.model_dump(),
            "style": self.style.model_dump(),
            "duration_s": self.duration_s,
            "frames": self.frames,
            "texts": [{**dataclasses.asdict(t), "font_file": font_identity(t)} for t in self.text_layers()],
            "logo": self.logo.sha256 if self.logo else None,
            "logo_position": self.logo_position,
            "music": self.music.sha256 if self.music else None,
            "lut": self.lut.sha256 if self.lut else None,
        }


def resolve_lut(name_or_uri: str | None, asset_dir: Path) -> Asset | None:
    """A style's LUT: one shipped with moviegen (by name) or a .cube file fetched from a path or URL."""
    if not name_or_uri:
        return None
    shipped = builtin_luts()
    if name_or_uri in shipped:
        return local_asset(shipped[name_or_uri], "lut")
    return fetch_asset(name_or_uri, "lut", asset_dir)


def rendition_spec(
    clip: ClipSpec,
    preset: ChannelPreset,
    style: Style,
    *,
    asset_dir: Path,
    layers: Sequence[TextLayer] = (),
) -> RenditionSpec:
    """Resolve one catalog row for one channel: the row's columns over the channel and the style.

    Fetches the row's logo, music and LUT into ``asset_dir`` (raises AssetError when one cannot
    be used). ``layers`` are extra text layers such as the AI-generated label.
    """
    placement = {k: v for k, v in (("fit", clip.fit), ("anchor", clip.anchor)) if v}
    if placement:
        preset = ChannelPreset.model_validate({**preset.model_dump(), **placement})
    style = style.with_overrides(dict(clip.look))
    return RenditionSpec(
        preset=preset,
        style=style,
        duration_s=clip.duration_s,
        caption=clip.caption,
        title=clip.title,
        cta=clip.cta,
        logo=_fetch(clip.logo_uri, "logo", asset_dir, "logo_uri"),
        logo_position=clip.logo_position,  # type: ignore[arg-type]
        music=_fetch(clip.music_uri, "music", asset_dir, "music_uri"),
        lut=_with_column(lambda: resolve_lut(style.lut, asset_dir), "lut" if dict(clip.look).get("lut") else "style"),
        layers=tuple(layers),
    )


def _fetch(uri: str | None, kind: Any, asset_dir: Path, column: str) -> Asset | None:
    return _with_column(lambda: fetch_asset(uri, kind, asset_dir), column) if uri else None


def _with_column(fetch: Any, column: str) -> Any:
    try:
        return fetch()
    except AssetError as exc:
        raise AssetError(str(exc), column=exc.column or column) from None


@cache
def tool_versions() -> dict[str, str]:
    """Versions of the tools whose output is in a rendition's bytes (ffmpeg, Pillow, libraqm)."""
    from PIL import __version__ as pillow
    from PIL import features

    out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, check=False).stdout.decode()
    return {
        "ffmpeg": out.splitlines()[0] if out else "unknown",
        "pillow": pillow,
        "raqm": str(features.version("raqm")),
    }


def rendition_key(clip_key: str, spec: RenditionSpec, processor_key: str | None = None) -> str:
    """Hash of everything that determines a rendition's bytes: same key, nothing to redo.

    ``processor_key`` describes the frame processor, if any (for example the watermark's model
    and payload): anything that changes its output must change this string.
    """
    return stable_hash(
        {
            "v": RENDER_VERSION,
            "clip": clip_key,
            "rendition": spec.identity(),
            "processor": processor_key,
            "tools": tool_versions(),
        }
    )


# 2. The filter graph ----------------------------------------------------------------------------


def rate(fps: float) -> str:
    """A frame rate as an exact ffmpeg rational (29.97 -> 30000/1001)."""
    value = Fraction(fps).limit_denominator(1001)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def crop_box(size: tuple[int, int], aspect: float, anchor: str) -> tuple[int, int, int, int]:
    """The largest ``aspect`` rectangle in a frame of ``size``, pushed towards ``anchor``: (w, h, x, y)."""
    width, height = size
    if width / height > aspect:
        w, h = min(width, round(height * aspect)), height
    else:
        w, h = width, min(height, round(width / aspect))
    ax, ay = ANCHORS[anchor]
    return w, h, round((width - w) * ax), round((height - h) * ay)


def fit_inside(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The largest even size with ``size``'s aspect that fits in ``target``."""
    scale = min(target[0] / size[0], target[1] / size[1])
    return (max(2, round(size[0] * scale / 2) * 2), max(2, round(size[1] * scale / 2) * 2))


def retime(video: Any, master: StreamInfo, spec: RenditionSpec) -> Any:
    """Speed, extension to the requested duration (the input loops itself for ``loop``), frame rate, length."""
    style, fps = spec.style, spec.preset.fps
    video = video.filter("setpts", "PTS-STARTPTS" if style.speed == 1 else f"(PTS-STARTPTS)/{style.speed:.6g}")
    if style.extend == "hold" and _runs_short(master, spec):
        video = video.filter("tpad", stop_mode="clone", stop_duration=f"{spec.duration_s + 1:.3f}")
    if style.motion == "interpolate":
        # Motion-compensated: slow (about 0.1 s per frame at 832x480 on 2 cores), so it runs here at the
        # master's size, before upscaling; overlapped-block compensation is the cheaper good mode.
        video = _in_yuv(video, "minterpolate", fps=rate(fps), mi_mode="mci", mc_mode="obmc", me_mode="bidir")
    elif style.motion == "blend":
        video = _in_yuv(video, "framerate", fps=rate(fps))
    # The stream itself ends after the last frame (an output -frames limit would cut the audio's tail).
    return video.filter("fps", fps=rate(fps)).filter("trim", end_frame=spec.frames)


def _in_yuv(video: Any, name: str, **options: Any) -> Any:
    """Run a filter that only takes YUV, in 4:4:4 (no chroma lost), and come back to planar RGB."""
    return video.filter("format", "yuv444p").filter(name, **options).filter("format", WORK_FORMAT)


def _runs_short(master: StreamInfo, spec: RenditionSpec) -> bool:
    """Whether the master, at the style's speed, ends before the rendition (with a frame to spare)."""
    seconds = master.frames / master.fps if master.fps > 0 and master.frames > 0 else master.duration_s
    return seconds / spec.style.speed < spec.duration_s + 1 / spec.preset.fps


def grade(video: Any, style: Style, lut: Asset | None) -> Any:
    """Colour at the master's size: eq (brightness, contrast, saturation, gamma), colour balance, 3D LUT."""
    eq = {
        k: getattr(style, k)
        for k, neutral in (("brightness", 0.0), ("contrast", 1.0), ("saturation", 1.0), ("gamma", 1.0))
        if getattr(style, k) != neutral
    }
    if eq:
        video = _in_yuv(video, "eq", **eq)
    # Red and blue shifts move shadows, midtones and highlights alike; the split-tone terms add to one range.
    shifts = {f"r{r}": style.red_shift for r in "smh"} | {f"b{r}": style.blue_shift for r in "smh"}
    shifts["bs"] += style.shadows_blue
    shifts["rh"] += style.highlights_red
    shifts = {k: round(max(-1.0, min(1.0, v)), 4) for k, v in shifts.items() if v}
    if shifts:
        video = video.filter("colorbalance", **shifts)
    if lut:
        video = video.filter("lut3d", file=str(lut.path), interp="tetrahedral")
    return video


def vignette(video: Any, style: Style) -> Any:
    """Darkened corners, applied to the framed picture before it is scaled up (the filter takes packed RGB)."""
    if not style.vignette:
        return video
    angle = f"{style.vignette * math.pi / 2 * 0.9:.4f}"
    # No dithering: its noise costs the encoder more than the banding it hides at these strengths.
    return video.filter("format", "rgb24").filter("vignette", angle=angle, dither=0).filter("format", WORK_FORMAT)


@cache
def has_filter(name: str) -> bool:
    """Whether this ffmpeg build has a filter (zscale needs libzimg, not in every build)."""
    out = subprocess.run([ffmpeg_binary(), "-hide_banner", "-filters"], capture_output=True, check=False).stdout
    return any(line.split()[1:2] == [name] for line in out.decode(errors="replace").splitlines())


ZSCALE_FILTERS = {"lanczos": "lanczos", "bicubic": "bicubic", "bilinear": "bilinear", "neighbor": "point"}


def resize(video: Any, width: int, height: int, scaler: str) -> Any:
    """Scale planar RGB to ``width`` x ``height``: zimg (about twice as fast here) when present, else swscale."""
    if has_filter("zscale"):
        return video.filter("zscale", w=width, h=height, filter=ZSCALE_FILTERS[scaler]).filter("format", WORK_FORMAT)
    return video.filter("scale", width, height, flags=scaler).filter("format", WORK_FORMAT)


def frame(video: Any, master_size: tuple[int, int], preset: ChannelPreset) -> tuple[Any, tuple[int, int]]:
    """For ``crop``: cut the channel's aspect out of the master, at the anchor, before anything else.

    Grading, vignette and motion interpolation then work on fewer pixels; returns the new size.
    """
    if preset.fit != "crop":
        return video, master_size
    cw, ch, x, y = crop_box(master_size, preset.width / preset.height, preset.anchor)
    if (cw, ch) == master_size:
        return video, master_size
    return video.filter("crop", cw, ch, x, y), (cw, ch)


def fit(video: Any, size: tuple[int, int], preset: ChannelPreset, style: Style) -> Any:
    """Scale to the channel's frame: the framed picture fills it (``crop``), or sits over a blurred copy (``pad``)."""
    w, h = preset.width, preset.height
    if preset.fit == "crop":
        video = vignette(video, style)
        return resize(video, w, h, style.scaler).filter("setsar", 1)
    fw, fh = fit_inside(size, (w, h))
    split = video.filter_multi_output("split")
    background, foreground = split[0], split[1]
    small = (max(16, w // 4 // 2 * 2), max(16, h // 4 // 2 * 2))
    cw, ch, x, y = crop_box(size, w / h, "center")
    background = (
        background.filter("crop", cw, ch, x, y)
        .filter("scale", small[0], small[1], flags="bilinear")
        .filter("gblur", sigma=max(4.0, small[0] / 16))
        .filter("colorchannelmixer", rr=0.85, gg=0.85, bb=0.85)  # a little darker, so the picture stands out
    )
    background = resize(background, w, h, "bilinear")
    foreground = resize(vignette(foreground, style), fw, fh, style.scaler)
    return ffmpeg.overlay(background, foreground, x=(w - fw) // 2, y=(h - fh) // 2, format="gbrp").filter("setsar", 1)


def effects(video: Any, style: Style) -> Any:
    """Sharpening and grain at the channel's size (grain must not be scaled up with the picture)."""
    if style.sharpen:
        video = video.filter("cas", strength=f"{min(1.0, style.sharpen / 2):.3f}")
    if style.grain:
        video = video.filter("noise", alls=max(1, round(style.grain * 24)), allf="t")
    return video


def brand(video: Any, spec: RenditionSpec, workdir: Path) -> Any:
    """Title, caption, the end card (dimmed frame + call to action), the logo, then the extra layers."""
    size, safe = spec.size, spec.preset.safe_zone
    for layer in (spec.title_layer(), spec.caption_layer()):
        if layer is not None:
            video = draw_text(video, layer, frame_size=size, safe_zone=safe, workdir=workdir)
    cta = spec.cta_layer()
    if cta is not None:
        dim = time_window(cta.start_s, None)
        video = video.filter("colorchannelmixer", rr=0.45, gg=0.45, bb=0.45, enable=dim)
        video = draw_text(video, cta, frame_size=size, safe_zone=safe, workdir=workdir)
    if spec.logo:
        video = overlay_image(video, render_image(spec.logo.path, size, safe, spec.logo_position), workdir)
    for layer in spec.layers:
        video = draw_text(video, layer, frame_size=size, safe_zone=safe, workdir=workdir)
    return video


def video_graph(master: Path, info: StreamInfo, spec: RenditionSpec, workdir: Path) -> Any:
    """The whole picture side, up to planar RGB frames at the channel's size (everything before the encoder)."""
    looping = spec.style.extend == "loop" and _runs_short(info, spec)
    source = ffmpeg.input(f"file:{master}", **({"stream_loop": -1} if looping else {}))
    # Planar RGB from the master (itself RGB) to the end: no colour-matrix conversion at the channel's
    # size except the one to BT.709 4:2:0 for the encoder, and no chroma lost before it.
    video = source.video.filter("format", WORK_FORMAT)
    # Crop and grade at the master's size and rate (before frames are repeated or interpolated), then retime.
    video, size = frame(video, (info.width, info.height), spec.preset)
    video = grade(video, spec.style, spec.lut)
    video = retime(video, info, spec)
    video = fit(video, size, spec.preset, spec.style)
    video = effects(video, spec.style)
    return brand(video, spec, workdir)


def to_delivery_pixels(video: Any) -> Any:
    """RGB to BT.709 limited-range 4:2:0, the one colour conversion: the same from planar RGB (the graph's
    output) as from packed RGB (the frame processor's), so both render paths give the same pixels."""
    if has_filter("zscale"):  # zimg: about 4 ms a 1080x1920 frame here, swscale about 7
        video = video.filter("format", "gbrp").filter("zscale", matrix="709", range="limited")
    else:
        video = video.filter("scale", w="iw", h="ih", out_color_matrix="bt709", out_range="tv")
    return video.filter("format", "yuv420p")


# 3. Sound ---------------------------------------------------------------------------------------


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


# 4. Encode --------------------------------------------------------------------------------------


def encoder_options(preset: ChannelPreset) -> dict[str, Any]:
    """The output options of the one lossy encode: x264 and AAC as the preset says, MP4 (+faststart)."""
    options: dict[str, Any] = {
        "c:v": "libx264",
        "preset": preset.x264_preset,
        "crf": preset.crf,
        "maxrate": f"{preset.maxrate_kbps}k",
        "bufsize": f"{preset.bufsize_kbps}k",
        "profile:v": preset.profile,
        "level": preset.level,
        "pix_fmt": preset.pix_fmt,
        "g": preset.gop_frames,
        "colorspace": "bt709",
        "color_primaries": "bt709",
        "color_trc": "bt709",
        "color_range": "tv",
        "c:a": preset.audio_codec,
        "b:a": f"{preset.audio_bitrate_kbps}k",
        "ar": preset.audio_rate,
        "ac": preset.audio_channels,
        "map_metadata": -1,
        "f": "mp4",
    }
    if preset.faststart:
        options["movflags"] = "+faststart"
    return options


@dataclass
class RenditionResult:
    """A finished rendition and how it was made (the ffmpeg command lines, for audits and benchmarks)."""

    path: Path
    commands: list[list[str]] = field(default_factory=list)
    frames: int = 0

    @property
    def lossy_encodes(self) -> int:
        return count_lossy_encodes(self.commands)


def count_lossy_encodes(commands: Sequence[Sequence[str]]) -> int:
    """How many lossy video encodes these ffmpeg command lines perform (raw, FFV1 and null outputs are not)."""
    count = 0
    for cmd in commands:
        if not cmd or "ffmpeg" not in Path(cmd[0]).name:
            continue
        for i, arg in enumerate(cmd[:-1]):
            if arg in ("-c:v", "-vcodec", "-codec:v") and cmd[i + 1] in LOSSY_VIDEO_ENCODERS:
                count += 1
    return count


def render_rendition(
    master: Path,
    spec: RenditionSpec,
    out_path: Path,
    *,
    processor: FrameProcessor | None = None,
    batch_frames: int = 8,
) -> RenditionResult:
    """Render one channel's MP4 from the master with exactly one lossy encode; atomic (temp name, then rename).

    Without ``processor`` one ffmpeg process does everything. With one, the graph's RGB frames
    stream through it ``batch_frames`` at a time (memory stays at a few batches, whatever the
    clip's length) into a second ffmpeg process that encodes and muxes the audio.
    """
    # 1. Check inputs (no frame count: the master's duration is enough to decide on looping).
    info = probe(master, count_frames=False)
    if info.width <= 0 or info.height <= 0:
        raise MediaError(f"master {master} has no usable video")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{os.getpid()}-{threading.get_ident()}{out_path.suffix}")
    result = RenditionResult(out_path, frames=spec.frames)

    # 2. Build the graph (text and logos become PNGs in a scratch folder that lives until the encode ends).
    with tempfile.TemporaryDirectory(prefix=".overlays-", dir=out_path.parent) as scratch:
        video = video_graph(master.resolve(), info, spec, Path(scratch))
        audio = audio_graph(spec)
        options = encoder_options(spec.preset)

        # 3. Encode once.
        try:
            if processor is None:
                args = _args(ffmpeg.output(to_delivery_pixels(video), audio, str(tmp), **options))
                result.commands.append(args)
                run_ffmpeg(args[1:], what=f"rendering {spec.preset.name}")
            else:
                _render_through(processor, video, audio, spec, options, tmp, result, batch_frames)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, out_path)
    return result


def _args(stream: Any) -> list[str]:
    return ffmpeg.compile(stream, cmd=ffmpeg_binary(), overwrite_output=True)


def _render_through(
    processor: FrameProcessor,
    video: Any,
    audio: Any,
    spec: RenditionSpec,
    options: dict[str, Any],
    tmp: Path,
    result: RenditionResult,
    batch_frames: int,
) -> None:
    """Graph -> raw RGB -> processor -> encoder, as two ffmpeg processes joined by Python."""
    width, height = spec.size
    quiet = ["-hide_banner", "-nostdin", "-loglevel", "error"]
    rgb = video.filter("format", "rgb24")  # a lossless repack of the graph's planar RGB
    decode = _args(ffmpeg.output(rgb, "pipe:1", f="rawvideo", pix_fmt="rgb24"))
    raw = ffmpeg.input("pipe:0", f="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=rate(spec.preset.fps))
    encode = _args(ffmpeg.output(to_delivery_pixels(raw.video), audio, str(tmp), **options))
    decode, encode = [decode[0], *quiet, *decode[1:]], [encode[0], *quiet, *encode[1:]]
    result.commands += [decode, encode]

    frame_bytes = width * height * 3
    # Unbuffered pipes, widened to 1 MiB where the OS allows: a 1080x1920 frame is 6 MiB.
    popen: dict[str, Any] = {"bufsize": 0, "stderr": subprocess.PIPE}
    decoder = subprocess.Popen(decode, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **popen)
    encoder = subprocess.Popen(encode, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, **popen)
    _widen(decoder.stdout)
    _widen(encoder.stdin)
    errors = [_drain(decoder.stderr), _drain(encoder.stderr)]
    done = 0
    # One batch buffer, reused: the processor's view of it is valid during its call only.
    buffer = np.empty(frame_bytes * batch_frames, np.uint8)
    try:
        assert decoder.stdout is not None and encoder.stdin is not None
        while True:
            got = _read_into(decoder.stdout, memoryview(buffer))
            if got == 0:
                break
            if got % frame_bytes:
                raise MediaError(f"the decoder stopped inside a frame ({got % frame_bytes} stray bytes)")
            frames = buffer[:got].reshape(-1, height, width, 3)
            out = processor(frames)
            if not isinstance(out, np.ndarray) or out.shape != frames.shape or out.dtype != np.uint8:
                raise ValueError(
                    f"the frame processor returned {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}; "
                    f"it must return uint8 frames shaped {frames.shape}"
                )
            try:
                _write_all(encoder.stdin, memoryview(np.ascontiguousarray(out)).cast("B"))
            except BrokenPipeError:
                break  # the encoder died: its exit status and stderr say why, below
            done += len(frames)
        encoder.stdin.close()
        encoder.wait(timeout=FFMPEG_TIMEOUT_S)
        decoder.wait(timeout=FFMPEG_TIMEOUT_S)
    except BaseException:
        for proc in (decoder, encoder):
            proc.kill()
            proc.wait()
        raise
    finally:
        for thread, _ in errors:
            thread.join(timeout=5)
    for name, proc, (_, lines) in (("decoding", decoder, errors[0]), ("encoding", encoder, errors[1])):
        if proc.returncode != 0:
            tail = "\n".join(b"".join(lines).decode(errors="replace").strip().splitlines()[-5:])
            raise MediaError(f"{name} {spec.preset.name} failed (exit {proc.returncode}): {tail}")
    if done != spec.frames:
        raise MediaError(f"{spec.preset.name}: {done} frames went through the processor, expected {spec.frames}")


def _widen(pipe: Any) -> None:
    """Ask Linux for a 1 MiB pipe buffer (fewer wake-ups per frame); elsewhere keep the default."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _write_all(stream: Any, view: memoryview) -> None:
    while len(view):
        view = view[stream.write(view) :]


def _read_into(stream: Any, view: memoryview) -> int:
    """Fill ``view`` from a pipe; fewer bytes only at the end of the stream."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _drain(pipe: Any) -> tuple[threading.Thread, list[bytes]]:
    """Read a child's stderr in the background so it can never block on a full pipe; keep the tail."""
    lines: list[bytes] = []

    def read() -> None:
        for line in iter(pipe.readline, b""):
            lines.append(line)
            del lines[:-50]

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, lines


def write_poster(video_path: Path, poster_path: Path, at_s: float) -> Path:
    """Write a JPEG poster frame from the finished rendition; atomic."""
    tmp = poster_path.with_name(f".{poster_path.stem}.tmp{os.getpid()}{poster_path.suffix}")
    run_ffmpeg(
        ["-ss", f"{at_s:.3f}", "-i", f"file:{video_path}", "-frames:v", "1", "-q:v", "3", "-f", "image2", str(tmp)],
        what="writing the poster",
    )
    os.replace(tmp, poster_path)
    return poster_path
