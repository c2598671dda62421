"""ffmpeg plumbing: find the binaries, write lossless masters, probe files (the one ffprobe place), read frames.

The system ffmpeg is used when present (Debian's package brings ffprobe too); otherwise the
binary bundled with imageio-ffmpeg, with probing done by parsing ``ffmpeg -i``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


class MediaError(RuntimeError):
    """An ffmpeg step failed; the message carries ffmpeg's own last lines."""


@cache
def ffmpeg_binary() -> str:
    """The ffmpeg executable: ``$MOVIEGEN_FFMPEG``, the system one, or imageio-ffmpeg's bundled one."""
    explicit = os.environ.get("MOVIEGEN_FFMPEG")
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@cache
def ffprobe_binary() -> str | None:
    """ffprobe beside the chosen ffmpeg, or on PATH; None when only a bundled ffmpeg exists."""
    sibling = Path(ffmpeg_binary()).with_name("ffprobe")
    if sibling.is_file():
        return str(sibling)
    return shutil.which("ffprobe")


FFMPEG_TIMEOUT_S = 1800


def run_ffmpeg(args: list[str], *, input_bytes: bytes | None = None, what: str = "ffmpeg") -> bytes:
    """Run ffmpeg quietly; raise MediaError with its last stderr lines when it fails or hangs."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, input=input_bytes, capture_output=True, check=False, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{what} took longer than {FFMPEG_TIMEOUT_S} s and was stopped") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise MediaError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def write_frame(frame: np.ndarray, path: Path) -> Path:
    """Write one uint8 RGB frame (H, W, 3) as a PNG: the image an image-to-video call starts from."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path)
    return path


def write_master(frames: np.ndarray, fps: float, path: Path) -> Path:
    """Write uint8 RGB frames (F, H, W, 3) losslessly (FFV1 in Matroska): the mezzanine every rendition starts from.

    Written to a temporary name and renamed, so a master either is whole or is not there.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    run_ffmpeg(
        [
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-r",
            f"{fps}",
            "-i",
            "pipe:0",
            "-c:v",
            "ffv1",
            "-level",
            "3",
            "-pix_fmt",
            "bgr0",
            "-frames:v",
            str(count),
            str(tmp),
        ],
        input_bytes=np.ascontiguousarray(frames).tobytes(),
        what="writing the master",
    )
    os.replace(tmp, path)
    return path


def read_frames(path: Path, *, size: tuple[int, int] | None = None, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB frames (F, H, W, 3), optionally scaled to ``size`` (width, height)."""
    info = probe(path)
    width, height = size or (info.width, info.height)
    args = ["-i", str(path)]
    if size:
        args += ["-vf", f"scale={width}:{height}:flags=area"]
    if max_frames:
        args += ["-frames:v", str(max_frames)]
    raw = run_ffmpeg([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], what=f"decoding {path.name}")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@dataclass(frozen=True)
class StreamInfo:
    """What a media file holds, as ffprobe sees it."""

    width: int
    height: int
    fps: float
    duration_s: float
    frames: int
    video_codec: str
    pix_fmt: str
    profile: str | None
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    format_name: str

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


PROBE_TIMEOUT_S = 300  # counting frames decodes the file: minutes for a long 4K upload, never hours


