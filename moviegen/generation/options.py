"""GPU options applied to a loaded pipeline: offload, VAE tiling, step caches, float8, LoRAs, distilled schedulers."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moviegen.generation.device import Device, ModelLoadError
from moviegen.spec import LoraAdapter, _hashable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """GPU efficiency options applied when a pipeline is loaded (see GenerationSettings for each).

    ``identity()`` names the ones that change pixels (a step cache approximates, tiled decoding
    blends tile seams, float8 weights round): they are part of every clip_key made with them.
    Offload, compile and the attention backend only change speed and memory.
    """

    offload: str = "none"
    vae_tiling: bool = False
    compile: bool = False
    cache: str = "none"
    cache_threshold: float = 0.05
    cache_options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs: hashable, order-free
    attention_backend: str | None = None
    quantize: str = "none"

    @classmethod
    def from_settings(cls, settings: Any) -> PipelineOptions:
        return cls(
            offload=settings.offload,
            vae_tiling=settings.vae_tiling,
            compile=settings.compile,
            cache=settings.cache,
            cache_threshold=settings.cache_threshold,
            cache_options=tuple(sorted((k, _hashable(v)) for k, v in settings.cache_options.items())),
            attention_backend=settings.attention_backend,
            quantize=settings.quantize,
        )

    def identity(self) -> tuple[tuple[str, str], ...]:
        ident: list[tuple[str, str]] = []
        if self.cache != "none":
            # First Block Cache alone keeps the identity it always had (its clip_keys stay valid).
            settings = "".join(f",{k}={v}" for k, v in self.cache_options)
            ident.append(("cache", f"{self.cache}:{self.cache_threshold:g}{settings}"))
        if self.vae_tiling:
            ident.append(("vae_tiling", "on"))
        if self.quantize != "none":
            ident.append(("quantize", self.quantize))
        return tuple(ident)


def shifted_scheduler(scheduler: Any, shift: float) -> Any:
    """A copy of a flow-matching scheduler with another timestep shift (``shift`` or ``flow_shift``)."""
    config = dict(scheduler.config)
    name = "flow_shift" if "flow_shift" in config else "shift"
    if name not in config:
        raise ModelLoadError(f"{type(scheduler).__name__} has no timestep shift to set (scheduler_shift {shift})")
    return type(scheduler).from_config({**config, name: shift})


def offload_derived(pipe: Any, device: Device, mode: str) -> None:
    """Offload hooks for a derived pipeline, whose modules are those of the loaded one.

    Model and sequential offload hooks belong to the pipeline (they follow its own order of models),
    so they are set again. Group offload hooks belong to each module and are already there: setting
    them again fails ("Hook with name lazy_prefetch_group_offloading already exists"), so only modules
    that have none get them.
    """
    if mode != "group":
        _offload(pipe, device, mode)
        return
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    for name, module in pipe.components.items():
        if _is_torch_module(module) and not _is_group_offload_enabled(module):
            log.info("group offload for %s of the derived %s", name, type(pipe).__name__)
            _group_offload_module(module, device)


def _is_torch_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def apply_pipeline_options(pipe: Any, device: Device, options: PipelineOptions) -> list[str]:
    """Move the pipeline to its device (or offload it) and apply the GPU efficiency options.

    Each option applies only where it can: offload, torch.compile and float8 weights on CUDA
    (skipped elsewhere, with a note), VAE tiling, the step caches and the attention backend
    everywhere. Returns the notes of what was skipped.
    """
    notes: list[str] = []
    cuda = device.name.startswith("cuda")
    name = type(pipe).__name__
    transformer = getattr(pipe, "transformer", None)
    # 1. Weights: float8 through torchao before placement, so only the quantized weights reach the GPU.
    if options.quantize == "float8":
        notes += quantize_float8(transformer, device, name)
    # 2. Placement: on the device, or offloaded to the CPU between uses.
    if options.offload != "none" and not cuda:
        notes.append(f"offload={options.offload} applies to CUDA only: {name} runs on {device.name} as is")
    if options.offload != "none" and cuda:
        _offload(pipe, device, options.offload)
    else:
        pipe.to(device.name)
    # 3. VAE tiling: decode (and encode) in overlapping tiles, so 720p+ frames fit in less memory.
    vae = getattr(pipe, "vae", None)
    if options.vae_tiling:
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        else:
            notes.append(f"vae_tiling: {name}'s VAE has no tiled mode")
    # 4. Attention backend: diffusers' dispatcher (none: PyTorch's SDPA picks, cuDNN on an H200).
    if options.attention_backend:
        if hasattr(transformer, "set_attention_backend"):
            transformer.set_attention_backend(options.attention_backend)
        else:
            notes.append(f"attention_backend: {name}'s transformer does not take diffusers' attention backends")
    # 5. Step cache: reuse the transformer's outputs across denoising steps (moviegen.step_caches).
    if options.cache != "none":
        if hasattr(transformer, "enable_cache"):
            enable_step_cache(pipe, options, steps=None)
        else:
            notes.append(f"cache={options.cache}: {name}'s transformer does not support diffusers' cache hooks")
    # 6. torch.compile: worth its compile time on CUDA only; repeated blocks compile once and are reused.
    if options.compile:
        if not cuda:
            notes.append(f"compile applies to CUDA only: {name} runs uncompiled on {device.name}")
        elif getattr(transformer, "_repeated_blocks", None):
            transformer.compile_repeated_blocks(fullgraph=True)
        elif transformer is not None:
            transformer.compile(fullgraph=False)
    for note in notes:
        log.warning(note)
    return notes


def enable_step_cache(pipe: Any, options: PipelineOptions, steps: int | None) -> None:
    """Turn the configured step cache on for the pipeline's transformer (again, when the steps changed).

    MagCache's config depends on the call's step count: it is set when the first call's steps are
    known (``steps`` None defers it) and again whenever they change.
    """
    from moviegen.step_caches import steps_dependent

    transformer = pipe.transformer
    transformer._moviegen_cache = options
    enabled = getattr(transformer, "_cache_config", None) is not None
    if not steps_dependent(options.cache):
        if not enabled:
            transformer.enable_cache(_cache_config_of(pipe, options, 50))
    elif steps is not None and getattr(transformer, "_moviegen_cache_steps", None) != steps:
        if enabled:
            transformer.disable_cache()
        transformer.enable_cache(_cache_config_of(pipe, options, steps))
        transformer._moviegen_cache_steps = steps


def _cache_config_of(pipe: Any, options: PipelineOptions, steps: int) -> Any:
    from moviegen.step_caches import cache_config

    return cache_config(
        options.cache,
        options.cache_threshold,
        {k: list(v) if isinstance(v, tuple) else v for k, v in options.cache_options},
        steps=steps,
        current_timestep=lambda: int(getattr(pipe, "current_timestep", 0) or 0),
    )


def quantize_float8(transformer: Any, device: Device, name: str) -> list[str]:
    """Float8 weights (per-row scales, bf16 compute) for the transformer through torchao, on CUDA only."""
    if not device.name.startswith("cuda"):
        return [f"quantize=float8 applies to CUDA only: {name} keeps its {device.dtype_name} weights on {device.name}"]
    try:
        from torchao.quantization import Float8WeightOnlyConfig, quantize_
    except ImportError:
        raise ModelLoadError(
            "quantize: float8 needs torchao: pip install 'moviegen[float8]' (or set generation.quantize: none)"
        ) from None
    quantize_(transformer, Float8WeightOnlyConfig())
    return []


def load_loras(pipe: Any, loras: tuple[LoraAdapter, ...]) -> None:
    """Load LoRA adapters (safetensors files) with diffusers' LoRA loader and set their scales.

    Needs the pipeline family's LoRA loader mixin (Wan, LTX-Video and CogVideoX have one) and peft.
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelLoadError(f"{type(pipe).__name__} cannot load LoRA adapters: remove loras for this model")
    names = []
    for i, lora in enumerate(loras):
        name = f"lora{i}_{lora.sha256[:12]}"
        try:
            pipe.load_lora_weights(lora.path, adapter_name=name, use_safetensors=True)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"LoRA {lora.uri or lora.path} does not fit {type(pipe).__name__}: {exc}. Use an adapter trained for "
                "this model"
            ) from None
        names.append(name)
    pipe.set_adapters(names, [lora.scale for lora in loras])


