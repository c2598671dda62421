"""Retries, memory fall-backs and the clean-up a killed run leaves to the next one.

Problem: a long campaign meets transient failures (the GPU runs out of memory on one batch, an
encode dies, a network share drops one write) and may be killed outright. One such failure must
cost at most its own clip, and a rerun must finish the job without redoing what is done.

Solution: each failure that has a fall-back gets it (``generate_resilient``: a smaller batch, then
CPU offload, then VAE tiling; ``retry``: the same step again after a short wait); a clip that still
fails becomes a rejected row and the campaign goes on. A killed run's leftovers (temporary files of
dead processes, a ``running`` run.json) are recognised and cleaned by the next run; what it
published but did not record is adopted by ``moviegen.publish.adopt_interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from moviegen.generate import Device, GeneratedClip, GenerationRequest, generate_batch
from moviegen.publish import OutputRoot, process_alive

log = logging.getLogger(__name__)

T = TypeVar("T")


# Retries ---------------------------------------------------------------------------------------


def retry(
    step: Callable[[], T],
    attempts: int,
    errors: tuple[type[BaseException], ...],
    what: str,
    delay_s: float = 0.0,
) -> T:
    """Run ``step`` up to ``attempts`` times while it raises one of ``errors``; re-raise the last one."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except errors as exc:
            if attempt == attempts:
                raise
            log.warning("%s failed (%s: %s); try %d of %d", what, type(exc).__name__, _first_line(exc),
                        attempt + 1, attempts)  # fmt: skip
            time.sleep(delay_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


# Out of memory ---------------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA/MPS/CPU allocation failure (torch raises OutOfMemoryError on CUDA, RuntimeError elsewhere)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def failure_rule(exc: BaseException) -> str:
    """The ``rule`` of a rejected row for a clip that failed with ``exc``."""
    return "out_of_memory" if is_out_of_memory(exc) else "error"


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


def detached(exc: BaseException) -> BaseException:
    """The error without its traceback, nor those of the errors it chains to.

    A caught exception's traceback keeps every frame of the failed call alive, and with them its
    local tensors: measured on an H200, 15 GiB stayed allocated after an out-of-memory error until
    the traceback was dropped. Keep only the detached error (its type and message) across a retry.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.with_traceback(None)
        link = link.__cause__ or link.__context__
    return exc


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


# What a killed run leaves behind ---------------------------------------------------------------

# Temporary files in the scratch folder carry their writer's process id: ".<stem>.tmp<pid>...".
_TMP_PID = re.compile(r"^\..*\.tmp(\d+)")


def sweep_work_dir(work_dir: Path) -> int:
    """Remove scratch left by dead processes: half-written masters, soundtracks and assets, render folders.

    Only this machine's processes write here, so a writer's process id tells whether it is alive.
    Returns how many files and folders were removed.
    """
    removed = 0
    if not work_dir.is_dir():
        return 0
    for path in work_dir.rglob(".*.tmp*"):
        match = _TMP_PID.match(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    renders = work_dir / "renders"
    for folder in renders.iterdir() if renders.is_dir() else ():
        pid = folder.name.split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def run_started(out: OutputRoot, run_id: str, started_at: Any) -> dict[str, Any]:
    """Write ``runs/<run_id>/run.json`` as ``running``; the end of the run replaces it with the summary.

    A run killed on the way keeps this ``running`` record, which the next run marks ``interrupted``.
    """
    record = {
        "run_id": run_id,
        "status": "running",
        "started_at": started_at,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    out.write_json(record, "runs", run_id, "run.json")
    return record


def mark_interrupted_runs(out: OutputRoot, current_run_id: str) -> list[str]:
    """Find runs recorded as ``running`` whose process on this machine is gone; mark them ``interrupted``.

    Runs of other machines are left as they are (they may still be running). Returns their ids.
    """
    folder = out.path("runs")
    if not out.fs.exists(folder):
        return []
    interrupted = []
    host = socket.gethostname()
    for name in sorted(out.fs.ls(folder, detail=False)):
        run_id = name.rstrip("/").rsplit("/", 1)[-1]
        if run_id == current_run_id:
            continue
        try:
            with out.fs.open(f"{name}/run.json", "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if record.get("status") != "running" or record.get("host") != host:
            continue
        pid = record.get("pid")
        if not isinstance(pid, int) or pid <= 0 or process_alive(pid):
            continue
        record.update(status="interrupted", resumed_by=current_run_id)
        out.write_json(record, "runs", run_id, "run.json")
        interrupted.append(run_id)
    return interrupted
