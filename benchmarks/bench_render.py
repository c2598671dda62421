"""Rendition cost against a bare ffmpeg transcode, and how many lossy encodes a rendition makes.

    .venv/bin/python benchmarks/bench_render.py [--repeats 3] [--channel tiktok] [--seconds 3]

Problem: a rendition does a lot (grade, LUT, fit, text, logo, end card, loudness-normalised audio),
and each extra encode would cost quality and time.
Solution: measure, in one run and interleaved (the machine is shared and noisy), the wall and CPU
time of renditions against a bare transcode of the same master with the same encoder settings
(x264 preset, CRF, VBV ceiling, profile, level, GOP, colour tags, AAC, +faststart) and only the
filters needed for the same frame (frame rate, crop, scale). Every process a rendition starts is
recorded (subprocess.Popen is wrapped), and its lossy video encodes are counted from the actual
command lines. Goals: at most 1.3x the bare transcode's wall time, exactly one lossy encode.

Masters: a detailed synthetic clip at Wan 2.1 1.3B's size (832x480, 16 fps, with moving detail and
fine grain like generated video), and a flat one (the same scene without grain, closer to what the
tiny random-weight demo model makes), so the figure is shown for easy and hard content.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.assets import fetch_asset
from moviegen.media import ffmpeg_binary, probe, run_ffmpeg
from moviegen.presets import Style, builtin_channels, builtin_styles
from moviegen.render.audio import _loudness
from moviegen.render.encode import count_lossy_encodes, encoder_options, render_rendition
from moviegen.render.graph import crop_box
from moviegen.render.spec import RenditionSpec, resolve_lut


def make_master(folder: Path, grain: bool) -> Path:
    """A 3 s, 832x480, 16 fps lossless master like write_master's (FFV1, bgr0)."""
    path = folder / ("detailed.mkv" if grain else "flat.mkv")
    source = "testsrc2=size=832x480:rate=16" + (",noise=alls=10:allf=t" if grain else "")
    run_ffmpeg(["-f", "lavfi", "-i", source, "-frames:v", "49", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)])
    return path


