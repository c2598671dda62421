"""Channel renditions: one ffmpeg pass from the master to a channel's MP4, and its poster frame.

Every filter runs in one graph and the video is encoded exactly once (H.264 + AAC, +faststart).
The master is looped when the clip is shorter than the requested duration.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import ffmpeg

from moviegen.media import ffmpeg_binary, run_ffmpeg
from moviegen.presets import ChannelPreset, Style
from moviegen.spec import stable_hash

ENCODER = {"vcodec": "libx264", "preset": "veryfast", "crf": 20, "profile:v": "high", "pix_fmt": "yuv420p"}
AUDIO = {"acodec": "aac", "ar": 48000, "ac": 2, "b:a": "128k"}

# ffmpeg encodes running at once in this process (each uses several cores); see set_encode_slots.
_encode_slots = threading.BoundedSemaphore(2)


def set_encode_slots(count: int) -> None:
    """Limit how many renditions this process encodes at once (``render_workers`` in settings)."""
    global _encode_slots
    _encode_slots = threading.BoundedSemaphore(max(1, count))


def rendition_key(clip_key: str, preset: ChannelPreset, style: Style, duration_s: float, caption: str) -> str:
    """Hash of everything that determines a rendition's bytes: same key, nothing to redo."""
    return stable_hash(
        {
            "v": 1,
            "clip": clip_key,
            "preset": preset.model_dump(),
            "style": style.model_dump(),
            "duration_s": duration_s,
            "caption": caption,
            "encoder": ENCODER,
            "audio": AUDIO,
        }
    )


def render_rendition(master: Path, preset: ChannelPreset, style: Style, duration_s: float, out_path: Path) -> Path:
    """Render one channel's MP4 from the master in a single ffmpeg pass; atomic (temp name, then rename)."""
    src = ffmpeg.input(str(master), stream_loop=-1)
    video = src.video.filter("fps", fps=preset.fps)
    video = fit_to_frame(video, preset)
    video = apply_style(video, style)
    video = video.filter("format", "yuv420p")
    silence = ffmpeg.input("anullsrc=r=48000:cl=stereo", f="lavfi")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{os.getpid()}{out_path.suffix}")
    gop = round(preset.fps * 2)
    stream = ffmpeg.output(
        video,
        silence.audio,
        str(tmp),
        t=f"{duration_s:.3f}",
        g=gop,
        movflags="+faststart",
        **ENCODER,
        **AUDIO,
    )
    args = ffmpeg.compile(stream, cmd=ffmpeg_binary(), overwrite_output=True)[1:]
    with _encode_slots:
        run_ffmpeg(args, what=f"rendering {preset.name}")
    os.replace(tmp, out_path)
    return out_path


def fit_to_frame(video, preset: ChannelPreset):  # ffmpeg-python streams in and out
    """Fit the frame to the channel: ``crop`` fills and centre-crops; ``pad`` fits inside a blurred copy."""
    w, h = preset.width, preset.height
    if preset.fit == "crop":
        return (
            video.filter("scale", w, h, force_original_aspect_ratio="increase", flags="lanczos")
            .filter("crop", w, h)
            .filter("setsar", 1)
        )
    background, foreground = video.filter_multi_output("split")
    background = (
        background.filter("scale", w // 4, h // 4, force_original_aspect_ratio="increase")
        .filter("crop", w // 4, h // 4)
        .filter("gblur", sigma=8)
        .filter("scale", w, h)
    )
    foreground = foreground.filter("scale", w, h, force_original_aspect_ratio="decrease", flags="lanczos")
    return ffmpeg.overlay(background, foreground, x="(W-w)/2", y="(H-h)/2").filter("setsar", 1)


def apply_style(video, style: Style):
    """Apply a named style's grade (eq + colorbalance); ``none`` leaves the pixels alone."""
    if style.is_neutral:
        return video
    video = video.filter(
        "eq", brightness=style.brightness, contrast=style.contrast, saturation=style.saturation, gamma=style.gamma
    )
    shifts = {"rm": style.red_shift, "bm": style.blue_shift, "bs": style.shadows_blue, "rh": style.highlights_red}
    if any(shifts.values()):
        video = video.filter("colorbalance", **shifts)
    return video


def write_poster(video_path: Path, poster_path: Path, at_s: float) -> Path:
    """Write a JPEG poster frame from the finished rendition; atomic."""
    tmp = poster_path.with_name(f".{poster_path.stem}.tmp{os.getpid()}{poster_path.suffix}")
    run_ffmpeg(
        ["-ss", f"{at_s:.3f}", "-i", str(video_path), "-frames:v", "1", "-q:v", "3", str(tmp)],
        what="writing the poster",
    )
    os.replace(tmp, poster_path)
    return poster_path