def ffprobe_json(path: Path, *, count_frames: bool = False, packets: bool = False) -> dict[str, Any]:
    """ffprobe's streams and format of a file as JSON (and, with ``packets``, each packet's flags).

    The one place ffprobe runs. Raises MediaError when ffprobe is missing, fails or hangs; the
    ``file:`` prefix keeps a name with a colon from being read as a protocol.
    """
    ffprobe = ffprobe_binary()
    if ffprobe is None:
        raise MediaError("probing needs ffprobe: install the ffmpeg package")
    counting = ["-count_frames"] if count_frames else []
    packet_flags = ["-show_entries", "packet=stream_index,flags"] if packets else []
    cmd = [ffprobe, "-v", "error", *counting, "-show_streams", "-show_format", *packet_flags, "-of", "json"]
    try:
        proc = subprocess.run([*cmd, f"file:{path}"], capture_output=True, check=False, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MediaError(f"probing {path.name} took longer than {PROBE_TIMEOUT_S} s and was stopped") from None
    if proc.returncode != 0:
        raise MediaError(f"cannot probe {path}: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return json.loads(proc.stdout)


def probe(path: Path, *, count_frames: bool = True) -> StreamInfo:
    """Probe a media file (ffprobe when available, else parsing ``ffmpeg -i``).

    ``count_frames=False`` skips decoding the file to count frames (``frames`` is then the
    container's count, or 0 when it keeps none, as Matroska does).
    """
    if ffprobe_binary() is None:
        return _probe_with_ffmpeg(path)
    return stream_info(ffprobe_json(path, count_frames=count_frames), path)


def stream_info(data: dict[str, Any], path: Path) -> StreamInfo:
    """The StreamInfo of ffprobe's JSON for ``path`` (which names the file in errors)."""
    video = next((s for s in data["streams"] if s["codec_type"] == "video"), None)
    if video is None:
        raise MediaError(f"{path} has no video stream")
    audio = next((s for s in data["streams"] if s["codec_type"] == "audio"), None)
    num, den = (int(x) for x in video.get("avg_frame_rate", "0/1").split("/"))
    fps = num / den if den else 0.0
    frames = int(video.get("nb_read_frames") or video.get("nb_frames") or 0)
    duration = float(video.get("duration") or data["format"].get("duration") or 0.0)
    return StreamInfo(
        width=int(video["width"]),
        height=int(video["height"]),
        fps=fps,
        duration_s=duration,
        frames=frames,
        video_codec=video["codec_name"],
        pix_fmt=video.get("pix_fmt", ""),
        profile=video.get("profile"),
        audio_codec=audio["codec_name"] if audio else None,
        audio_rate=int(audio["sample_rate"]) if audio else None,
        audio_channels=int(audio["channels"]) if audio else None,
        format_name=data["format"]["format_name"],
    )


def _probe_with_ffmpeg(path: Path) -> StreamInfo:
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    text = proc.stderr.decode(errors="replace")
    video = re.search(r"Stream #\S+.*?: Video: (\w+)(?: \(([^)]*)\))?[^,]*, (\w+)[^,]*,.*?(\d{2,5})x(\d{2,5})", text)
    if video is None:
        raise MediaError(f"cannot probe {path}: {text.strip().splitlines()[-1] if text.strip() else 'no output'}")
    fps_match = re.search(r"(\d+(?:\.\d+)?) fps", text)
    frames = re.findall(r"frame=\s*(\d+)", text)
    audio = re.search(r"Audio: (\w+).*?(\d+) Hz, (mono|stereo|\d+ channels)", text)
    fmt = re.search(r"Input #0, ([\w,]+), from", text)
    fps = float(fps_match.group(1)) if fps_match else 0.0
    count = int(frames[-1]) if frames else 0
    channels = None
    if audio:
        layout = audio.group(3)
        channels = {"mono": 1, "stereo": 2}.get(layout) or int(layout.split()[0])
    return StreamInfo(
        width=int(video.group(4)),
        height=int(video.group(5)),
        fps=fps,
        duration_s=count / fps if fps else 0.0,
        frames=count,
        video_codec=video.group(1),
        pix_fmt=video.group(3),
        profile=video.group(2),
        audio_codec=audio.group(1) if audio else None,
        audio_rate=int(audio.group(2)) if audio else None,
        audio_channels=channels,
        format_name=fmt.group(1) if fmt else "",
    )


# Up to this length a strip decodes the whole video once; longer ones seek to each frame. Measured
# on a 1080x1920 H.264 rendition (2 s GOP): one pass 0.35 s for 1 s of video and 1.6 s for 10 s;
# four seeks 0.8 s and 0.9 s.
STRIP_ONE_PASS_S = 5.0


def frame_strip(path: Path, count: int = 4, size: int = 160, quality: int = 5) -> bytes:
    """A JPEG strip of ``count`` frames spread over the video, side by side, each at most ``size`` pixels a side.

    One ffmpeg call: a short video is decoded once and the frames picked by number; a long one is
    read with one fast seek per frame (``-ss`` before each input), so the cost stays bounded.
    """
    info = probe(path, count_frames=False)
    duration = info.duration_s or (info.frames / info.fps if info.fps else 0.0)
    fit = f"scale={size}:{size}:force_original_aspect_ratio=decrease:force_divisible_by=2,setsar=1"
    frames = round(duration * info.fps) if info.fps else 0
    if duration <= STRIP_ONE_PASS_S and frames >= count:
        picks = "+".join(f"eq(n,{frames * (2 * i + 1) // (2 * count)})" for i in range(count))
        args = ["-an", "-i", f"file:{path}"]
        graph = f"[0:v:0]select='{picks}',{fit},tile={count}x1[s]"
    else:
        times = [duration * (i + 0.5) / count for i in range(count)] if duration > 0 else [0.0]
        args = [a for t in times for a in ("-an", "-ss", f"{t:.3f}", "-i", f"file:{path}")]
        scaled = "".join(f"[{i}:v:0]{fit}[f{i}];" for i in range(len(times)))
        joined = "".join(f"[f{i}]" for i in range(len(times)))
        graph = scaled + (f"{joined}hstack=inputs={len(times)}[s]" if len(times) > 1 else "[f0]null[s]")
    return run_ffmpeg(
        [*args, "-filter_complex", graph, "-map", "[s]", "-frames:v", "1",
         "-c:v", "mjpeg", "-q:v", str(quality), "-pix_fmt", "yuvj420p", "-f", "image2pipe", "pipe:1"],
        what=f"extracting frames from {path.name}",
    )  # fmt: skip
