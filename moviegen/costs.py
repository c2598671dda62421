"""What a campaign will cost before it runs: a per-model cost model, calibrated from real runs.

Problem: GPU time is the bill of a text-to-video campaign, and it varies by two orders of
magnitude between a 1-second clip on a small model and a 10-second clip on a 14B one. Counting
rows says nothing about it.

Solution: every run records what each clip really took in ``timings/`` (a Parquet dataset under
the output root). The cost of a clip is modelled as

    seconds = per_unit_s * frames * width * height * steps / 1e9 + per_clip_s

per model and device kind, fitted to those records (least squares; a prior from published
figures until a model has records). Renditions cost per output pixel-frame the same way. The
shard planner (``moviegen.run.shards``) balances shards with the same numbers ``moviegen plan``
prints, so the estimate and the schedule cannot disagree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from moviegen.store import OutputRoot

TIMINGS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        # "generate": one clip's share of its batch; "render": one rendition from encode to publish
        # (watermark, provenance and delivery gate included); "load": one model load;
        # "shard": a shard's fixed cost (queueing, process start, imports), as the campaign saw it.
        ("kind", pa.string()),
        ("model", pa.string()),  # registry name (generate, load), channel (render), None (shard)
        ("item", pa.string()),  # campaign_id/clip_id (generate, render), shard id (shard)
        ("device", pa.string()),  # "cpu", "cuda", "mps" (the kind, not the index)
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("frames", pa.int32()),
        ("steps", pa.int32()),
        ("seconds", pa.float64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)

GENERATE, RENDER, LOAD, SHARD = "generate", "render", "load", "shard"
# Fits use each model's most recent records only, so a faster driver or GPU shows up soon.
MAX_SAMPLES = 500


def work_units(width: int, height: int, frames: int, steps: int = 1) -> float:
    """Frames x pixels x denoising steps, in billions: the cost model's unit of work."""
    return frames * width * height * steps / 1e9


