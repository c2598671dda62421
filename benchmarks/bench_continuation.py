"""Continued segments on the tiny builds: seconds per segment (text-to-video, then each continuation) and per seam.

Problem: a row longer than its model's clip is made in segments (``extend: continue``): what does
each segment and each seam cost, next to the one call a looped row makes? Solution: plan a 15 s
row on tiny-wan (3 segments of 81 frames) and a 12 s row on tiny-ltx (2 segments), time the first
call, each continuation (the companion's load apart) and the seam joins, in one process.

    .venv/bin/python benchmarks/bench_continuation.py [--steps 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from moviegen.catalog.schema import write_catalog
    from moviegen.config import Settings
    from moviegen.generation.continuation import eased_segment, segment_frames
    from moviegen.generation.generate import generate_batch
    from moviegen.generation.loading import process_pipeline_cache
    from moviegen.run.context import start_run
    from moviegen.run.planning import plan_campaign
    from moviegen.run.screening import load_and_validate

    folder = Path(tempfile.mkdtemp(prefix="bench-continuation-"))
    base = {"campaign_id": "bench", "prompt": "a red kite over sand dunes at dusk", "channels": ["youtube"],
            "seed": 7, "steps": args.steps}  # fmt: skip
    rows = [{**base, "clip_id": "wan", "duration_s": 15.0}, {**base, "clip_id": "ltx", "model": "tiny-ltx",
                                                              "duration_s": 12.0}]  # fmt: skip
    write_catalog(rows, str(folder / "catalog.parquet"))
    ctx = start_run(Settings(out=str(folder / "out"), watermark_gate="recorded"))
    plan = plan_campaign(load_and_validate(str(folder / "catalog.parquet"), ctx).specs, ctx)
    cache = process_pipeline_cache()
    figures = {}
    for clip, _ in plan.todo:
        settings = ctx.settings
        pipe = cache.get(clip.model, ctx.device, settings.cache_dir, task="t2v")
        started = time.perf_counter()
        [first] = generate_batch(pipe, [clip.request], ctx.device)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        companion = cache.get(clip.continuation, ctx.device, settings.cache_dir, task="i2v")
        load_s = time.perf_counter() - started
        parts, segment_s, seam_s = [first.frames], [], []
        for k in range(1, clip.segments):
            start = folder / f"{clip.spec.clip_id}-{k}.png"
            Image.fromarray(parts[-1][-1]).save(start)
            request = replace(clip.request, task="i2v", reference_path=str(start), seed=clip.request.seed + k,
                              num_frames=segment_frames(clip, sum(map(len, parts))))  # fmt: skip
            started = time.perf_counter()
            [made] = generate_batch(companion, [request], ctx.device)
            segment_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            parts.append(eased_segment(parts[-1][-1], made.frames))
            seam_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert len(np.concatenate(parts)[: clip.frames]) == clip.frames  # joined once, as continue_clip does
        join_s = time.perf_counter() - started
        figures[clip.model.info.name] = {
            "segments": clip.segments,
            "frames": clip.frames,
            "size": f"{clip.request.width}x{clip.request.height}",
            "steps": clip.request.steps,
            "first_segment_s": round(first_s, 2),
            "companion": clip.continuation.info.name,
            "companion_load_s": round(load_s, 2),
            "continuation_s": [round(s, 2) for s in segment_s],
            "seam_ms": [round(1000 * s, 1) for s in seam_s],
            "join_ms": round(1000 * join_s, 1),  # the one concatenation of all segments
            "whole_vs_one_call": round((first_s + sum(segment_s) + sum(seam_s) + join_s) / first_s, 2),
        }
    figures["load_average"] = round(os.getloadavg()[0], 1)
    if args.json:
        print(json.dumps(figures))
        return
    for name, f in figures.items():
        if name == "load_average":
            continue
        print(f"{name}: {f['segments']} segments, {f['frames']} frames at {f['size']}, {f['steps']} steps")
        print(f"  first segment (text-to-video)  {f['first_segment_s']:.2f} s")
        print(f"  {f['companion']} load            {f['companion_load_s']:.2f} s (once per process; 0 if shared)")
        print(f"  each continuation               {', '.join(f'{s:.2f}' for s in f['continuation_s'])} s")
        print(f"  each seam (ease-in)             {', '.join(f'{s:.1f}' for s in f['seam_ms'])} ms")
        print(f"  joining all segments (once)     {f['join_ms']:.1f} ms")
        print(f"  whole clip vs one call          {f['whole_vs_one_call']}x")
    print(f"load average {figures['load_average']}")


if __name__ == "__main__":
    main()
