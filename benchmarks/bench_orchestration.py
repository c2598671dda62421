"""Orchestration overhead, model loads and batching, measured side by side in one run.

    .venv/bin/python benchmarks/bench_orchestration.py [--clips 8] [--repeats 2]

1. The same small catalog runs under Prefect (ephemeral API, started beforehand and timed apart)
   and in the plain loop, alternately, each in a fresh process with a fresh output folder:
   overhead per clip = (Prefect wall time - plain wall time) / clips. Goal: < 0.25 s per clip.
2. Model loads per run, from run.json. Goal: exactly one per process per model.
3. Batched vs one-by-one generation throughput in one process. Goal: batching >= 1.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_bench_inputs  # benchmarks/common.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
mode, catalog, out, config = sys.argv[1:5]
from moviegen.config import load_settings
if mode == "prefect":
    from prefect import flow
    from flows.campaign import campaign

    @flow
    def warm_up() -> None:
        pass

    t0 = time.perf_counter(); warm_up(); api_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = campaign(catalog=catalog, out=out, config=config)
    wall = time.perf_counter() - t0
else:
    from moviegen.run.plain import run_campaign_plain
    api_start = 0.0
    t0 = time.perf_counter()
    result = run_campaign_plain(catalog, load_settings(config, out=out)).to_json()
    wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "api_start": api_start, "published": len(result["published"]),
                  "model_loads": result["model_loads"], "exit_code": result["exit_code"]}))
"""


def write_inputs(folder: Path, clips: int) -> tuple[Path, Path]:
    return write_bench_inputs(
        folder, clips, "generation:\n  steps: 4\n  batch_size: 4\nrender_workers: 2\nwatermark_gate: recorded\n"
    )


def run_child(mode: str, catalog: Path, out: Path, config: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(catalog), str(out), str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def orchestration(clips: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="moviegen-bench-") as tmp:
        folder = Path(tmp)
        catalog, config = write_inputs(folder, clips)
        env = {
            **os.environ,
            "PREFECT_HOME": str(folder / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("PREFECT_API_URL", None)
        results: dict[str, list[dict]] = {"plain": [], "prefect": []}
        for i in range(repeats):
            order = ("plain", "prefect") if i % 2 == 0 else ("prefect", "plain")
            for mode in order:
                r = run_child(mode, catalog, folder / f"out-{mode}-{i}", config, env)
                assert r["published"] == clips, r
                results[mode].append(r)
                print(f"  {mode:7s} run {i + 1}: {r['wall']:.1f} s (api start {r['api_start']:.1f} s)", flush=True)
    plain = statistics.median(r["wall"] for r in results["plain"])
    prefect = statistics.median(r["wall"] for r in results["prefect"])
    return {
        "clips": clips,
        "plain_s": plain,
        "prefect_s": prefect,
        "api_start_s": statistics.median(r["api_start"] for r in results["prefect"]),
        "overhead_per_clip_s": (prefect - plain) / clips,
        # Run i of each mode ran back to back: their difference is the least noisy figure.
        "paired_per_clip_s": [
            (p["wall"] - q["wall"]) / clips for p, q in zip(results["prefect"], results["plain"], strict=True)
        ],
        "model_loads": [r["model_loads"] for r in results["plain"] + results["prefect"]],
    }


def batching(clips: int, batch_size: int = 4) -> dict:
    import torch

    from moviegen.config import load_settings
    from moviegen.generation.device import pick_device
    from moviegen.generation.generate import generate_batch
    from moviegen.generation.loading import process_pipeline_cache
    from moviegen.models.registry import resolve_model
    from moviegen.spec import GenerationRequest

    settings = load_settings(None)
    device = pick_device("cpu")
    pipe = process_pipeline_cache().get(resolve_model("tiny-wan"), device, settings.cache_dir)
    requests = [GenerationRequest(f"a product shot number {i}", "", i, 480, 272, 17, 4, 5.0) for i in range(clips)]
    generate_batch(pipe, requests[:1], device)  # warm-up
    timings: dict[str, list[float]] = {"one_by_one": [], "batched": [], "deterministic": []}
    for _ in range(2):
        t0 = time.perf_counter()
        for r in requests:
            generate_batch(pipe, [r], device)
        timings["one_by_one"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, clips, batch_size):
            generate_batch(pipe, requests[i : i + batch_size], device)
        timings["batched"].append(time.perf_counter() - t0)
        # generation.deterministic: one clip per call with torch's deterministic kernels.
        torch.use_deterministic_algorithms(True, warn_only=True)
        t0 = time.perf_counter()
        for r in requests:
            generate_batch(pipe, [r], device)
        timings["deterministic"].append(time.perf_counter() - t0)
        torch.use_deterministic_algorithms(False)
    one = min(timings["one_by_one"])
    batched = min(timings["batched"])
    return {
        "clips": clips,
        "batch_size": batch_size,
        "one_by_one_clips_per_s": clips / one,
        "batched_clips_per_s": clips / batched,
        "speedup": one / batched,
        "deterministic_clips_per_s": clips / min(timings["deterministic"]),
        "deterministic_cost": min(timings["deterministic"]) / batched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batching-only", action="store_true", help="only the batching and deterministic figures")
    args = parser.parse_args()
    if not args.batching_only:
        print_orchestration(args)
    print(f"batching: {args.clips} clips of 17 frames at 480x272, 4 steps")
    b = batching(args.clips)
    print(f"  one by one          {b['one_by_one_clips_per_s']:.3f} clips/s")
    print(f"  batches of {b['batch_size']}        {b['batched_clips_per_s']:.3f} clips/s")
    print(f"  batching speed-up   {b['speedup']:.2f}x   (goal >= 1.3x)")
    print(f"  deterministic       {b['deterministic_clips_per_s']:.3f} clips/s: {b['deterministic_cost']:.2f}x the "
          "time of batch_size auto")  # fmt: skip


def print_orchestration(args: argparse.Namespace) -> None:
    print(f"orchestration: {args.clips} clips (tiny model, 1 s, 4 steps, channel x), {args.repeats} runs each")
    o = orchestration(args.clips, args.repeats)
    print(f"  plain loop          {o['plain_s']:.1f} s (median)")
    print(f"  Prefect flow        {o['prefect_s']:.1f} s (median; API start-up {o['api_start_s']:.1f} s not included)")
    print(f"  overhead per clip   {o['overhead_per_clip_s']:+.3f} s   (goal < 0.25 s)")
    print(f"  per pair of runs    {', '.join(f'{x:+.3f}' for x in o['paired_per_clip_s'])} s per clip")
    loads = {json.dumps(m, sort_keys=True) for m in o["model_loads"]}
    print(f"  model loads per run {', '.join(sorted(loads))}   (goal: 1 per model)")


if __name__ == "__main__":
    main()
