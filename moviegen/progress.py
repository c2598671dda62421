"""Progress reporting without a dependency on any UI: stages call ``advance``, listeners draw.

The CLI adds a rich progress bar as a listener and the campaign flow a Prefect progress artifact;
tests may add their own. With no listener, reporting costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressListener(Protocol):
    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, amount: int = 1) -> None: ...

    def drop(self, stage: str, amount: int = 1) -> None: ...


log = logging.getLogger(__name__)
_listeners: list[ProgressListener] = []
_lock = threading.Lock()

# The stages a run reports, in the order a clip passes them.
STAGES = ("validate", "prompt_gate", "generate", "frame_gate", "render", "publish")


def stage_label(stage: str) -> str:
    """How a stage is named to people: ``frame_gate`` -> ``frame gate``."""
    return stage.replace("_", " ")


def add_listener(listener: ProgressListener) -> None:
    """Send every later progress event to ``listener`` too."""
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: ProgressListener) -> None:
    """Stop sending events to ``listener`` (no error when it was not listening)."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


@contextmanager
def listening(listener: ProgressListener) -> Iterator[ProgressListener]:
    """``with listening(bar):`` the listener gets the events of everything run inside the block."""
    add_listener(listener)
    try:
        yield listener
    finally:
        remove_listener(listener)


def set_listener(listener: ProgressListener | None) -> None:
    """Make ``listener`` the only listener (None: no listener at all)."""
    with _lock:
        _listeners[:] = [] if listener is None else [listener]


def start(stage: str, total: int) -> None:
    """Announce how many items a stage will handle."""
    if _listeners:
        _notify("start", stage, total)


def advance(stage: str, amount: int = 1) -> None:
    """Report that a stage finished ``amount`` more items."""
    if _listeners:
        _notify("advance", stage, amount)


def drop(stage: str, amount: int = 1) -> None:
    """Report that ``amount`` items announced for a stage will not reach it after all (a clip held
    back, a render that failed): the stage's total shrinks, so its bar still completes."""
    if _listeners:
        _notify("drop", stage, amount)


def _notify(method: str, stage: str, count: int) -> None:
    # A listener that fails (a UI gone, an API hiccup) is logged and never stops the stage reporting;
    # one without the method (written before ``drop`` existed) is skipped.
    with _lock:
        for listener in _listeners:
            try:
                handler = getattr(listener, method, None)
                if handler is not None:
                    handler(stage, count)
            except Exception as exc:
                log.warning("progress listener %s failed: %s", type(listener).__name__, exc)


class StageCounts:
    """A listener that keeps each stage's total and count: what a progress display shows.

    ``fraction`` weighs every stage of ``STAGES`` equally (a stage not started yet counts as
    nothing done, one started with nothing to do as complete), so it only grows during a run.
    """

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        self.totals[stage] = total
        self.done.setdefault(stage, 0)

    def advance(self, stage: str, amount: int = 1) -> None:
        self.totals.setdefault(stage, 0)
        self.done[stage] = self.done.get(stage, 0) + amount

    def drop(self, stage: str, amount: int = 1) -> None:
        self.totals[stage] = max(0, self.totals.get(stage, 0) - amount)
        self.done.setdefault(stage, 0)

    def fraction(self) -> float:
        """How far the run is, from 0 to 1."""
        parts = []
        for stage in STAGES:
            total = self.totals.get(stage)
            parts.append(0.0 if total is None else 1.0 if total <= 0 else min(1.0, self.done[stage] / total))
        return sum(parts) / len(parts)

    def describe(self) -> str:
        """``validate 4/4 · prompt gate 3/3 · generate 1/2 ...`` for the stages started so far."""
        stages = [s for s in STAGES if s in self.totals] + sorted(set(self.totals) - set(STAGES))
        return " · ".join(f"{stage_label(s)} {self.done.get(s, 0)}/{self.totals[s]}" for s in stages)
