"""Where to embed: once into the master, or into each rendition's frames? Measured per channel geometry.

Problem: a mark embedded into the master must survive every channel's crop, pad and scale, while
the reader scales each file by its own short side. Solution measured here: a 832x480 master
(Wan 16:9) panned over photographs is marked (a) once in the master, then rendered to each channel
geometry, or (b) in each rendition's frames after the geometry; every rendition is encoded with
H.264 at the channel settings (CRF 20) and read back as found. ``watermark_placement`` encodes the
outcome as a rule.

Run: .venv/bin/python benchmarks/bench_watermark_placement.py [--frames 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_watermark import FPS, panned_clip, photo

from moviegen.media import run_ffmpeg, write_master
from moviegen.watermark.model import Watermarker
from moviegen.watermark.payload import WatermarkReading, payload_for
from moviegen.watermark.placement import master_mark_survives
from moviegen.watermark.readback import verify_video

MASTER = (832, 480)
# name: (width, height, fit) as in moviegen/data/channels.yaml, plus the blurred-pad fit
GEOMETRIES = {
    "9:16 crop 1080x1920": (1080, 1920, "crop"),
    "16:9 scale-up 1920x1080": (1920, 1080, "crop"),
    "4:5 crop 1080x1350": (1080, 1350, "crop"),
    "1:1 crop 1080x1080": (1080, 1080, "crop"),
    "9:16 blurred pad 1080x1920": (1080, 1920, "pad"),
}


def fit_filter(width: int, height: int, fit: str) -> str:
    """The channel geometry as an ffmpeg filter graph (the same fits as the render step)."""
    if fit == "crop":
        return (
            f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos,crop={width}:{height},setsar=1"
        )
    w4, h4 = width // 4, height // 4
    return (
        f"split[bg][fg];[bg]scale={w4}:{h4}:force_original_aspect_ratio=increase,crop={w4}:{h4},"
        f"gblur=sigma=8,scale={width}:{height}[b];[fg]scale={width}:{height}:force_original_aspect_ratio=decrease:"
        f"flags=lanczos[f];[b][f]overlay=(W-w)/2:(H-h)/2,setsar=1"
    )


def render_frames(master: Path, width: int, height: int, fit: str) -> np.ndarray:
    raw = run_ffmpeg(
        [
            "-i",
            str(master),
            "-filter_complex",
            fit_filter(width, height, fit),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]
    )
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def encode(frames: np.ndarray, path: Path) -> Path:
    _, height, width, _ = frames.shape
    run_ffmpeg(
        [
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS), "-i", "pipe:0"),
            *("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-profile:v", "high", "-pix_fmt", "yuv420p"),
            str(path),
        ],
        input_bytes=np.ascontiguousarray(frames).tobytes(),
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    marker = Watermarker()
    print(f"master {MASTER[0]}x{MASTER[1]}, {args.frames} frames per clip, renditions H.264 CRF 20")
    print(f"{'geometry':28s} {'clip':10s} {'master-embedded':>22s} {'per-rendition':>22s}  rule says")
    totals = {"master": 0.0, "rendition": 0.0}
    for name in ("astronaut", "coffee", "chelsea"):
        clip = panned_clip(photo(name), args.frames, *MASTER)
        payload = payload_for(f"placement-{name}", "all")
        plain = write_master(clip, FPS, tmp / f"{name}-plain.mkv")
        started = time.perf_counter()
        marked_master = write_master(marker.embed(clip, payload), FPS, tmp / f"{name}-marked.mkv")
        totals["master"] += time.perf_counter() - started
        for label, (width, height, fit) in GEOMETRIES.items():
            a = encode(render_frames(marked_master, width, height, fit), tmp / "a.mp4")
            frames = render_frames(plain, width, height, fit)
            started = time.perf_counter()
            marked = marker.embed(frames, payload)
            totals["rendition"] += time.perf_counter() - started
            b = encode(marked, tmp / "b.mp4")
            ra = verify_video(a, payload, watermarker=marker)
            rb = verify_video(b, payload, watermarker=marker)
            rule = "master ok" if master_mark_survives(MASTER, (width, height), fit) else "per rendition"
            print(
                f"{label:28s} {name:10s} {_cell(ra):>22s} {_cell(rb):>22s}  {rule}",
                flush=True,
            )
    print(
        f"embed time: master once per clip {totals['master']:.1f} s in all; "
        f"per rendition ({len(GEOMETRIES)} geometries) {totals['rendition']:.1f} s in all"
    )
    return 0


def _cell(reading: WatermarkReading) -> str:
    return f"{'verified' if reading.verified else 'FAILED'} {reading.bit_accuracy:.3f}"


if __name__ == "__main__":
    sys.exit(main())
