"""Generation: load each model once per process, batch compatible clips, deterministic seeds.

Device and dtype are chosen at run time (CUDA when present, else Apple MPS, else the CPU);
nothing here assumes a GPU. GPU efficiency options (``PipelineOptions``: offload, VAE tiling,
torch.compile, First Block Cache) are applied when a pipeline is loaded, each only on a device
where it applies; what was skipped is logged and kept in ``PipelineCache.notes``.

Three tasks run through the same call: text-to-video, image-to-video (a row's ``reference_image``)
and video-to-video (a row's ``source_video``). A task that runs on the same weights as the loaded
checkpoint (Wan's or CogVideoX's video-to-video, LTX-Video's image-to-video) gets a pipeline built
over the loaded components, so no weights are loaded twice.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.models.registry import ModelRef, fingerprint_folder
from moviegen.models.tiny import local_location

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


@dataclass(frozen=True)
class Device:
    """Where and in which precision a pipeline runs."""

    name: str  # "cpu", "cuda", "cuda:1", "mps"
    dtype_name: str  # "float32", "bfloat16", "float16"

    @property
    def dtype(self):  # -> torch.dtype
        import torch

        return getattr(torch, self.dtype_name)


def pick_device(device: str = "auto", dtype: str = "auto") -> Device:
    """Choose the device and dtype at run time: bf16 on CUDA when supported, float32 on the CPU."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device == "mps":
            dtype = "float16"
        else:
            dtype = "float32"
    return Device(device, dtype)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one clip's pixels depend on (its clip_key is a hash of ``identity()`` and the model).

    Image-to-video (``task`` i2v) and video-to-video (v2v) requests carry their input's content
    hash, which is part of the identity, and its local path, which is not (a path says where a
    copy is, not what it holds).
    """

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    num_frames: int
    steps: int
    guidance: float
    task: str = "t2v"
    reference_sha256: str | None = None  # i2v: the reference image's content
    source_sha256: str | None = None  # v2v: the source clip's content
    strength: float | None = None  # v2v: how far the result may move away from the source (0-1)
    reference_path: str | None = field(default=None, compare=False)
    source_path: str | None = field(default=None, compare=False)
    fps: int | None = field(default=None, compare=False)  # the model's rate: LTX's frame_rate, the source's resampling

    def identity(self) -> dict[str, Any]:
        """What the clip_key hashes: the text-to-video fields as before, plus the conditioning when present."""
        values = asdict(self)
        for name in ("reference_path", "source_path", "fps"):
            values.pop(name)
        if values["task"] == "t2v":
            values.pop("task")
        return {k: v for k, v in values.items() if v is not None}

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with the same key can share one pipeline call (one reference image or source clip per call)."""
        return (
            self.width,
            self.height,
            self.num_frames,
            self.steps,
            self.guidance,
            self.task,
            self.reference_sha256,
            self.source_sha256,
            self.strength,
        )


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


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


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


def use_deterministic_algorithms(device: Device) -> None:
    """Ask torch for deterministic kernels (process-wide), for ``generation.deterministic``.

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when a handle is created: set it in the worker's environment
    for certainty; it is set here too for handles created later. Ops without a deterministic
    implementation warn rather than fail (``warn_only``), so a clip is never lost to this setting.
    """
    import torch

    if device.name.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter a clip asked for: its fetched safetensors file (by content) and scale."""

    sha256: str
    scale: float
    path: str = field(default="", compare=False)  # where the local copy is; says nothing of the content
    uri: str = field(default="", compare=False)  # what the catalog or configuration named (for the records)

    def identity(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "scale": self.scale}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


class PipelineCache:
    """Loads each model at most once per process and hands out the same pipeline afterwards.

    ``loads`` counts real loads per model location, so runs and benchmarks can check reuse. A
    pipeline with LoRA adapters is an entry of its own, loaded afresh: derived pipelines share their
    modules, and an adapter loaded into a shared transformer would reach rows that did not ask for it.
    """

    def __init__(self) -> None:
        self._pipes: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()
        self.loads: Counter[str] = Counter()
        self.notes: list[str] = []  # GPU options that did not apply on this device, and why

    def get(
        self,
        ref: ModelRef,
        device: Device,
        cache_dir: Path,
        allow_pickle: bool = False,
        task: str = "t2v",
        options: PipelineOptions | None = None,
        loras: tuple[LoraAdapter, ...] = (),
    ) -> Any:
        """The pipeline that runs ``task`` on ``ref``'s weights (with ``loras``), loading the weights at most once."""
        options = options or PipelineOptions()
        base_key = (ref.location, device.name, device.dtype_name, options, loras)
        with self._lock:
            if base_key not in self._pipes:
                pipe = load_pipeline(ref, device, cache_dir, allow_pickle)
                if loras:
                    load_loras(pipe, loras)
                self.notes += apply_pipeline_options(pipe, device, options)
                self._pipes[base_key] = pipe
                self.loads[ref.location] += 1
            base = self._pipes[base_key]
            cls_name = ref.pipeline_for(task)
            shift = ref.info.scheduler_shift
            if cls_name == type(base).__name__ and shift is None:
                return base
            key = (*base_key, cls_name, shift)
            if key not in self._pipes:
                self._pipes[key] = derive_pipeline(base, cls_name, device, options, scheduler_shift=shift)
            return self._pipes[key]

    def clear(self) -> None:
        with self._lock:
            self._pipes.clear()


