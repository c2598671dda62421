"""Scale-out: the same 8-clip catalog on one GPU-pool worker and on two, on a real Prefect server.

    .venv/bin/python benchmarks/bench_scaleout.py [--clips 8] [--repeats 2] [--steps 8] [--batch-size 2]
                                                  [--share-cores] [--keep]

A local ``prefect server`` (SQLite, its own PREFECT_HOME, 127.0.0.1), the work pools of
deployments/setup.py, the deployments of deployments/prefect.yaml and two process workers whose
flow runs each use one CPU thread for torch (OMP_NUM_THREADS=1), like two GPUs. Each worker is
also pinned to a core of its own (CPU affinity, inherited by its flow runs and their ffmpeg and
onnxruntime threads), like two machines: a worker's encodes, watermark and safety checks then
cannot borrow the other core while it is alone, which would make the one-worker baseline a
two-core machine. ``--share-cores`` leaves both workers on every core instead. The catalog runs
with ``moviegen run --executor deployments`` into a fresh output folder each time, alternately
with one shard on one worker (the other worker stopped) and two shards on two workers.

Prints, per configuration, the median wall time of the whole run (CLI start to exit) and the
ratio two/one (goal: at most 0.7), the same for the shards alone (first shard created to last
finished), and per shard the overhead around its body (queueing, process start, imports,
engine: flow-run wall time minus the shard's own time), before it generates (settings,
detector, validation, planning) and its model load. Then ``moviegen plan``, calibrated from
those runs, estimates the two-worker run next to the measured slowest shard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import write_bench_inputs  # benchmarks/common.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster import BIN, LocalCluster  # noqa: E402


def write_inputs(folder: Path, clips: int, steps: int, batch_size: int) -> tuple[Path, Path]:
    config = (
        f"generation:\n  steps: {steps}\n  batch_size: {batch_size}\nrender_workers: 1\n"
        "watermark_gate: recorded\nscaleout:\n  poll_s: 1\n"
    )
    return write_bench_inputs(folder, clips, config)


def run_once(cluster: LocalCluster, catalog: Path, config: Path, out: Path, shards: int) -> dict:
    started = time.perf_counter()
    result = cluster.run(
        [str(BIN / "moviegen"), "run", str(catalog), "--executor", "deployments", "--out", str(out), "--json"],
        env={"MOVIEGEN_CONFIG": str(config), "MOVIEGEN_SCALEOUT__SHARDS": str(shards)},
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    shards_out = []
    for shard in report["shards"]:
        attempt = shard["attempts"][-1]
        body = shard["seconds"]
        shards_out.append(
            {
                "shard": shard["shard"],
                "worker": shard["worker"],
                "clips": shard["clips"],
                "wall_s": attempt["wall_s"],
                "around_s": attempt["wall_s"] - body,
                "body_s": body,
                "setup_s": shard["setup_seconds"],
                "load_s": sum(shard["load_seconds"].values()),
            }
        )
    first, last = min(a["created"] for a in attempts(report)), max(a["end_time"] for a in attempts(report))
    return {
        "wall": wall,
        "shard_phase": (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds(),
        "published": len(report["published"]),
        "shards": shards_out,
    }


def attempts(report: dict) -> list[dict]:
    return [a for shard in report["shards"] for a in shard["attempts"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--share-cores", action="store_true", help="do not pin each worker to a core of its own (one machine, shared)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (outputs, run.json, logs)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    try:
        measure(args, base)
    finally:
        if args.keep:
            print(f"work folder kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def measure(args: argparse.Namespace, base: Path) -> None:
    catalog, config = write_inputs(base, args.clips, args.steps, args.batch_size)
    cache = base / "cache"
    env = {
        "OMP_NUM_THREADS": "1",  # one torch thread per worker, as one GPU each
        "MKL_NUM_THREADS": "1",
        "XDG_CACHE_HOME": str(cache),
        "XDG_CONFIG_HOME": str(base / "config"),
        "HF_HUB_OFFLINE": "1",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("XDG")})
    from moviegen.models.tiny import ensure_tiny_model

    ensure_tiny_model(cache / "moviegen")  # built once, before any timing

    pinned = not args.share_cores and len(os.sched_getaffinity(0)) >= 2
    cores = {"gpu-0": {0}, "gpu-1": {1}} if pinned else {"gpu-0": None, "gpu-1": None}
    results: dict[int, list[dict]] = {1: [], 2: []}
    with LocalCluster(base, env) as cluster:
        print(f"prefect server healthy after {cluster.start_server():.1f} s", flush=True)
        cluster.setup_pools("--gpu-slots", "2")
        cluster.deploy({"MOVIEGEN_OUT": str(base / "unused"), "MOVIEGEN_CATALOG": str(catalog)})
        cluster.start_worker("gpu", "gpu-0", cpus=cores["gpu-0"])
        cluster.wait_workers("gpu", ["gpu-0"])
        for repeat in range(args.repeats):
            for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                if workers == 2 and "gpu-1" not in cluster.procs:
                    cluster.start_worker("gpu", "gpu-1", cpus=cores["gpu-1"])
                    cluster.wait_workers("gpu", ["gpu-1"])
                    time.sleep(3)
                if workers == 1 and "gpu-1" in cluster.procs:
                    cluster.stop("gpu-1")
                out = base / f"out-{workers}w-{repeat}"
                result = run_once(cluster, catalog, config, out, shards=workers)
                results[workers].append(result)
                used = sorted({s["worker"] for s in result["shards"]})
                print(
                    f"{workers} worker(s), run {repeat + 1}: {result['wall']:.1f} s, "
                    f"{result['published']} published, shards on {used}",
                    flush=True,
                )
        last_two = base / f"out-2w-{args.repeats - 1}"
        plan = json.loads(
            cluster.check(
                [str(BIN / "moviegen"), "plan", str(catalog), "--workers", "2", "--out", str(last_two), "--json"],
                env={"MOVIEGEN_CONFIG": str(config)},
            )
        )

    one = statistics.median(r["wall"] for r in results[1])
    two = statistics.median(r["wall"] for r in results[2])
    shards = [s for rs in results.values() for r in rs for s in r["shards"]]
    around = statistics.median(s["around_s"] for s in shards)
    setup = statistics.median(s["setup_s"] for s in shards)
    load = statistics.median(s["load_s"] for s in shards)
    phase_one = statistics.median(r["shard_phase"] for r in results[1])
    phase_two = statistics.median(r["shard_phase"] for r in results[2])
    shard_two = statistics.median(max(s["wall_s"] for s in r["shards"]) for r in results[2])
    body_one, body_two = (statistics.median(max(s["body_s"] for s in r["shards"]) for r in results[n]) for n in (1, 2))
    print()
    print(
        f"{args.clips} clips of 1 s, tiny model, {args.steps} steps, batches of {args.batch_size}, channel x, "
        f"{args.repeats} runs each, "
        + ("each worker pinned to a core of its own" if pinned else "both workers sharing every core")
    )
    print(f"  one worker  (1 shard):  {one:6.1f} s wall (median)")
    print(f"  two workers (2 shards): {two:6.1f} s wall (median)")
    print(f"  ratio two / one: {two / one:.2f} (goal <= 0.70)")
    print(
        f"  shards only (first created to last finished): {phase_one:.1f} s and {phase_two:.1f} s, "
        f"ratio {phase_two / phase_one:.2f}"
    )
    print(
        f"  slowest shard's body (its flow, start to result): {body_one:.1f} s and {body_two:.1f} s, "
        f"ratio {body_two / body_one:.2f}"
    )
    print("  overhead per shard (medians):")
    print(f"    around its body (queue, process start, imports, engine): {around:.1f} s")
    print(f"    before generating (settings, detector, validate, plan): {setup:.1f} s")
    print(f"    model load: {load:.1f} s")
    print(
        f"  moviegen plan, calibrated from these runs: {plan['wall_s']:.1f} s for two workers "
        f"(measured slowest shard: {shard_two:.1f} s)"
    )


if __name__ == "__main__":
    main()
