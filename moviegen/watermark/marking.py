"""The invisible watermark in the render path: where a clip's mark goes, and the processor that embeds it.

Problem: RivaGAN's encoder costs about 0.13-0.27 s per 1080x1920 frame here, and a 30 fps
rendition made from a 16 fps master repeats almost every other frame, so embedding every frame
the graph hands over pays about twice for the same pixels. A mark embedded once into the master
would be cheaper still, but survives only renditions that scale the whole picture and leave its
colours alone.
Solution: ``plan_watermark`` decides, per clip, with ``watermark.placement.watermark_placement`` (geometry)
and the renditions' looks (a grade or an effect applied after a master mark would weaken it),
whether the mark goes into the master (``mark_master``, once per clip) or into each rendition's
frames between its filter graph and its single encode (``WatermarkProcessor``). The processor
embeds only the distinct frames of each batch, in one embed call, and gives a frame that exactly
repeats the one before it (compared on a sparse sample first, then byte for byte) the marked copy.

Only ``moviegen.watermark``'s public API is used here: payload_for, payload_hex, Watermarker.embed,
default_watermarker, watermark_placement, WATERMARK_VERSION.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moviegen.media import probe, read_frames, write_master
from moviegen.render.spec import RenditionSpec
from moviegen.watermark.model import Watermarker, default_watermarker
from moviegen.watermark.payload import WATERMARK_VERSION, payload_for, payload_hex
from moviegen.watermark.placement import Placement, watermark_placement

# Frames per processor call in the render path: a 16 -> 30 fps rendition gives about 17 distinct
# frames per call, and each embed call spends a trial embed on its bit weights (16 or more keeps
# that under a tenth of the cost). 32 frames of 1080x1920 are 190 MiB per rendition in flight.
BATCH_FRAMES = 32

# Style parameters that leave a master's mark alone: they change timing or text, not the picture's pixels.
MARK_NEUTRAL_LOOK = frozenset({"speed", "extend", "font", "scaler"})

MASTER_CHANNEL = "master"  # payload_for(clip_key, "master"): one payload for every channel of the clip


@dataclass(frozen=True)
class WatermarkPlan:
    """Where one rendition's mark is embedded and the 32-bit payload it carries."""

    placement: Placement
    payload: int

    @property
    def payload_hex(self) -> str:
        return payload_hex(self.payload)

    @property
    def processor_key(self) -> str:
        """What changes the marked pixels, for the rendition key: the embed's version, placement and payload."""
        return f"{WATERMARK_VERSION}:{self.placement}:{self.payload_hex}"


def plan_watermark(
    clip_key: str, channel: str, master_size: tuple[int, int], renditions: Sequence[RenditionSpec]
) -> WatermarkPlan:
    """The mark of ``channel``'s rendition, given every rendition the clip's row asks for.

    ``master`` only when ``watermark_placement`` says every rendition keeps a master mark
    (pure scaling at the master's aspect ratio) and no rendition's look touches the pixels after
    it (grade, LUT, effects or frame blending: unmeasured, and a monochrome grade erases the mark's
    colour axis entirely); then every channel carries the payload of ``clip_key`` and "master".
    """
    geometry = [(r.size, r.preset.fit) for r in renditions]
    untouched = all(set(r.style.changes()) <= MARK_NEUTRAL_LOOK for r in renditions)
    placement: Placement = (
        "master" if untouched and watermark_placement(master_size, geometry) == "master" else "rendition"
    )
    return WatermarkPlan(placement, payload_for(clip_key, MASTER_CHANNEL if placement == "master" else channel))


def same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two frames are byte for byte equal; a sparse sample settles most different pairs first."""
    return bool(np.array_equal(a[::16, ::16], b[::16, ::16]) and np.array_equal(a, b))


class WatermarkProcessor:
    """A render FrameProcessor that embeds one payload, once per run of identical consecutive frames.

    ``passes`` > 1 embeds the mark again over the marked frames: each pass weights the bits on
    what the previous one left, so a bit the picture pulls the wrong way gets pushed further (at a
    cost in PSNR; the pipeline uses it only when a single pass did not read back). Keeps the last
    input frame and its marked copy between calls, so a repeat across a batch boundary is reused
    too. ``embedded`` and ``reused`` count frames and ``seconds`` is the time spent in the
    processor, for the run's timings and for tests.
    """

    def __init__(self, payload: int, watermarker: Watermarker | None = None, passes: int = 1) -> None:
        if passes < 1:
            raise ValueError(f"passes must be at least 1, got {passes}")
        self.payload = payload
        self.passes = passes
        self.marker = watermarker or default_watermarker()
        self.embedded = 0
        self.reused = 0
        self.seconds = 0.0
        self._last_in: np.ndarray | None = None
        self._last_out: np.ndarray | None = None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        count = len(frames)
        if count == 0:
            return frames
        # 1. Which frames repeat the one before them (-1: the last frame of the previous batch).
        source = np.empty(count, np.int64)
        distinct: list[int] = []
        for i in range(count):
            previous = frames[i - 1] if i else self._last_in
            if previous is not None and same_frame(frames[i], previous):
                source[i] = source[i - 1] if i else -1
            else:
                source[i] = len(distinct)
                distinct.append(i)
        # 2. One embed call per pass for the distinct frames.
        if distinct:
            marked = frames if len(distinct) == count else frames[distinct]
            for _ in range(self.passes):
                marked = self.marker.embed(marked, self.payload)
        self._last_in = frames[-1].copy()
        # 3. Every frame from its marked original (the input array may be overwritten and returned).
        for i in range(count):
            frames[i] = self._last_out if source[i] < 0 else marked[source[i]]
        self._last_out = frames[-1].copy()
        self.embedded += len(distinct)
        self.reused += count - len(distinct)
        self.seconds += time.perf_counter() - started
        return frames


_master_locks: dict[Path, threading.Lock] = {}

_master_locks_guard = threading.Lock()


def mark_master(
    master: Path, plan: WatermarkPlan, out: Path, watermarker: Watermarker | None = None, passes: int = 1
) -> Path:
    """The master with ``plan``'s payload embedded, written losslessly to ``out`` once (reused when there).

    Renditions of one clip render at the same time on threads: one of them marks, the others wait.
    """
    with _master_locks_guard:
        lock = _master_locks.setdefault(out, threading.Lock())
    with lock:
        if out.is_file():
            return out
        info = probe(master, count_frames=False)
        processor = WatermarkProcessor(plan.payload, watermarker, passes)
        frames = read_frames(master).copy()  # decoded bytes are read-only; the processor marks in place
        for start in range(0, len(frames), BATCH_FRAMES):
            processor(frames[start : start + BATCH_FRAMES])
        return write_master(frames, info.fps, out)