def device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``: timings are pooled per kind of device."""
    return device.split(":", 1)[0]


@dataclass(frozen=True)
class Rate:
    """Seconds for one item: ``per_unit_s * units + per_item_s``, and where those numbers come from."""

    per_unit_s: float
    per_item_s: float = 0.0
    samples: int = 0
    source: str = "prior"

    def seconds(self, units: float) -> float:
        return self.per_unit_s * units + self.per_item_s


# Priors until a model has timings of its own. Real models: one data-centre-class GPU, from the
# model cards' figures (Wan2.1-T2V-1.3B: a 5 s 480p clip in about 4 minutes on an RTX 4090;
# Wan2.2-TI2V-5B: 5 s of 720p in under 9 minutes on one); the 14B by its parameter count. The tiny
# model: measured on the development machine's CPU. These are rough: calibrate with one real run.
PRIOR_GENERATE: dict[tuple[str, str], Rate] = {
    ("tiny-wan", "cpu"): Rate(2.5, 0.3),
    ("tiny-wan", "cuda"): Rate(0.1, 0.05),
    ("wan2.1-t2v-1.3b", "cuda"): Rate(148.0, 5.0),
    ("wan2.1-t2v-14b", "cuda"): Rate(1500.0, 20.0),
    ("wan2.1-i2v-14b-480p", "cuda"): Rate(1500.0, 20.0),  # the 14B's size, image-conditioned
    ("wan2.1-i2v-14b-720p", "cuda"): Rate(1500.0, 20.0),
    ("wan2.2-ti2v-5b", "cuda"): Rate(99.0, 10.0),
}
# Unregistered models (a hub id or folder) fall back to the most expensive prior of the device.
PRIOR_RENDER: dict[str, Rate] = {"cpu": Rate(0.02, 0.4), "cuda": Rate(0.02, 0.4), "mps": Rate(0.02, 0.4)}
# CPU seconds of one rendition (render, watermark embed, provenance, delivery gate, poster) until a
# run has recorded its own, fitted to benchmarks/bench_postprocess.py on the development machine's
# CPU: 5 s at 30 fps, 30.3 s for 1080x1920, 29.8 s for 1920x1080, 21.7 s for 1080x1350
# (docs/scale-out.md, "Sizing render_workers for a fast GPU").
PRIOR_RENDITION_CPU = Rate(90.0, 2.0, source="prior (bench_postprocess.py)")
# Process start, imports and a shard's bookkeeping; a model load is added once per model per shard.
PRIOR_SHARD_S = 12.0
PRIOR_LOAD_S: dict[str, float] = {"tiny-wan": 2.0, "wan2.1-t2v-1.3b": 40.0, "wan2.1-t2v-14b": 180.0}
DEFAULT_LOAD_S = 90.0


@dataclass
class CostModel:
    """Per-model generation rates, the render rate and fixed costs for one kind of device."""

    device: str
    generate: dict[str, Rate] = field(default_factory=dict)
    render: Rate = field(default_factory=lambda: PRIOR_RENDER["cuda"])
    shard_s: float = PRIOR_SHARD_S
    shard_samples: int = 0
    load_s: dict[str, float] = field(default_factory=lambda: dict(PRIOR_LOAD_S))

    def rate(self, model: str) -> Rate:
        """The generation rate of a model (its own records, else its prior, else the device's slowest prior)."""
        if model in self.generate:
            return self.generate[model]
        prior = PRIOR_GENERATE.get((model, self.device)) or PRIOR_GENERATE.get((model, "cuda"))
        if prior is not None:
            return prior
        same_device = [r for (_, d), r in PRIOR_GENERATE.items() if d == self.device] or list(PRIOR_GENERATE.values())
        return max(same_device, key=lambda r: r.per_unit_s)

    def generate_seconds(self, model: str, width: int, height: int, frames: int, steps: int) -> float:
        return self.rate(model).seconds(work_units(width, height, frames, steps))

    def render_seconds(self, width: int, height: int, frames: int) -> float:
        return self.render.seconds(work_units(width, height, frames))

    def rendition_cpu_seconds(self, width: int, height: int, frames: int) -> float:
        """CPU seconds of one rendition (encode to delivery gate): the recorded render rate when there
        is one (a rendition holds one render slot, about one core), else the measured CPU prior."""
        rate = self.render if self.render.samples else PRIOR_RENDITION_CPU
        return rate.seconds(work_units(width, height, frames))

    def model_load_s(self, model: str) -> float:
        return self.load_s.get(model, DEFAULT_LOAD_S)

    def describe(self) -> dict[str, Any]:
        """Where every number comes from, for ``moviegen plan --json``."""
        return {
            "device": self.device,
            "generate": {m: vars(r) for m, r in sorted(self.generate.items())},
            "render": vars(self.render),
            "shard_overhead_s": round(self.shard_s, 3),
            "shard_overhead_samples": self.shard_samples,
        }


def fit_rate(samples: Iterable[tuple[float, float]], source: str) -> Rate | None:
    """Least-squares ``seconds = a * units + b`` (a > 0, b >= 0) over (units, seconds) pairs."""
    pairs = [(u, s) for u, s in samples if u > 0 and s >= 0]
    if not pairs:
        return None
    n = len(pairs)
    mean_u = sum(u for u, _ in pairs) / n
    mean_s = sum(s for _, s in pairs) / n
    var_u = sum((u - mean_u) ** 2 for u, _ in pairs)
    if var_u > 1e-12 * max(mean_u, 1e-12) ** 2 and n >= 2:
        a = sum((u - mean_u) * (s - mean_s) for u, s in pairs) / var_u
        b = mean_s - a * mean_u
        if a > 0 and b >= 0:
            return Rate(a, b, n, source)
    # One size of clip only (or a fit that makes no sense): charge everything per unit.
    return Rate(mean_s / mean_u, 0.0, n, source)


def load_cost_model(out: OutputRoot | None = None, device: str | None = None) -> CostModel:
    """The cost model for ``device`` (a kind: cpu, cuda, mps), calibrated from ``out``'s ``timings/``.

    Without a device, the kind most of the recorded clips ran on is used (``cuda`` when nothing is
    recorded). Models without records keep their prior.
    """
    rows = out.read_rows("timings", TIMINGS_SCHEMA).to_pylist() if out is not None else []
    if device is None:
        kinds = Counter(r["device"] for r in rows if r["kind"] == GENERATE)
        device = kinds.most_common(1)[0][0] if kinds else "cuda"
    device = device_kind(device)
    rows = sorted((r for r in rows if r["device"] == device), key=lambda r: r["recorded_at"], reverse=True)
    model = CostModel(device=device, render=PRIOR_RENDER.get(device, PRIOR_RENDER["cuda"]))
    by_model: dict[str, list[tuple[float, float]]] = {}
    renders: list[tuple[float, float]] = []
    shards: list[float] = []
    loads: dict[str, list[float]] = {}
    for r in rows:
        if r["kind"] == GENERATE and len(by_model.setdefault(r["model"], [])) < MAX_SAMPLES:
            by_model[r["model"]].append((work_units(r["width"], r["height"], r["frames"], r["steps"]), r["seconds"]))
        elif r["kind"] == RENDER and len(renders) < MAX_SAMPLES:
            renders.append((work_units(r["width"], r["height"], r["frames"]), r["seconds"]))
        elif r["kind"] == SHARD and len(shards) < MAX_SAMPLES:
            shards.append(r["seconds"])
        elif r["kind"] == LOAD and len(loads.setdefault(r["model"], [])) < MAX_SAMPLES:
            loads[r["model"]].append(r["seconds"])
    for name, samples in by_model.items():
        rate = fit_rate(samples, f"calibrated from {len(samples)} clips")
        if rate is not None:
            model.generate[name] = rate
    model.render = fit_rate(renders, f"calibrated from {len(renders)} renditions") or model.render
    if shards:  # medians: one slow start is noise
        model.shard_s, model.shard_samples = _median(shards), len(shards)
    for name, seconds in loads.items():
        model.load_s[name] = _median(seconds)
    return model


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def timing_row(
    run_id: str,
    kind: str,
    model: str | None,
    item: str | None,
    device: str,
    seconds: float,
    recorded_at: datetime,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """One row of ``timings/``."""
    return {
        "run_id": run_id,
        "kind": kind,
        "model": model,
        "item": item,
        "device": device_kind(device),
        "width": width,
        "height": height,
        "frames": frames,
        "steps": steps,
        "seconds": float(seconds),
        "recorded_at": recorded_at,
    }


# Sizing render_workers so a fast GPU never waits for post-processing -----------------------------


@dataclass(frozen=True)
class RenderSizing:
    """How many render workers a GPU worker needs, and whether its cores can keep its GPU busy."""

    cores: int  # the worker's CPU cores (its affinity)
    clip_seconds_gpu: float  # GPU seconds per clip
    renditions_per_clip: float
    cpu_seconds_per_rendition: float
    available: int  # cores left for renditions: one is kept for the generation feeder
    needed: float  # cores' worth of rendition work per GPU second
    render_workers: int  # what to set
    cpu_bound: bool  # the GPU would wait for renditions: more cores, fewer renditions, or a slower GPU

    def to_json(self) -> dict[str, Any]:
        floats = ("clip_seconds_gpu", "renditions_per_clip", "cpu_seconds_per_rendition", "needed")
        return {k: round(v, 3) if k in floats else v for k, v in vars(self).items()}


def render_workers_for(
    cores: int, clip_seconds_gpu: float, renditions_per_clip: float, cpu_seconds_per_rendition: float
) -> RenderSizing:
    """Size ``render_workers`` so renditions keep up with generation on one GPU.

    The rule: a clip's renditions take ``renditions_per_clip * cpu_seconds_per_rendition`` CPU
    seconds while the GPU makes the next clip in ``clip_seconds_gpu`` seconds, so

        needed = renditions_per_clip * cpu_seconds_per_rendition / clip_seconds_gpu   (cores)
        available = cores - 1   (one core feeds the GPU: text encoding, latents, frame copies)
        render_workers = max(1, min(available, ceil(needed)))

    and the worker is CPU-bound (its GPU waits for renditions) when ``needed > available``. Each
    rendition is about one core's work (one ffmpeg pass, the embed between its decode and encode),
    so a worker per core needed is the right count; more would only contend for the same cores.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if clip_seconds_gpu <= 0:
        raise ValueError(f"clip_seconds_gpu must be positive, got {clip_seconds_gpu}")
    if renditions_per_clip < 0 or cpu_seconds_per_rendition < 0:
        raise ValueError("renditions_per_clip and cpu_seconds_per_rendition cannot be negative")
    available = max(1, cores - 1)
    needed = renditions_per_clip * cpu_seconds_per_rendition / clip_seconds_gpu
    workers = max(1, min(available, math.ceil(needed - 1e-9)))
    return RenderSizing(
        cores, clip_seconds_gpu, renditions_per_clip, cpu_seconds_per_rendition, available, needed, workers,
        needed > available,
    )  # fmt: skip
