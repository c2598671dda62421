"""What the watermark, the label and the signature add to one rendition, step by step.

    .venv/bin/python benchmarks/bench_rendition_path.py [--repeats 2] [--channel tiktok] [--seconds 3]

Problem: after the integration every rendition is rendered with a watermark embed between its
filter graph and its encode, then gets XMP metadata and a C2PA signature, then passes a delivery
gate that reads the watermark back from the final file. The embed is the expensive part (RivaGAN's
encoder, about 0.13-0.27 s a frame here), and a 30 fps rendition of a 16 fps master repeats
almost every other frame.
Solution: measure, interleaved (the machine is shared and noisy), the wall and CPU time (this
process and its ffmpeg/exiftool children) of one demo-like rendition from an 832x480, 16 fps
master (the flat synthetic master of bench_render.py, close to the tiny demo model's output):

    plain        render without a watermark (the path before the integration; the label is drawn)
    every frame  render with the embed called on every frame the graph hands over
    reuse        render with WatermarkProcessor: each run of identical frames embedded once
    provenance   XMP label metadata (exiftool) + C2PA signature
    gate         preset check, watermark read back, provenance check (each timed)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench_render import make_master

from moviegen.config import ProvenanceSettings
from moviegen.presets import builtin_channels, builtin_styles
from moviegen.provenance import (
    ProvenanceFacts,
    add_provenance,
    check_provenance,
    label_layer,
    load_signing_identity,
)
from moviegen.provenance.delivery import check_delivery
from moviegen.render.encode import render_rendition
from moviegen.render.spec import RenditionSpec
from moviegen.watermark.marking import BATCH_FRAMES, WatermarkProcessor
from moviegen.watermark.model import default_watermarker
from moviegen.watermark.payload import payload_for
from moviegen.watermark.readback import delivery_gate


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(step: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = step()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channel", default="tiktok")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    preset = builtin_channels()[args.channel]
    label = label_layer(args.channel, (preset.width, preset.height))
    spec = RenditionSpec(
        preset, builtin_styles()["none"], args.seconds, caption="Step into spring.", layers=(label,) if label else ()
    )
    payload = payload_for("bench-clip", args.channel)
    marker = default_watermarker()  # ONNX sessions once, as in a run
    with tempfile.TemporaryDirectory(prefix="bench-rendition-path-") as folder:
        work = Path(folder)
        settings = ProvenanceSettings(dev_signer_dir=work / "dev-signer")
        signer = load_signing_identity(settings)
        facts = ProvenanceFacts("bench", "clip", args.channel, "moviegen/tiny-wan", "rev", "0" * 64, None, "bench-clip")
        master = make_master(work, grain=False)
        out = work / "out.mp4"
        figures: dict[str, list[tuple[float, float]]] = {}
        counts = (0, 0)
        readings: list[str] = []

        def record(name: str, wall: float, cpu: float) -> None:
            figures.setdefault(name, []).append((wall, cpu))

        for _ in range(args.repeats):
            wall, cpu, _ = timed(lambda: render_rendition(master, spec, out))
            record("render, plain (no watermark)", wall, cpu)
            wall, cpu, _ = timed(
                lambda: render_rendition(
                    master, spec, out, processor=lambda f: marker.embed(f, payload), batch_frames=BATCH_FRAMES
                )
            )
            record("render + embed every frame", wall, cpu)
            processor = WatermarkProcessor(payload, marker)
            render = partial(render_rendition, master, spec, out, processor=processor, batch_frames=BATCH_FRAMES)
            wall, cpu, _ = timed(render)
            record("render + embed, repeats reused", wall, cpu)
            record("  of which in the processor (wall)", processor.seconds, 0.0)
            counts = (processor.embedded, processor.reused)
            wall, cpu, _ = timed(lambda: add_provenance(out, facts, settings, signer))
            record("provenance: XMP + C2PA sign", wall, cpu)
            wall, cpu, _ = timed(lambda: check_delivery(out, preset, args.seconds))
            record("gate: preset check", wall, cpu)
            wall, cpu, reading = timed(lambda: delivery_gate(out, payload, watermarker=marker))
            readings.append(reading.message)  # type: ignore[attr-defined]
            record("gate: watermark read back", wall, cpu)
            wall, cpu, check = timed(lambda: check_provenance(out, settings))
            assert check.ok, check.violations  # type: ignore[attr-defined]
            record("gate: provenance check", wall, cpu)

    frames = spec.frames
    print(
        f"{args.channel} {preset.width}x{preset.height}, {args.seconds:g} s at {preset.fps:g} fps = {frames} frames "
        f"from an 832x480 16 fps master; embedded {counts[0]}, reused {counts[1]}; median of {args.repeats}"
    )
    print("gate's watermark reading of the final file:", *readings, sep="\n  ")
    print(f"{'step':40} {'wall s':>8} {'cpu s':>8}")
    medians = {}
    for name, values in figures.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        medians[name] = (wall, cpu)
        print(f"{name:40} {wall:8.2f} {cpu:8.2f}" if cpu else f"{name:40} {wall:8.2f}")
    plain, every, reuse = (medians[k] for k in list(medians)[:3])
    after = reuse[0] + sum(medians[k][0] for k in medians if k.startswith(("provenance", "gate")))
    after_cpu = reuse[1] + sum(medians[k][1] for k in medians if k.startswith(("provenance", "gate")))
    saved = (every[0] - plain[0]) / max(1e-9, reuse[0] - plain[0])
    print(f"embed wall time added to the render, every frame / repeats reused: {saved:.2f}x")
    print(f"whole rendition path: {after:.2f} s wall, {after_cpu:.2f} s cpu")
    print(f"plain render before the integration: {plain[0]:.2f} s wall, {plain[1]:.2f} s cpu")


if __name__ == "__main__":
    main()
