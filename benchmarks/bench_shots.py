"""Multi-shot rows on the tiny model: seconds per shot (text-to-video, and image-to-video from the last frame
with ``continuity: last_frame``) and per seam (cut, crossfade, fade), and the whole row through the run's path.

Problem: a storyboard row makes one call per shot and joins them: what does each shot and each seam
cost, and what does the row's path (frame gate on every shot, assembly, the lossless master) add to
the calls themselves? Solution: plan a three-shot row of 2 s shots on tiny-wan, time each shot's
call, the assembly of the three with each transition, then the row end to end (``generate_masters``:
calls, gate, assembly, master) in one process, once with cuts and once chained from last frames.

    .venv/bin/python benchmarks/bench_shots.py [--steps 4] [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

SHOTS = ("close-up of a red running shoe on wet rock", "a runner on a forest trail at dawn", "the brand logo on white")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each shot")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from moviegen.catalog.schema import write_catalog
    from moviegen.config import Settings
    from moviegen.generation.generate import generate_batch
    from moviegen.generation.loading import process_pipeline_cache
    from moviegen.generation.shots import assemble_shots, fit_shot
    from moviegen.media import write_frame
    from moviegen.run.context import start_run
    from moviegen.run.masters import generate_masters
    from moviegen.run.planning import plan_campaign
    from moviegen.run.screening import load_and_validate

    folder = Path(tempfile.mkdtemp(prefix="bench-shots-"))
    shots = [{"prompt": p, "duration_s": args.seconds} for p in SHOTS]
    base = {"campaign_id": "bench", "prompt": "a trail-running shoe ad", "channels": ["youtube"], "seed": 7,
            "steps": args.steps, "shots": shots}  # fmt: skip
    rows = [{**base, "clip_id": "cuts"}, {**base, "clip_id": "chain", "continuity": "last_frame"}]
    write_catalog(rows, str(folder / "catalog.parquet"))
    ctx = start_run(Settings(out=str(folder / "out"), watermark_gate="recorded"))
    plan = plan_campaign(load_and_validate(str(folder / "catalog.parquet"), ctx).specs, ctx)
    clips = {clip.spec.clip_id: clip for clip, _ in plan.todo}
    cache = process_pipeline_cache()
    for clip in clips.values():  # loads apart from the timings
        for shot in clip.shots:
            cache.get(shot.model, ctx.device, ctx.settings.cache_dir, task=shot.request.task)

    chain, made, shot_s = clips["chain"], [], []
    for shot in chain.shots:
        request = shot.request
        if shot.after is not None:
            request = replace(request, reference_path=str(write_frame(made[-1][-1], folder / "start.png")))
        pipe = cache.get(shot.model, ctx.device, ctx.settings.cache_dir, task=request.task)
        started = time.perf_counter()
        [result] = generate_batch(pipe, [request], ctx.device)
        shot_s.append(time.perf_counter() - started)
        made.append(result.frames)
    pieces = [fit_shot(frames, count) for frames, count in zip(made, chain.shot_frames, strict=True)]
    seam_ms = {}
    for transition in ("cut", "crossfade", "fade"):
        started = time.perf_counter()
        assembled = assemble_shots(pieces, transition, 0 if transition == "cut" else 8)
        seam_ms[transition] = round(1000 * (time.perf_counter() - started) / (len(pieces) - 1), 2)
    whole = {}
    for name in ("cuts", "chain"):
        shutil.rmtree(ctx.work_dir / "masters", ignore_errors=True)
        started = time.perf_counter()
        [master] = generate_masters([clips[name]], ctx)
        assert master.problem is None, master.problem
        whole[name] = round(time.perf_counter() - started, 2)
    figures = {
        "shots": len(chain.shots),
        "frames_per_shot": list(chain.shot_frames),
        "size": f"{chain.request.width}x{chain.request.height}",
        "steps": chain.shots[0].request.steps,
        "models": [shot.model.info.name for shot in chain.shots],
        "shot_s": [round(s, 2) for s in shot_s],
        "seam_ms": seam_ms,
        "assembled_frames": len(assembled),
        "row_s": whole,
        "row_vs_calls": round(whole["chain"] / sum(shot_s), 2),
        "load_average": round(os.getloadavg()[0], 1),
    }
    shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
        return
    f = figures
    print(f"{f['shots']} shots of {f['frames_per_shot']} frames at {f['size']}, {f['steps']} steps, on {f['models']}")
    print(f"  each shot's call (the 2nd and 3rd from the last frame)  {', '.join(f'{s:.2f}' for s in f['shot_s'])} s")
    print("  each seam (assembly / seams)                            "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in f["seam_ms"].items()))  # fmt: skip
    print(f"  whole row (calls, frame gate on each shot, assembly, master): cuts {f['row_s']['cuts']:.2f} s, "
          f"last_frame chain {f['row_s']['chain']:.2f} s ({f['row_vs_calls']}x its calls)")  # fmt: skip
    print(f"load average {f['load_average']}")


if __name__ == "__main__":
    main()
