"""One ffmpeg pass per rendition, frame processors in between, the single lossy encode, posters."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from moviegen.media import FFMPEG_TIMEOUT_S, MediaError, ffmpeg_binary, probe, run_ffmpeg
from moviegen.presets import ChannelPreset
from moviegen.render.audio import audio_graph
from moviegen.render.graph import rate, to_delivery_pixels, video_graph
from moviegen.render.spec import FrameProcessor, RenditionSpec

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
