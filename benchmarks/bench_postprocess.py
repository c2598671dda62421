"""CPU-seconds per rendition, by stage: what sizes ``render_workers`` next to a fast GPU.

    .venv/bin/python benchmarks/bench_postprocess.py [--channels tiktok,youtube,instagram_feed] [--seconds 5]
        [--repeats 1] [--json FILE]

Problem: at 4 steps a 5 s clip is about 7 GPU-seconds on an H200, while each of its renditions'
render, watermark embed, provenance and delivery gate take CPU seconds. If a worker's cores cannot
make a clip's renditions while its GPU makes the next clip, the GPU waits.
Solution: make the tiny model's master of a 5 s clip (tiny-wan, 4 steps, through moviegen), then
each channel's rendition stage by stage as ``moviegen.run.renditions.make_final`` does, and measure the
process CPU time of each stage, this process and its children (ffmpeg, exiftool) apart:

    render       one ffmpeg pass: decode, filter graph (fit, grade, label), H.264 encode (children)
    watermark    RivaGAN's embed between decode and encode (this process: onnxruntime, frame piping),
                 or marking the master once when every rendition keeps a master mark
    provenance   XMP label metadata (exiftool) + the signed C2PA manifest
    gate         preset check (ffprobe), watermark read back from the final file, provenance check
    poster       the JPEG poster frame

The last lines apply ``moviegen.costs.render_workers_for`` to the measured mean for a few GPU clip
rates (few-step and 50-step Wan 1.3B on an H200) and core counts.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# GPU seconds of one 5 s clip (README, GPU table): few-step estimate and 50 steps, Wan 1.3B on an H200.
GPU_CLIP_SECONDS = {"4 steps, guidance 1 (estimate)": 6.7, "50 steps, guidance 5": 66.0}
CORES = (4, 8, 16)


def cpu_now() -> tuple[float, float]:
    """(this process, its waited-for children) user + system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed(step: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, float, float, Any]:
    """(wall s, own CPU s, children's CPU s, result) of ``step(*args, **kwargs)``."""
    wall, (me, kids) = time.perf_counter(), cpu_now()
    result = step(*args, **kwargs)
    me_after, kids_after = cpu_now()
    return time.perf_counter() - wall, me_after - me, kids_after - kids, result


