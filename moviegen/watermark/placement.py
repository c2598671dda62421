"""Where a clip's mark goes: into the master once when it survives every channel's crop, else per rendition."""

from __future__ import annotations

from typing import Literal

Placement = Literal["master", "rendition"]

# How far a rendition's aspect ratio may differ from the master's (832x480 to 16:9 is 2.6%) for a master mark to be
# kept; benchmarks/bench_watermark_placement.py measured that only pure scaling keeps it.
ASPECT_TOLERANCE = 0.05


def master_mark_survives(master_size: tuple[int, int], frame_size: tuple[int, int], fit: str) -> bool:
    """Whether a mark embedded in the master still verifies in a rendition of this size and fit.

    Measured (832x480 master, H.264 CRF 20): a 16:9 scale-up verifies; a 9:16 crop (0.65 bit
    accuracy), a 4:5 crop, a 1:1 crop (the right scale, but a third of the marked picture gone)
    and a blurred pad (an unmarked background, the content shrunk) do not. So only a rendition
    that scales the whole master frame, with the master's aspect ratio, keeps the mark.
    """
    (mw, mh), (w, h) = master_size, frame_size
    return fit == "crop" and abs((w / h) / (mw / mh) - 1) <= ASPECT_TOLERANCE


def watermark_placement(master_size: tuple[int, int], renditions: list[tuple[tuple[int, int], str]]) -> Placement:
    """Where to embed for one clip: ``master`` when every rendition (size, fit) keeps the mark, else ``rendition``."""
    if renditions and all(master_mark_survives(master_size, size, fit) for size, fit in renditions):
        return "master"
    return "rendition"