_process_cache = PipelineCache()
# One lock per device: GPU-bound work is serialized per device even when tasks run in threads.
_device_locks: dict[str, threading.Lock] = {}
_device_locks_guard = threading.Lock()


def process_pipeline_cache() -> PipelineCache:
    """The pipeline cache shared by everything in this process."""
    return _process_cache


def device_lock(device: Device) -> threading.Lock:
    """The lock that serializes generation on one device."""
    with _device_locks_guard:
        return _device_locks.setdefault(device.name, threading.Lock())


def model_location(ref: ModelRef, cache_dir: Path) -> str:
    """What from_pretrained is given: the tiny model's saved folder, a local folder or a hub id."""
    return local_location(ref.location, cache_dir)


def model_revision(ref: ModelRef, cache_dir: Path) -> str:
    """The model's identity for clip keys: folder fingerprint, or the hub revision when cached locally."""
    return location_revision(model_location(ref, cache_dir))


def location_revision(location: str) -> str:
    """A folder's fingerprint, or a hub id's locally cached revision ("unresolved" when not downloaded)."""
    if Path(location).is_dir():
        return fingerprint_folder(Path(location))
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(location, local_files_only=True)
        return Path(folder).name
    except Exception:  # not downloaded yet: the id itself is all we know before loading
        return "unresolved"


def load_pipeline(ref: ModelRef, device: Device, cache_dir: Path, allow_pickle: bool = False) -> Any:
    """Load a video pipeline with from_pretrained (hub id or folder), honouring HF_HUB_OFFLINE.

    Only safetensors weights are accepted unless ``allow_pickle`` is set: pickle files can run code.
    The pipeline is left on the CPU: ``apply_pipeline_options`` moves it (or offloads it).
    """
    import diffusers
    import torch

    location = model_location(ref, cache_dir)
    extra: dict[str, Any] = {}
    if ref.info.family.name == "wan" and device.dtype != torch.float32:
        # Wan's VAE is numerically fragile in half precision; the reference setup keeps it in float32.
        check_safe_weights(ref.requested, location, allow_pickle)
        with _tiny_model_warnings_hidden(ref.is_tiny), _load_errors(ref.requested, location):
            extra["vae"] = diffusers.AutoencoderKLWan.from_pretrained(
                location, subfolder="vae", dtype=torch.float32, use_safetensors=None if allow_pickle else True
            )
    return from_pretrained(ref.info.weights_class, ref.requested, location, device, allow_pickle, ref.is_tiny, **extra)