def _offload(pipe: Any, device: Device, mode: str) -> None:
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device.name)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device.name)
    elif mode == "group":
        for module in pipe.components.values():
            if _is_torch_module(module):
                _group_offload_module(module, device)
    else:
        raise ValueError(f"unknown offload mode {mode!r}: use none, model, sequential or group")


def _group_offload_module(module: Any, device: Device) -> None:
    """Leaf-level group offload of one module, prefetching on a CUDA stream where there is one."""
    import torch
    from diffusers.hooks import apply_group_offloading

    kwargs = {
        "onload_device": torch.device(device.name),
        "offload_device": torch.device("cpu"),
        "offload_type": "leaf_level",
        "use_stream": device.name.startswith("cuda"),
    }
    if hasattr(module, "enable_group_offload"):  # diffusers models (which check they support it first)
        module.enable_group_offload(**kwargs)
    else:  # transformers' text and image encoders
        apply_group_offloading(module, **kwargs)


@contextmanager
def step_cache_usable(pipe: Any) -> Iterator[None]:
    """Pause the transformer's step cache for a pipeline that does not mark its denoiser calls.

    Cache hooks keep separate state for the conditional and unconditional passes, which the
    pipeline names with ``transformer.cache_context``; one that does not (WanVideoToVideoPipeline
    in diffusers 0.42) runs uncached rather than mixing the two passes' states.
    """
    transformer = getattr(pipe, "transformer", None)
    config = getattr(transformer, "_cache_config", None)
    if config is None or _marks_cache_context(type(pipe)):
        yield
        return
    log.info("%s does not mark cache contexts: running it without the step cache", type(pipe).__name__)
    transformer.disable_cache()
    try:
        yield
    finally:
        transformer.enable_cache(config)


@functools.cache
def _marks_cache_context(pipeline_cls: type) -> bool:
    try:
        return "cache_context" in inspect.getsource(pipeline_cls.__call__)
    except (OSError, TypeError):  # no source to read: trust the pipeline
        return True
