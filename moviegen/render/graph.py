"""The ffmpeg video filter graph: retime, grade, fit, effects, brand layers, delivery pixels."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import ffmpeg

from moviegen.assets import Asset
from moviegen.layout import ANCHORS
from moviegen.media import StreamInfo, ffmpeg_binary
from moviegen.presets import ChannelPreset, Style
from moviegen.render.overlays import draw_text, overlay_image, render_image, time_window
from moviegen.render.spec import RenditionSpec


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


WORK_FORMAT = "gbrp"  # planar RGB: what the graph works in between its input and its RGB output