def bare_transcode(master: Path, size: tuple[int, int], spec: RenditionSpec, out: Path) -> None:
    """The same master, frame and encoder settings, and nothing else: frame rate, crop, scale, encode."""
    preset = spec.preset
    cw, ch, x, y = crop_box(size, preset.width / preset.height, preset.anchor)
    vf = (
        f"fps={preset.fps:g},crop={cw}:{ch}:{x}:{y},"
        f"scale={preset.width}:{preset.height}:flags=lanczos:out_color_matrix=bt709:out_range=tv,format=yuv420p"
    )
    args = ["-stream_loop", "-1", "-i", str(master), "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]
    args += ["-vf", vf, "-t", f"{spec.frames / preset.fps:.6f}"]
    for key, value in encoder_options(preset).items():
        args += [f"-{key}", str(value)]
    run_ffmpeg([*args, str(out)], what="bare transcode")


class Recorder:
    """Wraps subprocess.Popen to record every command line a call starts."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self._original = subprocess.Popen

    def __enter__(self) -> Recorder:
        recorder, original = self, self._original

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, args, *a, **kw):
                recorder.commands.append([str(x) for x in args])
                super().__init__(args, *a, **kw)

        subprocess.Popen = Recording  # type: ignore[misc]
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.Popen = self._original  # type: ignore[misc]


def _uncached(run: Callable[[], Any]) -> Any:
    """Forget measured loudness first, so every timed run pays for its loudness analysis pass."""
    _loudness.clear()
    return run()


def identity(frames: np.ndarray) -> np.ndarray:
    return frames


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], Any]) -> tuple[float, float, list[list[str]]]:
    cpu, started = children_cpu(), time.perf_counter()
    with Recorder() as recorder:
        run()
    return time.perf_counter() - started, children_cpu() - cpu, recorder.commands


def describe(commands: list[list[str]]) -> str:
    roles = []
    for cmd in commands:
        tool = Path(cmd[0]).name
        if tool == "ffprobe":
            roles.append("ffprobe")
        elif count_lossy_encodes([cmd]):
            roles.append("ffmpeg encode")
        elif "rawvideo" in cmd and "pipe:1" in cmd:
            roles.append("ffmpeg graph->raw RGB")
        elif "null" in cmd:
            roles.append("ffmpeg analysis")
        else:
            roles.append(tool)
    return ", ".join(f"{roles.count(r)}x {r}" for r in dict.fromkeys(roles))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channel", default="tiktok")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    preset, looks = builtin_channels()[args.channel], builtin_styles()
    print(f"ffmpeg: {ffmpeg_binary()}; channel {preset.name} {preset.width}x{preset.height} @ {preset.fps:g} fps, ")
    print(
        f"x264 {preset.x264_preset} crf {preset.crf}, {args.seconds:g} s, median of {args.repeats} interleaved runs\n"
    )

    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        folder = Path(tmp)
        bed = folder / "bed.wav"
        run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=220:duration=10", "-af", "volume=-20dB", str(bed)])
        music = fetch_asset(str(bed), "music", folder / "assets")
        cinematic = looks["cinematic"]
        lut = resolve_lut(cinematic.lut, folder / "assets")
        cases: dict[str, dict[str, Any]] = {
            "plain (no style, no text)": {"style": Style(name="none")},
            "warm + title, caption, end card": {
                "style": looks["warm"],
                "title": "Spring drop",
                "caption": "50% off this week: don't miss it",
                "cta": "Shop now",
            },
            "cinematic (LUT, vignette) + caption": {"style": cinematic, "lut": lut, "caption": "Every street a track"},
        }
        for grain in (True, False):
            master = make_master(folder, grain)
            info = probe(master)
            size = (info.width, info.height)
            specs = {name: RenditionSpec(preset, duration_s=args.seconds, **fields) for name, fields in cases.items()}
            plain = specs["plain (no style, no text)"]
            runs: dict[str, Callable[[], Any]] = {
                "bare transcode": lambda m=master, z=size, s=plain: bare_transcode(m, z, s, folder / "bare.mp4")
            }
            for name, spec in specs.items():
                runs[name] = lambda m=master, s=spec: render_rendition(m, s, folder / "r.mp4")
            typical = specs["warm + title, caption, end card"]
            with_music = dataclasses.replace(typical, music=music)
            runs["warm + text + music bed (-14 LUFS)"] = lambda m=master, s=with_music: _uncached(
                lambda: render_rendition(m, s, folder / "r.mp4")
            )
            runs["warm + text, identity processor"] = lambda m=master, s=typical: render_rendition(
                m, s, folder / "p.mp4", processor=identity
            )
            results: dict[str, list[tuple[float, float, list[list[str]]]]] = {name: [] for name in runs}
            runs["plain (no style, no text)"]()  # warm-up: font list, page cache
            for _ in range(args.repeats):
                for name, run in runs.items():
                    results[name].append(measure(run))
            wall = {n: statistics.median(r[0] for r in rs) for n, rs in results.items()}
            cpu = {n: statistics.median(r[1] for r in rs) for n, rs in results.items()}
            label = "detailed (grain)" if grain else "flat"
            print(f"master: {label} 832x480 16 fps")
            print(f"  {'case':38s} {'wall s':>7s} {'x bare':>7s} {'cpu s':>7s} {'x bare':>7s} {'lossy':>6s}  processes")
            for name, rs in results.items():
                commands = rs[-1][2]
                print(
                    f"  {name:38s} {wall[name]:7.2f} {wall[name] / wall['bare transcode']:7.2f} "
                    f"{cpu[name]:7.2f} {cpu[name] / cpu['bare transcode']:7.2f} "
                    f"{count_lossy_encodes(commands):6d}  {describe(commands)}"
                )
            print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
