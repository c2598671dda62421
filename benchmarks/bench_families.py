"""Tiny-model generation per family and task, and the First Block Cache's effect, measured side by side.

Problem: the project's tests and demos run every family on the CPU; which paths are cheap, and does
the step cache do anything? Solution: time each tiny build's task at one size in one process, and
the same Wan call with and without First Block Cache, repeated and interleaved (the machine is noisy).

    .venv/bin/python benchmarks/bench_families.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image
    from skimage import data

    from moviegen.generation.device import pick_device
    from moviegen.generation.generate import generate_batch
    from moviegen.generation.loading import PipelineCache
    from moviegen.generation.options import PipelineOptions
    from moviegen.media import ffmpeg_binary
    from moviegen.models.registry import resolve_for_task, resolve_model
    from moviegen.spec import GenerationRequest

    work = Path(tempfile.mkdtemp(prefix="bench-families-"))
    cache_dir = work / "cache"
    photo = work / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    Image.fromarray(data.coffee()).save(work / "coffee.png")
    clip = work / "pan.mp4"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-loop", "1", "-i", str(work / "coffee.png"), "-vf",
         "crop=320:240:x='t*120':y=80,format=yuv420p", "-t", "2", "-r", "30", "-c:v", "libx264", str(clip)],
        check=True,
    )  # fmt: skip
    device = pick_device("cpu")
    inputs = {
        "t2v": {},
        "i2v": {"reference_sha256": "a", "reference_path": str(photo)},
        "v2v": {"source_sha256": "b", "source_path": str(clip), "strength": 0.6},
    }
    cache = PipelineCache()

    def run(model: str, task: str, steps: int = 4, options: PipelineOptions | None = None) -> float:
        ref = resolve_for_task(resolve_model(model), task)
        pipe = cache.get(ref, device, cache_dir, task=task, options=options)
        width, height = ref.info.size_for("16:9")
        frames = ref.info.frames_for(1.0)
        request = GenerationRequest("a cup of coffee on a table", "", 1, width, height, frames, steps, 5.0, task=task,
                                    fps=ref.info.fps, **inputs[task])  # fmt: skip
        started = time.perf_counter()
        generate_batch(pipe, [request], device)
        return time.perf_counter() - started

    print(f"one 1 s clip at each model's 16:9 size, 4 steps, CPU, median of {args.repeat}")
    for model, task in [("tiny-wan", "t2v"), ("tiny-wan", "i2v"), ("tiny-wan", "v2v"), ("tiny-ltx", "t2v"),
                        ("tiny-ltx", "i2v"), ("tiny-cogvideox", "t2v"), ("tiny-cogvideox", "v2v")]:  # fmt: skip
        run(model, task)  # warm-up (load)
        times = [run(model, task) for _ in range(args.repeat)]
        info = resolve_model(model).info
        print(f"  {model:15s} {task}  {info.size_for('16:9')} x {info.frames_for(1.0)} frames: "
              f"{statistics.median(times):.2f} s")  # fmt: skip

    fbc = PipelineOptions(cache="first_block", cache_threshold=0.2)
    run("tiny-wan", "t2v", 12)
    run("tiny-wan", "t2v", 12, fbc)
    plain, cached = [], []
    for _ in range(args.repeat):  # interleaved
        plain.append(run("tiny-wan", "t2v", 12))
        cached.append(run("tiny-wan", "t2v", 12, fbc))
    a, b = statistics.median(plain), statistics.median(cached)
    print(f"tiny-wan t2v, 12 steps: no cache {a:.2f} s, First Block Cache (0.2) {b:.2f} s, ratio {b / a:.2f}")
    print("notes:", *cache.notes or ["none"], sep="\n  ")


if __name__ == "__main__":
    main()
