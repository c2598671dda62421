"""Peak memory of a small and a large tiny campaign, measured side by side in one run.

    .venv/bin/python benchmarks/bench_memory.py [--clips 10,100] [--executor prefect|plain]

Problem: a campaign must not hold on to what it has finished (frames, masters, results, manifest
rows), or a long catalog runs out of memory where a short one did not.
Solution, measured: each campaign runs in a fresh process (the real flow by default, as
``moviegen run`` runs it) on the tiny model at its smallest settings (2 steps, 1 s clips, one small
channel); the parent samples the memory (PSS) of that process and all its children (ffmpeg,
the ephemeral Prefect server) every 0.1 s with psutil, and the child reports its own peak RSS
(ru_maxrss). Goal: the 100-clip peak is at most 1.3x the 10-clip peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import write_bench_inputs  # benchmarks/common.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
executor, catalog, out, config = sys.argv[1:5]
from moviegen.config import load_settings
t0 = time.perf_counter()
if executor == "prefect":
    from flows.campaign import campaign
    result = campaign(catalog=catalog, out=out, config=config)
else:
    from moviegen.run.plain import run_campaign_plain
    result = run_campaign_plain(catalog, load_settings(config, out=out)).to_json()
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall": time.perf_counter() - t0, "published": len(result["published"]),
                  "exit_code": result["exit_code"], "self_peak_kb": peak_kb}))
"""

CONFIG = """\
generation:
  steps: 2
  batch_size: 4
render_workers: 2
watermark_gate: recorded
channels:
  mini: {label: Mini, width: 320, height: 180, fps: 15, max_duration_s: 60}
"""


def write_inputs(folder: Path, clips: int) -> tuple[Path, Path]:
    return write_bench_inputs(folder, clips, CONFIG, channel="mini")


def tree_pss(proc: psutil.Process) -> int:
    """Proportional set size of a process and all its descendants (those that vanish mid-count are skipped).

    PSS, not RSS: a child between fork and exec (every ffmpeg call) shows the whole parent's pages
    as its own resident set, so a sum of RSS counts the run twice whenever a sample lands there,
    and more often the more encodes a campaign runs.
    """
    total = 0
    with contextlib.suppress(psutil.Error):  # the run itself may end while it is being counted
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_full_info().pss
    return total


def measure(executor: str, catalog: Path, config: Path, out: Path) -> dict:
    """Run one campaign in a fresh process; its tree's sampled peak RSS and its own ru_maxrss."""
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }  # a busy machine starts it slowly
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, executor, str(catalog), str(out), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    peak, samples, parent = 0, [], psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            rss = tree_pss(parent)
            peak = max(peak, rss)
            samples.append(rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{executor} run failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        **result,
        "tree_peak_mb": peak / 2**20,
        "self_peak_mb": result["self_peak_kb"] / 1024,
        "samples": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default="10,100", help="campaign sizes, small first (default 10,100)")
    parser.add_argument("--executor", choices=["prefect", "plain"], default="prefect")
    args = parser.parse_args()
    sizes = [int(n) for n in args.clips.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="moviegen-bench-memory-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("PREFECT_HOME", str(folder / "prefect"))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        for n in sizes:
            catalog, config = write_inputs(folder, n)
            r = measure(args.executor, catalog, config, folder / f"out-{n}")
            results[n] = r
            print(
                f"{n:>4} clips ({args.executor}): {r['published']} published in {r['wall']:.0f} s; "
                f"peak RSS {r['self_peak_mb']:.0f} MB (run process); "
                f"peak PSS {r['tree_peak_mb']:.0f} MB (with children)",
                flush=True,
            )
    small, large = results[sizes[0]], results[sizes[-1]]
    for what in ("self_peak_mb", "tree_peak_mb"):
        ratio = large[what] / small[what]
        verdict = "ok" if ratio <= 1.3 else "OVER GOAL"
        print(f"{what}: {sizes[-1]}-clip / {sizes[0]}-clip = {ratio:.2f}x (goal <= 1.3x): {verdict}")


if __name__ == "__main__":
    main()
