"""The device and dtype chosen at run time, one lock per device, deterministic kernels."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


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


# One lock per device: GPU-bound work is serialized per device even when tasks run in threads.
_device_locks: dict[str, threading.Lock] = {}

_device_locks_guard = threading.Lock()


def device_lock(device: Device) -> threading.Lock:
    """The lock that serializes generation on one device."""
    with _device_locks_guard:
        return _device_locks.setdefault(device.name, threading.Lock())


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""
