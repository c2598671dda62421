"""Generation that survives running out of memory: free it, then retry smaller (split batch, offload, tiling)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from moviegen.generation.device import Device
from moviegen.generation.generate import GeneratedClip, generate_batch
from moviegen.reliability import detached, is_out_of_memory
from moviegen.spec import GenerationRequest

log = logging.getLogger(__name__)


def free_device_memory(device: Device) -> None:
    """Give cached blocks back after an out-of-memory error, so the next, smaller try can fit.

    Only memory nothing refers to can be freed: call it after ``detached`` has dropped the failed
    call's traceback (whose frames hold that call's tensors).
    """
    import gc

    import torch

    gc.collect()
    if device.name.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.name == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def generate_resilient(
    pipe: Any,
    requests: list[GenerationRequest],
    device: Device,
    fallback: bool = True,
    notes: list[str] | None = None,
) -> list[GeneratedClip | BaseException]:
    """``generate_batch`` with fall-backs for running out of memory; each fall-back taken is noted.

    1. The whole batch in one call.
    2. Out of memory: halve the batch (recursively, down to one clip per call). Every clip has its
       own seeded generator, so on the CPU the pixels are the same as in the whole batch; on CUDA in
       bf16 they can differ slightly with the batch (``generation.deterministic`` avoids that).
    3. One clip still does not fit: move whole models to the GPU in turn (CPU offload, CUDA only;
       kept for the rest of the process, since it only costs speed), then decode in tiles (VAE
       tiling, for this call only: tiles blend at their seams, so the pixels differ slightly).
    Before each retry the failed call's memory is freed: its error is kept without its traceback
    (``detached``), so none of that call's tensors stays referenced. A clip that fits in no way gets
    its last out-of-memory error in its place in the list (the caller rejects it, naming what was
    tried; the others are kept). Other errors, and any error with ``fallback`` off, raise.
    """
    notes = [] if notes is None else notes
    error = _clips_or_memory_error(pipe, requests, device, fallback)
    if not isinstance(error, BaseException):
        return error
    free_device_memory(device)
    if len(requests) > 1:
        half = len(requests) // 2
        notes.append(
            f"out of memory with {len(requests)} clips in one call: split into {half} + {len(requests) - half}"
        )
        log.warning(notes[-1])
        return [
            *generate_resilient(pipe, requests[:half], device, fallback, notes),
            *generate_resilient(pipe, requests[half:], device, fallback, notes),
        ]
    for saver in (_cpu_offload, _vae_tiling):
        undo = saver(pipe, device)
        if undo is None:
            continue  # does not apply to this pipeline or device
        notes.append(f"out of memory with one clip: {saver.__doc__}")
        log.warning(notes[-1])
        try:
            result = _clips_or_memory_error(pipe, requests, device, True)
        finally:
            undo()
        if not isinstance(result, BaseException):
            return result
        error = result
        free_device_memory(device)
    return [error]


def _clips_or_memory_error(
    pipe: Any, requests: list[GenerationRequest], device: Device, fallback: bool
) -> list[GeneratedClip] | BaseException:
    """``generate_batch``'s clips, or its out-of-memory error detached from the failed call's frames.

    Returning (rather than handling the error inside the ``except`` block) matters: while an
    ``except`` block runs, the interpreter itself still holds the traceback.
    """
    try:
        return generate_batch(pipe, requests, device)
    except Exception as exc:
        if not fallback or not is_out_of_memory(exc):
            raise
        return detached(exc)


def _cpu_offload(pipe: Any, device: Device) -> Callable[[], None] | None:
    """CPU offload (models move to the GPU in turn)"""
    if not device.name.startswith("cuda") or getattr(pipe, "_moviegen_offloaded", False):
        return None
    pipe.enable_model_cpu_offload(device=device.name)
    pipe._moviegen_offloaded = True
    return lambda: None  # kept: later clips on this pipeline fit too, with the same pixels


def _vae_tiling(pipe: Any, device: Device) -> Callable[[], None] | None:
    """VAE tiling (frames decoded in overlapping tiles)"""
    vae = getattr(pipe, "vae", None)
    if not hasattr(vae, "enable_tiling") or getattr(vae, "use_tiling", False):
        return None
    vae.enable_tiling()
    return vae.disable_tiling
