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

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def retry(
    step: Callable[[], T],
    attempts: int,
    errors: tuple[type[BaseException], ...],
    what: str,
    delay_s: float = 0.0,
    permanent: tuple[type[BaseException], ...] = (),
) -> T:
    """Run ``step`` up to ``attempts`` times while it raises one of ``errors``; re-raise the last one.

    The one retry loop of the library (encodes, writes to the output root): the wait before the
    second try is ``delay_s``, doubled for each further one. An error of a ``permanent`` type
    (a missing folder, a refused permission) is raised at once: trying again cannot help.
    """
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except errors as exc:
            if attempt == attempts or isinstance(exc, permanent):
                raise
            delay = delay_s * 2 ** (attempt - 1)
            log.warning("%s failed (%s: %s); try %d of %d in %.1f s", what, type(exc).__name__, _first_line(exc),
                        attempt + 1, attempts, delay)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def failure_rule(exc: BaseException) -> str:
    """The ``rule`` of a rejected row for a clip that failed with ``exc``."""
    return "out_of_memory" if is_out_of_memory(exc) else "error"


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


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA/MPS/CPU allocation failure (torch raises OutOfMemoryError on CUDA, RuntimeError elsewhere)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
