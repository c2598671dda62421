"""The one loader and cache for diffusers, transformers and CLIP models: safe weights, revisions, derived pipelines."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from moviegen.generation.device import Device, ModelLoadError
from moviegen.generation.options import (
    PipelineOptions,
    apply_pipeline_options,
    load_loras,
    offload_derived,
    shifted_scheduler,
)
from moviegen.models.registry import ModelRef, fingerprint_folder
from moviegen.models.tiny import local_location
from moviegen.spec import LoraAdapter

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}

T = TypeVar("T")


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


class LoadedModels:
    """Audio pipelines, CLIP scorers and moderators, each loaded at most once per process and key.

    Video pipelines have their own cache (PipelineCache: options, adapters, derived pipelines);
    everything else a run loads goes through here, so there is one rule for what is reused.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self.loads: Counter[str] = Counter()  # real loads per kind of model

    def get(self, key: tuple[Any, ...], load: Callable[[], T]) -> T:
        """The model stored under ``key`` (its first item names the kind), loading it on first use."""
        with self._lock:
            if key not in self._models:
                self._models[key] = load()
                self.loads[key[0]] += 1
            return self._models[key]


_process_cache = PipelineCache()
_loaded_models = LoadedModels()


def loaded_models() -> LoadedModels:
    """The audio, CLIP and moderator models shared by everything in this process."""
    return _loaded_models


def process_pipeline_cache() -> PipelineCache:
    """The pipeline cache shared by everything in this process."""
    return _process_cache


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
    vae_class = ref.info.family.full_precision_vae
    if vae_class and device.dtype != torch.float32:
        with _loading(ref.requested, location, device, allow_pickle, ref.is_tiny) as kwargs:
            extra["vae"] = getattr(diffusers, vae_class).from_pretrained(
                location, subfolder="vae", **{**kwargs, "dtype": torch.float32}
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

    pipeline_cls = getattr(diffusers, pipeline_class)
    log.info("loading %s from %s on %s (%s)", requested, location, device.name, device.dtype_name)
    with _loading(requested, location, device, allow_pickle, tiny) as kwargs:
        pipe = pipeline_cls.from_pretrained(location, **kwargs, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def transformers_from_pretrained(
    model_class: Any, requested: str, location: str, device: Device, allow_pickle: bool
) -> Any:
    """Load a transformers model (CLIP, a guard model) the way ``from_pretrained`` loads a pipeline.

    The same safe-weights rule, dtype and errors as the diffusers pipelines; left on the CPU in eval
    mode for the caller to move.
    """
    log.info("loading %s from %s (%s)", requested, location, device.dtype_name)
    with _loading(requested, location, device, allow_pickle) as kwargs:
        model = model_class.from_pretrained(location, **kwargs)
    return model.eval()


def pretrained_processor(processor_class: Any, requested: str, location: str) -> Any:
    """A tokenizer or processor from the model's folder or hub id, with the loader's errors."""
    with _load_errors(requested, location):
        return processor_class.from_pretrained(location)


@contextmanager
def _loading(
    requested: str, location: str, device: Device, allow_pickle: bool, tiny: bool = False
) -> Iterator[dict[str, Any]]:
    """What every weights load shares: the safe-weights rule, quiet bars, the loader's errors (and a
    tiny build's expected warnings hidden); yields from_pretrained's dtype and safetensors arguments."""
    check_safe_weights(requested, location, allow_pickle)
    quiet_loading_bars()
    with _tiny_model_warnings_hidden(tiny), _load_errors(requested, location):
        # None lets the library prefer safetensors and fall back to pickle files; True refuses pickle.
        yield {"dtype": device.dtype, "use_safetensors": None if allow_pickle else True}


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