def make_tiny_master(work: Path, seconds: float) -> tuple[Path, tuple[int, int]]:
    """The tiny model's master of a ``seconds`` clip at its 16:9 size, 4 steps, written as a run writes it."""
    from moviegen.generation.device import pick_device
    from moviegen.generation.generate import generate_batch
    from moviegen.generation.loading import PipelineCache
    from moviegen.media import write_master
    from moviegen.models.registry import resolve_model
    from moviegen.spec import GenerationRequest

    ref = resolve_model("tiny-wan")
    device = pick_device("cpu")
    pipe = PipelineCache().get(ref, device, work / "cache")
    width, height = ref.info.size_for("16:9")
    request = GenerationRequest(
        "a product shot, studio light, slow turntable", "", 1, width, height, ref.info.frames_for(seconds), 4, 5.0
    )
    (clip,) = generate_batch(pipe, [request], device)
    return write_master(clip.frames, ref.info.fps, work / "master.mkv"), (width, height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="tiktok,youtube,instagram_feed")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from moviegen.config import ProvenanceSettings
    from moviegen.costs import render_workers_for
    from moviegen.presets import builtin_channels, builtin_styles
    from moviegen.provenance import ProvenanceFacts, add_provenance, label_layer, load_signing_identity
    from moviegen.provenance.delivery import gate_rendition
    from moviegen.render.encode import render_rendition, write_poster
    from moviegen.render.spec import RenditionSpec
    from moviegen.watermark.marking import BATCH_FRAMES, WatermarkProcessor, mark_master, plan_watermark

    channels = [c for c in args.channels.split(",") if c]
    presets = builtin_channels()
    with tempfile.TemporaryDirectory(prefix="bench-postprocess-") as folder:
        work = Path(folder)
        wall, me, kids, (master, master_size) = timed(make_tiny_master, work, args.seconds)
        print(f"tiny-wan master {master_size[0]}x{master_size[1]}, {args.seconds:g} s: {wall:.1f} s wall", flush=True)
        settings = ProvenanceSettings(dev_signer_dir=work / "dev-signer")
        signer = load_signing_identity(settings)
        specs = {}
        for channel in channels:
            preset = presets[channel]
            label = label_layer(channel, (preset.width, preset.height))
            specs[channel] = RenditionSpec(
                preset, builtin_styles()["none"], args.seconds, caption="Step into spring.",
                layers=(label,) if label else (),
            )  # fmt: skip
        stages: dict[str, dict[str, list[tuple[float, float]]]] = {c: {} for c in channels}  # (wall, cpu)

        def record(channel: str, stage: str, wall: float, cpu: float) -> None:
            stages[channel].setdefault(stage, []).append((wall, cpu))

        marks = {c: plan_watermark("bench-clip", c, master_size, list(specs.values())) for c in channels}
        placements = {c: m.placement for c, m in marks.items()}
        for repeat in range(args.repeats):
            marked_master = None
            shared = [c for c in channels if placements[c] == "master"]
            if shared:  # one marked master for every rendition that keeps a master mark: its cost is shared
                wall, me, kids, marked_master = timed(
                    mark_master, master, marks[shared[0]], work / f"master.mark-{repeat}.mkv"
                )
                for channel in shared:
                    record(channel, "watermark", wall / len(shared), (me + kids) / len(shared))
            for channel in channels:
                spec, mark = specs[channel], marks[channel]
                out = work / f"{channel}-{repeat}.mp4"
                if mark.placement == "master":
                    source, processor = marked_master, None
                else:
                    source, processor = master, WatermarkProcessor(mark.payload)
                wall, me, kids, _ = timed(
                    render_rendition, source, spec, out, processor=processor, batch_frames=BATCH_FRAMES
                )
                embed_wall = processor.seconds if processor else 0.0
                record(channel, "render", wall - embed_wall, kids)
                if processor:
                    record(channel, "watermark", embed_wall, me)
                facts = ProvenanceFacts("bench", "clip", channel, "moviegen/tiny-wan", "rev", "0" * 64, None, "bench")
                wall, me, kids, _ = timed(add_provenance, out, facts, settings, signer)
                record(channel, "provenance", wall, me + kids)
                wall, me, kids, verdict = timed(
                    gate_rendition, out, spec.preset, args.seconds, mark.payload, settings, False
                )
                record(channel, "gate", wall, me + kids)
                wall, me, kids, _ = timed(write_poster, out, work / f"{channel}.jpg", at_s=1.0)
                record(channel, "poster", wall, me + kids)
                print(f"  {channel}: {verdict.watermark.message}", flush=True)

    names = ["render", "watermark", "provenance", "gate", "poster"]
    print(f"\nCPU seconds per rendition by stage (wall in brackets), {args.seconds:g} s clip, median of {args.repeats}")
    print(f"{'channel':16} {'size':>10} " + " ".join(f"{n:>16}" for n in names) + f" {'total cpu s':>12}")
    rows: dict[str, dict[str, Any]] = {}
    for channel in channels:
        preset = presets[channel]
        medians = {
            n: (
                statistics.median(w for w, _ in stages[channel][n]),
                statistics.median(c for _, c in stages[channel][n]),
            )
            for n in names
            if n in stages[channel]
        }
        total = sum(c for _, c in medians.values())
        rows[channel] = {
            "size": [preset.width, preset.height],
            "placement": placements[channel],
            "cpu_s": {n: round(c, 3) for n, (_, c) in medians.items()},
            "wall_s": {n: round(w, 3) for n, (w, _) in medians.items()},
            "total_cpu_s": round(total, 3),
        }
        cells = " ".join(
            f"{medians[n][1]:8.2f} ({medians[n][0]:5.2f})" if n in medians else f"{'-':>16}" for n in names
        )
        print(f"{channel:16} {preset.width:>4}x{preset.height:<5} {cells} {total:12.2f}")
    mean = statistics.mean(r["total_cpu_s"] for r in rows.values())
    print(f"mean CPU seconds per rendition: {mean:.2f}")
    print(f"\nrender_workers_for(cores, GPU s per clip, {len(channels)} renditions per clip, {mean:.2f} CPU s each):")
    sizing = {}
    for label, gpu_s in GPU_CLIP_SECONDS.items():
        for cores in CORES:
            s = render_workers_for(cores, gpu_s, len(channels), mean)
            sizing[f"{label}, {cores} cores"] = s.to_json()
            verdict = "CPU-bound: the GPU waits" if s.cpu_bound else "keeps up"
            print(
                f"  {label:32} {cores:3} cores: needs {s.needed:5.2f} cores, render_workers {s.render_workers}, "
                f"{verdict}"
            )
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "channels": rows, "mean_cpu_s": mean,
                                         "sizing": sizing}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
