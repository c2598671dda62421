"""Batches of clips through a loaded pipeline: batch sizes, frames per call, the call's arguments."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.generation.device import Device, device_lock
from moviegen.generation.options import enable_step_cache, step_cache_usable
from moviegen.models.registry import ModelRef, family_of_pipeline
from moviegen.spec import DEFAULT_EDIT_STRENGTH, GenerationRequest

# Clips per pipeline call with ``batch_size: auto`` on the tiny built-in models: batches of 4 made
# them 1.26-1.71x faster per clip on a 2-core CPU (benchmarks/bench_orchestration.py). Full-size video
# transformers get one clip per call: on an H200 a batch of 2 gave 0.97x the throughput of one at
# 1.7x the memory, so batching only costs there.
AUTO_TINY_BATCH = 4


def batch_size_for(settings: Any, device: Device, ref: ModelRef) -> int:
    """Clips per pipeline call on this machine: ``generation.batch_size``, or what ``auto`` resolves to.

    ``deterministic`` always means one clip per call: on CUDA a clip's pixels depend slightly on the
    batch it runs in, so only one clip per call gives the same pixels on every rerun.
    """
    if settings.batch_size == "auto" and not ref.is_tiny:
        return 1
    return grouping_batch_size(settings)


def grouping_batch_size(settings: Any) -> int:
    """How many clips of one batch key a shard plan keeps together, before any worker's device is known.

    A number is used as is; ``auto`` keeps up to ``AUTO_TINY_BATCH`` alike clips on one worker, which
    then cuts them into the calls its own device takes (``batch_size_for``).
    """
    if settings.deterministic:
        return 1
    return AUTO_TINY_BATCH if settings.batch_size == "auto" else int(settings.batch_size)


def frames_per_call_limit(pipe: Any) -> int | None:
    """The most frames one call of this pipeline can make, from its transformer's own configuration.

    Wan's rotary embedding covers ``rope_max_seq_len`` latent frames (4 video frames each, after the
    first): beyond that its positions run out ("shape '[41, 1, 1, -1]' is invalid"). Other families
    have no such limit in their configuration (None).
    """
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    rope = getattr(config, "rope_max_seq_len", None)
    if rope is None:
        return None
    patch_t = (getattr(config, "patch_size", None) or (1,))[0]
    return (int(rope) * int(patch_t) - 1) * int(getattr(pipe, "vae_scale_factor_temporal", 4)) + 1


def call_arguments(pipe: Any, request: GenerationRequest) -> dict[str, Any]:
    """The task's and family's own arguments: the frame count or the source clip, the reference image,
    the edit strength, LTX-Video's frame rate and decode noise."""
    from PIL import Image

    from moviegen.generation.conditioning import load_reference_image, read_source_clip

    accepted = inspect.signature(pipe.__call__).parameters
    size = (request.width, request.height)
    kwargs: dict[str, Any] = {}
    if request.task == "v2v":
        if request.source_path is None or request.fps is None:
            raise ValueError("a video-to-video request needs its source clip's local path and the model's fps")
        frames = read_source_clip(Path(request.source_path), size, request.fps, request.num_frames)
        kwargs["video"] = [Image.fromarray(f) for f in frames]
        kwargs["strength"] = request.strength if request.strength is not None else DEFAULT_EDIT_STRENGTH
    else:
        kwargs["num_frames"] = request.num_frames
    if request.task == "i2v":
        if request.reference_path is None:
            raise ValueError("an image-to-video request needs its reference image's local path")
        kwargs["image"] = load_reference_image(Path(request.reference_path), size)
    if "frame_rate" in accepted and request.fps:
        kwargs["frame_rate"] = request.fps
    family = family_of_pipeline(type(pipe).__name__)
    if family is not None:
        kwargs.update({k: v for k, v in family.call_options(pipe).items() if k in accepted})
    return kwargs


@dataclass(frozen=True)
class GeneratedClip:
    """One clip's frames as uint8 RGB (F, H, W, 3) and the share of values that were not finite."""

    frames: np.ndarray
    nan_fraction: float


def generate_batch(pipe: Any, requests: list[GenerationRequest], device: Device) -> list[GeneratedClip]:
    """Run one pipeline call for requests that share a batch key.

    Each clip gets its own generator seeded from its seed, so a clip's noise does not depend on
    which other clips share its batch (its pixels do not either on the CPU; on CUDA in bf16 the
    kernels chosen for a batch shape can change them slightly: docs/models.md, "Pixels on a GPU").
    Non-finite values are zeroed and reported (the quality gate rejects such clips) rather than
    silently becoming black frames.
    """
    import torch

    if not requests:
        return []
    keys = {r.batch_key() for r in requests}
    if len(keys) != 1:
        raise ValueError(
            f"requests in one batch must share width, height, frames, steps, guidance and conditioning: {keys}"
        )
    first = requests[0]
    if first.task != "t2v" and len(requests) > 1:
        # The image- and video-conditioned pipelines differ in how they pair one input with several
        # prompts (LTX and CogVideoX index it per prompt); one call per clip is right for all of them.
        return [clip for r in requests for clip in generate_batch(pipe, [r], device)]
    limit = frames_per_call_limit(pipe)
    if limit is not None and first.task != "v2v" and first.num_frames > limit:
        raise ValueError(
            f"{type(pipe).__name__} can make at most {limit} frames per call (its transformer's configuration); "
            f"{first.num_frames} were asked for: lower the model's max_frames (longer rows are extended)"
        )
    options = getattr(getattr(pipe, "transformer", None), "_moviegen_cache", None)
    if options is not None:  # MagCache is set for each call's step count
        enable_step_cache(pipe, options, first.steps)
    generator_device = "cpu" if device.name == "mps" else device.name
    generators = [torch.Generator(generator_device).manual_seed(r.seed) for r in requests]
    kwargs = call_arguments(pipe, first)
    with device_lock(device), torch.inference_mode(), step_cache_usable(pipe):
        out = pipe(
            prompt=[r.prompt for r in requests],
            negative_prompt=[r.negative_prompt for r in requests],
            height=first.height,
            width=first.width,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            generator=generators,
            output_type="np",
            **kwargs,
        )
    clips = []
    for clip in np.asarray(out.frames, dtype=np.float32):  # (B, F, H, W, 3) floats in [0, 1]
        finite = np.isfinite(clip)
        nan_fraction = float(1.0 - finite.mean())
        clip = np.where(finite, clip, 0.0)
        clips.append(GeneratedClip(np.clip(np.rint(clip * 255.0), 0, 255).astype(np.uint8), nan_fraction))
    return clips
