"""Progress reporting without a dependency on any UI: stages call ``advance``, a listener draws.

The CLI installs a rich progress bar as the listener; tests and the plain loop may install their
own. With no listener, reporting costs nothing.
"""

from __future__ import annotations

import threading
from typing import Protocol


class ProgressListener(Protocol):
    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, amount: int = 1) -> None: ...


_listener: ProgressListener | None = None
_lock = threading.Lock()

# The stages a run reports, in the order a clip passes them.
STAGES = ("validate", "generate", "render", "publish")


def set_listener(listener: ProgressListener | None) -> None:
    """Install (or remove, with None) the process-wide progress listener."""
    global _listener
    with _lock:
        _listener = listener


def start(stage: str, total: int) -> None:
    """Announce how many items a stage will handle."""
    if _listener is not None:
        with _lock:
            _listener.start(stage, total)


def advance(stage: str, amount: int = 1) -> None:
    """Report that a stage finished ``amount`` more items."""
    if _listener is not None:
        with _lock:
            _listener.advance(stage, amount)
