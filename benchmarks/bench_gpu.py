"""What generation costs on a GPU through moviegen's own loader: per step, fixed seconds, peak memory.

Problem: a campaign's bill is GPU seconds, and the options that change it (compile, CFG, offload,
batching, step caches, attention backends) are only worth what they measure on a real GPU with a
real-shaped model. Real weights cannot be downloaded on the GPU machine (it has no network).
Solution: build random-weight pipelines of the real shapes (Wan2.1-T2V-1.3B's transformer and VAE
configurations, the 14B transformer, LTX-Video's and CogVideoX-2b's default configurations; a
2-layer 4096-wide T5 stands in for UMT5-XXL), save them with save_pretrained, load them as a local
folder through ``PipelineCache().get(resolve_model(folder), ...)`` and time ``generate_batch`` at
two step counts: per step = the slope, fixed = the intercept (text encoding, VAE decode, the
call's overhead; the T5 stand-in's cost is in it, a real UMT5-XXL's is larger). GPU-seconds per
published second of video = one clip at ``clip_steps`` steps / its duration ((frames - 1) / fps).
One line is printed per configuration as it completes, in priority order, so the first lines fit
a 15-minute lease; ``--json`` is rewritten after each, so a run cut short keeps what it measured.

    # here, once: the wheels the GPU machine lacks, into .whl/ (ignored by git)
    PYTHON=/path/to/.venv/bin/python benchmarks/gpu_wheels.sh
    # on the GPU machine (the device tool's `run`, carry [".whl"], timeout_s 600):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; PYTHONUNBUFFERED=1 python3 \
        benchmarks/bench_gpu.py --cache-dir /tmp/bench-gpu --json $OUT/bench_gpu.json 2>&1 | tee $OUT/bench_gpu.log
    # here, on the CPU, at a tiny size in seconds (tests/test_bench_gpu.py runs this):
    .venv/bin/python benchmarks/bench_gpu.py --smoke [--json FILE] [--only default,batch-2]

Only torch, transformers, tokenizers, accelerate, numpy, pillow, pyyaml and the carried wheels
(diffusers, pydantic, pydantic-settings and their needs) are imported: moviegen.generation,
moviegen.models.* and moviegen.config need nothing else at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: moviegen from this checkout

WAN_1_3B = {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30}
WAN_14B = {"num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40}
WAN_SMOKE = {"num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2}
# The real clip: 832x480, 81 frames at 16 fps (5 s); --smoke: 64x64, 9 frames.
REAL_SIZE, SMOKE_SIZE = (832, 480, 81), (64, 64, 9)
SHAPE_VERSION = "v1"  # bump when a shape's build changes: cached folders are rebuilt


@dataclass(frozen=True)
class Config:
    """One measured configuration: a model shape, pipeline options and a call."""

    name: str
    shape: str = "wan-1.3b"  # wan-1.3b, wan-14b, ltx, cogvideox
    options: dict[str, Any] = field(default_factory=dict)  # PipelineOptions fields
    batch: int = 1
    guidance: float | None = 5.0  # None: the model's default
    steps: tuple[int, int] = (2, 6)  # the two step counts timed; per step is the slope between them
    clip_steps: int = 50  # the clip GPU-seconds per video second is quoted for
    cuda_only: bool = False  # offload, compile and the CUDA attention kernels: "skipped on cpu"
    smoke_steps: tuple[int, int] = (1, 2)


# In priority order: the first lines fit a 15-minute lease.
CONFIGS: list[Config] = [
    Config("default"),
    Config("compile", options={"compile": True}, cuda_only=True),
    Config("few-step", guidance=1.0, steps=(2, 4), clip_steps=4),
    Config("offload-model", options={"offload": "model"}, cuda_only=True),
    Config("offload-group", options={"offload": "group"}, cuda_only=True),
    Config("offload-sequential", options={"offload": "sequential"}, cuda_only=True),
    Config("batch-2", batch=2),
    # A step cache saves steps, not time per step: time it over more steps.
    *(Config(f"cache-{c}", options={"cache": c}, steps=(6, 16)) for c in ("first_block", "taylorseer", "faster")),
    # MagCache needs the model's calibrated ratios; flat ratios (1.0) time its skipping, not its fidelity.
    Config("cache-mag", options={"cache": "mag", "cache_options": (("mag_ratios", (1.0,) * 16),)}, steps=(6, 16)),
    *(
        Config(f"attn-{b}", options={"attention_backend": b}, cuda_only=True)
        for b in ("_native_flash", "_native_efficient", "_native_cudnn", "flash")
    ),
    Config("wan-14b", shape="wan-14b", steps=(1, 2)),
    # LTX-Video's scheduler (shift_terminal) needs at least 2 steps.
    Config("ltx-video", shape="ltx", guidance=None, steps=(2, 3), smoke_steps=(2, 3)),
    Config("cogvideox-2b", shape="cogvideox", guidance=None, steps=(1, 2)),
]


class Unsupported(Exception):
    """This moviegen has no such option (or value): the configuration is skipped."""


def pipeline_options(values: dict[str, Any]) -> Any:
    """``PipelineOptions(**values)``, or ``Unsupported`` when this moviegen lacks a field or a value.

    Works before and after moviegen gains ``attention_backend`` and more ``cache`` kinds: an unknown
    field is a TypeError, and a cache kind the settings do not accept is a ValueError.
    """
    from moviegen.config import GenerationSettings
    from moviegen.generation.options import PipelineOptions

    known = {f.name for f in dataclasses.fields(PipelineOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise Unsupported(f"{unknown[0]} not supported by this moviegen")
    try:
        if "cache" in values:  # pydantic's ValidationError is a ValueError
            GenerationSettings(cache=values["cache"], cache_options=dict(values.get("cache_options", ())))
        return PipelineOptions(**values)
    except (TypeError, ValueError):
        option = ", ".join(f"{k}={v}" for k, v in values.items())
        raise Unsupported(f"{option} not supported by this moviegen") from None


# 1. Build the shapes ----------------------------------------------------------------------------


def text_stand_in(tokenizer: Any, smoke: bool) -> Any:
    """UMT5-XXL's width (d_model 4096, 64 heads, d_ff 10240) in 2 layers; tiny.py's T5 for --smoke."""
    from moviegen.models.tiny import _t5

    if smoke:
        return _t5(tokenizer)
    umt5_width = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "relative_attention_num_buckets": 32}
    return _t5(tokenizer, feed_forward_proj="gated-gelu", **umt5_width)


def build_wan(dims: dict[str, int], smoke: bool) -> Any:
    """A WanPipeline with the given transformer dimensions, Wan 2.1's VAE and the T5 stand-in."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    from moviegen.models.tiny import _byte_tokenizer, _wan_vae

    tokenizer = _byte_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        in_channels=16,
        out_channels=16,
        text_dim=32 if smoke else 4096,
        freq_dim=256,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
        **dims,
    )
    vae = (
        _wan_vae()
        if smoke
        else AutoencoderKLWan(
            base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
        )
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_stand_in(tokenizer, smoke),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


def build_ltx(smoke: bool) -> Any:
    """LTX-Video 0.9's transformer and VAE (diffusers' default configurations are the 2B model's)."""
    from diffusers import AutoencoderKLLTXVideo, LTXPipeline, LTXVideoTransformer3DModel

    from moviegen.models.tiny import _byte_tokenizer, build_tiny_ltx

    tiny = build_tiny_ltx()
    if smoke:
        return tiny
    tokenizer = _byte_tokenizer()
    return LTXPipeline(
        scheduler=tiny.scheduler,
        vae=AutoencoderKLLTXVideo(),
        text_encoder=text_stand_in(tokenizer, smoke),
        tokenizer=tokenizer,
        transformer=LTXVideoTransformer3DModel(),
    )


def build_cogvideox(smoke: bool) -> Any:
    """CogVideoX-2b's transformer and VAE (diffusers' default configurations)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel

    from moviegen.models.tiny import _byte_tokenizer, build_tiny_cogvideox

    tiny = build_tiny_cogvideox()
    if smoke:
        return tiny
    tokenizer = _byte_tokenizer()
    return CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_stand_in(tokenizer, smoke),
        vae=AutoencoderKLCogVideoX(),
        transformer=CogVideoXTransformer3DModel(),
        scheduler=tiny.scheduler,
    )


def build_shape(shape: str, smoke: bool) -> Any:
    """The pipeline of one shape, random weights from seed 0."""
    if shape == "wan-1.3b":
        return build_wan(WAN_SMOKE if smoke else WAN_1_3B, smoke)
    if shape == "wan-14b":
        return build_wan({**WAN_SMOKE, "num_layers": 3} if smoke else WAN_14B, smoke)
    if shape == "ltx":
        return build_ltx(smoke)
    if shape == "cogvideox":
        return build_cogvideox(smoke)
    raise ValueError(f"unknown shape {shape!r}")


def ensure_shape(cache_dir: Path, shape: str, smoke: bool) -> Path:
    """The shape's saved folder under ``cache_dir``, built on first use (on the GPU when there is one)."""
    import torch

    folder = cache_dir / f"{shape}-{'smoke' if smoke else 'real'}-{SHAPE_VERSION}"
    if (folder / "model_index.json").is_file():
        return folder
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    build_on = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    try:
        torch.manual_seed(0)
        with torch.device(build_on):  # random initialisation of billions of weights is much faster there
            pipe = build_shape(shape, smoke)
        if not smoke:  # saved as the real checkpoints are used: bf16 transformer and text encoder
            for name in ("transformer", "text_encoder"):
                getattr(pipe, name).to(torch.bfloat16)
        pipe.to("cpu")
        pipe.save_pretrained(staging)
        del pipe
        _free()
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a failed build's leftovers
    return folder


# 2. Measure -------------------------------------------------------------------------------------


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _peak_gib(cuda: bool) -> tuple[float, str]:
    import torch

    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS (cpu, not reset)"


def timed_call(pipe: Any, device: Any, requests: list[Any]) -> float:
    """Seconds for one generate_batch call, the device synchronised before and after."""
    import torch

    from moviegen.generation.generate import generate_batch

    cuda = device.name.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    generate_batch(pipe, requests, device)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(config: Config, device: Any, cache_dir: Path, smoke: bool, repeats: int) -> dict[str, Any]:
    """Load ``config``'s pipeline through moviegen, time it at two step counts; one result row."""
    import torch

    from moviegen.generation.loading import PipelineCache
    from moviegen.models.registry import resolve_model
    from moviegen.spec import GenerationRequest

    row: dict[str, Any] = {"name": config.name, "shape": config.shape, "options": config.options}
    try:
        options = pipeline_options(config.options)
    except Unsupported as exc:
        return {**row, "skipped": f"skipped: {exc}"}
    cuda = device.name.startswith("cuda")
    if config.cuda_only and not cuda:
        return {**row, "skipped": f"skipped on {device.name}"}
    folder = ensure_shape(cache_dir, config.shape, smoke)
    ref = resolve_model(str(folder))
    if config.shape.startswith("wan"):
        width, height, frames = SMOKE_SIZE if smoke else REAL_SIZE
        fps = 16
    else:
        width, height = (SMOKE_SIZE[0], SMOKE_SIZE[1]) if smoke else ref.info.size_for("16:9")
        frames = SMOKE_SIZE[2] if smoke else ref.info.frames_for(5.0)
        fps = ref.info.fps
    guidance = ref.info.guidance if config.guidance is None else config.guidance
    steps = config.smoke_steps if smoke else config.steps

    def requests(n_steps: int) -> list[Any]:
        return [
            GenerationRequest(
                f"a product shot {i}, studio light", "", i, width, height, frames, n_steps, guidance, fps=fps
            )
            for i in range(config.batch)
        ]

    _free()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cache = PipelineCache()
    started = time.perf_counter()
    pipe = cache.get(ref, device, cache_dir / "moviegen", options=options)
    load_s = time.perf_counter() - started
    try:
        first_call_s = timed_call(pipe, device, requests(steps[0]))  # compile, kernel autotuning, allocator warm-up
        times = {s: min(timed_call(pipe, device, requests(s)) for _ in range(repeats)) for s in steps}
        peak, peak_kind = _peak_gib(cuda)
    finally:
        del pipe
        cache.clear()
        if options.compile:
            torch._dynamo.reset()
        _free()
    a, b = steps
    per_step = (times[b] - times[a]) / (b - a)
    fixed = times[a] - per_step * a
    clip_steps = steps[1] if smoke else config.clip_steps
    call_s = times[clip_steps] if clip_steps in times else per_step * clip_steps + fixed
    video_s = (frames - 1) / fps
    return {
        **row,
        "device": device.name,
        "dtype": device.dtype_name,
        "width": width,
        "height": height,
        "frames": frames,
        "fps": fps,
        "batch": config.batch,
        "guidance": guidance,
        "steps": list(steps),
        "times_s": {str(s): round(t, 4) for s, t in times.items()},
        "per_step_s": round(per_step, 4),
        "fixed_s": round(fixed, 4),
        "first_call_s": round(first_call_s, 3),
        "load_s": round(load_s, 3),
        "peak_gib": round(peak, 3),
        "peak_kind": peak_kind,
        "clip_steps": clip_steps,
        "clip_measured": clip_steps in times,
        "clip_s": round(call_s / config.batch, 3),  # one clip's share of its call
        "video_s": video_s,
        "gpu_s_per_video_s": round(call_s / config.batch / video_s, 3),
        "notes": cache.notes,
    }


def describe(row: dict[str, Any]) -> str:
    """One printed line for one result row."""
    if "skipped" in row or "error" in row:
        return f"{row['name']:24} {row.get('skipped') or row['error']}"
    clip = "measured" if row["clip_measured"] else "from the slope"
    line = (
        f"{row['name']:24} per step {row['per_step_s']:7.3f} s  fixed {row['fixed_s']:6.2f} s  "
        f"first call {row['first_call_s']:6.2f} s  peak {row['peak_gib']:6.2f} GiB  "
        f"{row['clip_steps']}-step clip {row['clip_s']:7.2f} s ({clip}) = "
        f"{row['gpu_s_per_video_s']:.2f} GPU-s per video s"
    )
    return line + "".join(f"\n{'':26}note: {n}" for n in row["notes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, 1 and 2 steps: runs in seconds")
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all, in order)")
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after each configuration)")
    parser.add_argument("--cache-dir", type=Path, help="where the built shapes are saved (default: a temp folder)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cpu (--smoke: cpu)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per step count (the fastest is kept)")
    args = parser.parse_args()

    import diffusers
    import torch
    import transformers

    from moviegen.generation.device import pick_device
    from moviegen.generation.loading import quiet_loading_bars

    quiet_loading_bars()
    diffusers.utils.logging.set_verbosity_error()  # "expected UMT5EncoderModel": the stand-in, on purpose
    transformers.utils.logging.set_verbosity_error()
    wanted = [n for n in args.only.split(",") if n]
    unknown = sorted(set(wanted) - {c.name for c in CONFIGS})
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}: use {', '.join(c.name for c in CONFIGS)}")
    configs = [c for c in CONFIGS if not wanted or c.name in wanted]
    if not args.smoke and args.device == "auto" and not torch.cuda.is_available():
        # The real shapes on a CPU would take hours (run_all.py runs every benchmark with its defaults).
        print("no CUDA device: running --smoke (tiny shapes on the CPU); --device cpu forces the real shapes")
        args.smoke = True
    device = pick_device("cpu" if args.smoke else args.device)
    temporary = args.cache_dir is None
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    width, height, frames = SMOKE_SIZE if args.smoke else REAL_SIZE
    gpu = torch.cuda.get_device_name(device.name) if device.name.startswith("cuda") else "none"
    header = {
        "device": device.name,
        "gpu": gpu,
        "dtype": device.dtype_name,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "smoke": args.smoke,
        "note": "fixed seconds include the 2-layer 4096-wide T5 that stands in for UMT5-XXL (a real one costs more)",
    }
    print(
        f"{gpu if gpu != 'none' else 'CPU'} ({device.dtype_name}), torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}; Wan shapes at {width}x{height}, {frames} frames; per step = slope between two "
        "step counts, fixed = intercept\nnote: fixed seconds include the 2-layer 4096-wide T5 stand-in for "
        "UMT5-XXL's text encoding (a real UMT5-XXL costs more)",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    try:
        for config in configs:
            try:
                row = measure(config, device, cache_dir, args.smoke, max(1, args.repeats))
            except Exception as exc:  # one configuration's failure (out of memory, a missing kernel) is a result
                row = {"name": config.name, "shape": config.shape, "error": f"failed: {type(exc).__name__}: {exc}"}
                _free()
            results.append(row)
            print(describe(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps({**header, "configs": results}, indent=1, default=str))
    finally:
        if temporary:
            shutil.rmtree(cache_dir, ignore_errors=True)
    measured = [r for r in results if "per_step_s" in r and math.isfinite(r["per_step_s"])]
    print(f"{len(measured)} measured, {len(results) - len(measured)} skipped or failed", flush=True)


if __name__ == "__main__":
    main()