def check_safe_weights(requested: str, location: str, allow_pickle: bool) -> None:
    """Refuse a local folder with pickle weights (they can run code when loaded) unless allowed."""
    if allow_pickle or not Path(location).is_dir():
        return
    pickled = sorted(str(p.relative_to(location)) for p in Path(location).rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(
            f"model {requested!r} has pickle weights ({', '.join(pickled[:3])}), which can run code when "
            "loaded: convert them to safetensors, or set generation.allow_pickle: true if you trust the source"
        )


def from_pretrained(
    pipeline_class: str,
    requested: str,
    location: str,
    device: Device,
    allow_pickle: bool = False,
    tiny: bool = False,
    **components: Any,
) -> Any:
    """Load any diffusers pipeline class by name (video or audio), safetensors only unless allowed."""
    import diffusers

    check_safe_weights(requested, location, allow_pickle)
    pipeline_cls = getattr(diffusers, pipeline_class)
    # None lets diffusers prefer safetensors and fall back to pickle files; True refuses pickle.
    kwargs: dict[str, Any] = {"dtype": device.dtype, "use_safetensors": None if allow_pickle else True, **components}
    log.info("loading %s from %s on %s (%s)", requested, location, device.name, device.dtype_name)
    quiet_loading_bars()
    with _tiny_model_warnings_hidden(tiny), _load_errors(requested, location):
        pipe = pipeline_cls.from_pretrained(location, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def _load_errors(requested: str, location: str) -> Iterator[None]:
    """Turn from_pretrained's errors into a ModelLoadError that says what to do."""
    try:
        yield
    except OSError as exc:
        if Path(location).exists():
            hint = "check that the folder was written by save_pretrained with safetensors weights"
        elif os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            hint = f"the hub is offline (HF_HUB_OFFLINE): download it first (`hf download {location}`)"
        else:
            hint = f"download it first (`hf download {location}`) or point model at a local folder"
        raise ModelLoadError(f"cannot load model {requested!r} from {location}: {exc}. {hint}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"cannot load model {requested!r}: {exc}") from exc


def derive_pipeline(
    base: Any, pipeline_class: str, device: Device, options: PipelineOptions, scheduler_shift: float | None = None
) -> Any:
    """Another task's pipeline (or the same one with its own scheduler shift) over the loaded components.

    No weights are copied or loaded. Built directly rather than with ``from_pipe``, which would cast
    every shared module to one dtype (Wan keeps its VAE in float32). A distilled registry entry's
    ``scheduler_shift`` gets a scheduler of its own, so the base model's rows keep theirs.
    """
    import diffusers

    cls = getattr(diffusers, pipeline_class)
    accepted = inspect.signature(cls.__init__).parameters
    components = {name: module for name, module in base.components.items() if name in accepted}
    if scheduler_shift is not None and "scheduler" in components:
        components["scheduler"] = shifted_scheduler(components["scheduler"], scheduler_shift)
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    if options.offload != "none" and device.name.startswith("cuda"):
        offload_derived(pipe, device, options.offload)
    return pipe


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
    # 5. Step cache: reuse the transformer's outputs across denoising steps (moviegen.models.caches).
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
    from moviegen.models.caches import steps_dependent

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
    from moviegen.models.caches import cache_config

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
def _step_cache_usable(pipe: Any) -> Iterator[None]:
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


def call_arguments(pipe: Any, request: GenerationRequest) -> dict[str, Any]:
    """The task's and family's own arguments: the frame count or the source clip, the reference image,
    the edit strength, LTX-Video's frame rate and decode noise."""
    from PIL import Image

    from moviegen.conditioning import load_reference_image, read_source_clip

    accepted = inspect.signature(pipe.__call__).parameters
    size = (request.width, request.height)
    kwargs: dict[str, Any] = {}
    if request.task == "v2v":
        if request.source_path is None or request.fps is None:
            raise ValueError("a video-to-video request needs its source clip's local path and the model's fps")
        frames = read_source_clip(Path(request.source_path), size, request.fps, request.num_frames)
        kwargs["video"] = [Image.fromarray(f) for f in frames]
        kwargs["strength"] = request.strength if request.strength is not None else 0.6
    else:
        kwargs["num_frames"] = request.num_frames
    if request.task == "i2v":
        if request.reference_path is None:
            raise ValueError("an image-to-video request needs its reference image's local path")
        kwargs["image"] = load_reference_image(Path(request.reference_path), size)
    if "frame_rate" in accepted and request.fps:
        kwargs["frame_rate"] = request.fps
    vae_config = getattr(getattr(pipe, "vae", None), "config", None)
    if "decode_timestep" in accepted and getattr(vae_config, "timestep_conditioning", False):
        # LTX-Video 0.9.1+ decodes with a little noise: the values its model card recommends.
        kwargs.update(decode_timestep=0.05, decode_noise_scale=0.025)
    return kwargs


@dataclass(frozen=True)
class GeneratedClip:
    """One clip's frames as uint8 RGB (F, H, W, 3) and the share of values that were not finite."""

    frames: np.ndarray
    nan_fraction: float


def quiet_loading_bars() -> None:
    """Loading bars from diffusers and transformers would scribble over the run's own progress bar."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def _tiny_model_warnings_hidden(hide: bool) -> Iterator[None]:
    """The tiny model's T5 encoder stands in for Wan's UMT5 on purpose; diffusers' warning about it is noise."""
    import diffusers

    if not hide:
        yield
        return
    before = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(before)


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
    with device_lock(device), torch.inference_mode(), _step_cache_usable(pipe):
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
