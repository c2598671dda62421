"""benchmarks/bench_gpu.py --smoke runs for real (tiny shapes on the CPU), so the GPU benchmark never rots."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_measures_every_cpu_configuration_and_skips_the_cuda_ones(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--json", str(out),
         "--cache-dir", str(tmp_path / "shapes")],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["configs"]}
    assert report["smoke"] is True and report["device"] == "cpu"
    assert "T5" in report["note"]

    default = rows["default"]
    for key in ("per_step_s", "fixed_s", "peak_gib", "gpu_s_per_video_s", "clip_s", "first_call_s"):
        assert isinstance(default[key], float) and math.isfinite(default[key]), key
    assert default["peak_gib"] > 0
    assert (default["width"], default["height"], default["frames"], default["steps"]) == (64, 64, 9, [1, 2])
    # The 2-step clip is the measured call; per video second divides by (frames - 1) / fps.
    assert default["clip_measured"] and math.isclose(default["clip_s"], default["times_s"]["2"], abs_tol=0.001)
    assert math.isclose(default["gpu_s_per_video_s"], default["clip_s"] / 0.5, rel_tol=0.02, abs_tol=0.002)
    assert math.isclose(default["fixed_s"] + 2 * default["per_step_s"], default["times_s"]["2"], abs_tol=0.002)
    assert rows["batch-2"]["batch"] == 2

    for name in ("compile", "offload-model", "offload-group", "offload-sequential"):
        assert rows[name]["skipped"] == "skipped on cpu", name
    # Options this moviegen lacks are named, not crashed on; once it has them they run (or skip on cpu).
    for name in ("cache-mag", "attn-_native_flash"):
        skipped = rows[name].get("skipped", "")
        assert ("not supported by this moviegen" in skipped or skipped == "skipped on cpu"
                or "per_step_s" in rows[name]), rows[name]  # fmt: skip
    failed = {n: r["error"] for n, r in rows.items() if "error" in r}
    assert not failed
    for name in ("default", "few-step", "batch-2", "cache-first_block", "wan-14b", "ltx-video", "cogvideox-2b"):
        assert "per_step_s" in rows[name], rows[name]
    assert "default" in result.stdout and "skipped on cpu" in result.stdout


def test_real_shapes_have_the_published_models_sizes():
    """Built on the meta device (no memory, no weights): the parameter counts of the real checkpoints."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_gpu", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)

    def billions(shape: str) -> dict[str, float]:
        with torch.device("meta"):
            pipe = bench.build_shape(shape, smoke=False)
        return {n: sum(p.numel() for p in getattr(pipe, n).parameters()) / 1e9 for n in ("transformer", "vae")}

    wan = billions("wan-1.3b")
    assert 1.40 < wan["transformer"] < 1.45 and 0.12 < wan["vae"] < 0.13  # Wan2.1-T2V-1.3B: 1.42B + 127M
    assert 14.2 < billions("wan-14b")["transformer"] < 14.4  # Wan2.1-T2V-14B
    assert 1.6 < billions("cogvideox")["transformer"] < 1.8  # CogVideoX-2b
