"""Generation: load each model once per process, batch compatible clips, deterministic seeds.

Device and dtype are chosen at run time (CUDA when present, else Apple MPS, else the CPU);
nothing here assumes a GPU.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.models.registry import ModelRef, fingerprint_folder
from moviegen.models.tiny import ensure_tiny_model

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}


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
    """Everything one clip's pixels depend on (its clip_key is a hash of this and the model)."""

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    num_frames: int
    steps: int
    guidance: float

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with the same key can share one pipeline call."""
        return (self.width, self.height, self.num_frames, self.steps, self.guidance)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


class PipelineCache:
    """Loads each model at most once per process and hands out the same pipeline afterwards.

    ``loads`` counts real loads per model location, so runs and benchmarks can check reuse.
    """

    def __init__(self) -> None:
        self._pipes: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self.loads: Counter[str] = Counter()

    def get(self, ref: ModelRef, device: Device, cache_dir: Path, allow_pickle: bool = False) -> Any:
        key = (ref.location, device.name, device.dtype_name)
        with self._lock:
            if key not in self._pipes:
                self._pipes[key] = load_pipeline(ref, device, cache_dir, allow_pickle)
                self.loads[ref.location] += 1
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
    return str(ensure_tiny_model(cache_dir)) if ref.is_tiny else ref.location


def model_revision(ref: ModelRef, cache_dir: Path) -> str:
    """The model's identity for clip keys: folder fingerprint, or the hub revision when cached locally."""
    location = model_location(ref, cache_dir)
    if Path(location).is_dir():
        return fingerprint_folder(Path(location))
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(location, local_files_only=True)
        return Path(folder).name
    except Exception:  # not downloaded yet: the id itself is all we know before loading
        return "unresolved"


def load_pipeline(ref: ModelRef, device: Device, cache_dir: Path, allow_pickle: bool = False) -> Any:
    """Load a pipeline with from_pretrained (hub id or folder), honouring HF_HUB_OFFLINE.

    Only safetensors weights are accepted unless ``allow_pickle`` is set: pickle files can run code.
    """
    import diffusers
    import torch

    location = model_location(ref, cache_dir)
    pipeline_cls = getattr(diffusers, ref.info.family.pipeline_class)
    # None lets diffusers prefer safetensors and fall back to pickle files; True refuses pickle.
    use_safetensors = None if allow_pickle else True
    if not allow_pickle and Path(location).is_dir():
        pickled = sorted(str(p.relative_to(location)) for p in Path(location).rglob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise ModelLoadError(
                f"model {ref.requested!r} has pickle weights ({', '.join(pickled[:3])}), which can run code when "
                "loaded: convert them to safetensors, or set generation.allow_pickle: true if you trust the source"
            )
    kwargs: dict[str, Any] = {"dtype": device.dtype, "use_safetensors": use_safetensors}
    log.info("loading %s from %s on %s (%s)", ref.requested, location, device.name, device.dtype_name)
    _quiet_loading_bars()
    try:
        with _tiny_model_warnings_hidden(ref.is_tiny):
            if ref.info.family.name == "wan" and device.dtype != torch.float32:
                # Wan's VAE is numerically fragile in half precision; the reference setup keeps it in float32.
                kwargs["vae"] = diffusers.AutoencoderKLWan.from_pretrained(
                    location, subfolder="vae", dtype=torch.float32, use_safetensors=use_safetensors
                )
            pipe = pipeline_cls.from_pretrained(location, **kwargs)
    except OSError as exc:
        if Path(location).exists():
            hint = "check that the folder was written by save_pretrained with safetensors weights"
        elif os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            hint = f"the hub is offline (HF_HUB_OFFLINE): download it first (`hf download {location}`)"
        else:
            hint = f"download it first (`hf download {location}`) or point model at a local folder"
        raise ModelLoadError(f"cannot load model {ref.requested!r} from {location}: {exc}. {hint}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"cannot load model {ref.requested!r}: {exc}") from exc
    pipe.to(device.name)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass(frozen=True)
class GeneratedClip:
    """One clip's frames as uint8 RGB (F, H, W, 3) and the share of values that were not finite."""

    frames: np.ndarray
    nan_fraction: float


def _quiet_loading_bars() -> None:
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
    which other clips share its batch. Non-finite values are zeroed and reported (the quality gate
    rejects such clips) rather than silently becoming black frames.
    """
    import torch

    if not requests:
        return []
    keys = {r.batch_key() for r in requests}
    if len(keys) != 1:
        raise ValueError(f"requests in one batch must share width, height, frames, steps, guidance: {keys}")
    first = requests[0]
    generator_device = "cpu" if device.name == "mps" else device.name
    generators = [torch.Generator(generator_device).manual_seed(r.seed) for r in requests]
    with device_lock(device), torch.inference_mode():
        out = pipe(
            prompt=[r.prompt for r in requests],
            negative_prompt=[r.negative_prompt for r in requests],
            height=first.height,
            width=first.width,
            num_frames=first.num_frames,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            generator=generators,
            output_type="np",
        )
    clips = []
    for clip in np.asarray(out.frames, dtype=np.float32):  # (B, F, H, W, 3) floats in [0, 1]
        finite = np.isfinite(clip)
        nan_fraction = float(1.0 - finite.mean())
        clip = np.where(finite, clip, 0.0)
        clips.append(GeneratedClip(np.clip(np.rint(clip * 255.0), 0, 255).astype(np.uint8), nan_fraction))
    return clips
