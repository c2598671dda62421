"""The victim of the crash-and-resume test: run a campaign and SIGKILL this process at one exact point.

    python tests/crash_driver.py CATALOG CONFIG OUT POINT

POINT (N counts from 1):
    generate:N   entering the N-th pipeline call (earlier clips may be rendering meanwhile)
    render:N     while ffmpeg writes the N-th rendition's file (killed before it is renamed)
    publish:N    the N-th video copied to the staging folder, not yet moved into published/
    manifest:N   the N-th video published, before its manifest row is written
    finish       the run's manifest parts compacted into one, before the small ones are deleted
    none         no kill: run to the end

The kill is a real SIGKILL of this process (no clean-up code runs); only where it happens is
chosen by wrapping the step it interrupts. Nothing here is imported by moviegen.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def nth(n: int):
    """A counter that says True on its n-th call (thread-safe: renders run on a pool)."""
    lock, seen = threading.Lock(), [0]

    def hit() -> bool:
        with lock:
            seen[0] += 1
            return seen[0] == n

    return hit


def arm(point: str) -> None:
    import fsspec.implementations.local as local

    from moviegen.generation import resilient
    from moviegen.run import renditions
    from moviegen.store import OutputRoot

    stage, _, count = point.partition(":")
    hit = nth(int(count or 1))
    if stage == "generate":
        real_generate = resilient.generate_batch

        def generate(*args: Any, **kwargs: Any) -> Any:
            if hit():
                die()
            return real_generate(*args, **kwargs)

        resilient.generate_batch = generate
    elif stage == "render":
        real_render = renditions.render_rendition

        def render_rendition(master: Path, spec: Any, out_path: Path, *rest: Any, **kwargs: Any) -> Any:
            if not hit():
                return real_render(master, spec, out_path, *rest, **kwargs)

            # ffmpeg writes the N-th rendition under a temporary name beside out_path (with or without
            # a frame processor in between): kill as soon as that file has bytes, before the rename.
            def watch() -> None:
                while not any(p.is_file() and p.stat().st_size > 0 for p in out_path.parent.glob(".*.tmp*")):
                    time.sleep(0.005)
                die()

            threading.Thread(target=watch, daemon=True).start()
            real_render(master, spec, out_path, *rest, **kwargs)
            die()  # ffmpeg finished before the watcher looked: still killed before publishing

        renditions.render_rendition = render_rendition
    elif stage == "publish":
        real_mv = local.LocalFileSystem.mv

        def mv(self: Any, path1: str, path2: str, *args: Any, **kwargs: Any) -> Any:
            if "/.staging/" in str(path1) and str(path1).endswith(".mp4.tmp") and hit():
                die()
            return real_mv(self, path1, path2, *args, **kwargs)

        local.LocalFileSystem.mv = mv
    elif stage == "manifest":
        real_append = OutputRoot.append_rows

        def append_rows(self: OutputRoot, dataset: str, *args: Any, **kwargs: Any) -> Any:
            if dataset == "manifest" and hit():
                die()
            return real_append(self, dataset, *args, **kwargs)

        OutputRoot.append_rows = append_rows
    elif stage == "finish":
        real_write = OutputRoot.write_bytes

        def write_bytes(self: OutputRoot, data: bytes, *parts: str) -> str:
            written = real_write(self, data, *parts)
            if parts[0] == "manifest" and parts[-1].count("-") == 2:  # part-<run_id>.parquet: the compacted one
                die()
            return written

        OutputRoot.write_bytes = write_bytes
    elif stage != "none":
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    catalog, config, out, point = sys.argv[1:5]
    from moviegen.config import load_settings
    from moviegen.run.plain import run_campaign_plain

    arm(point)
    summary = run_campaign_plain(catalog, load_settings(config, out=out))
    print(f"finished {summary.run_id} exit {summary.exit_code}")


if __name__ == "__main__":
    main()
