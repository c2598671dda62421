"""Names of places in a frame, written once: logo corners, crop anchors, text and label positions."""

from __future__ import annotations

from typing import Literal, get_args

Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]
Anchor = Literal["center", "top", "bottom", "left", "right"]
# Where a crop's window sits in the source: fractions of the spare width and height.
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top": (0.5, 0.0),
    "bottom": (0.5, 1.0),
    "left": (0.0, 0.5),
    "right": (1.0, 0.5),
}
# Text layers: a band across the frame, or a corner; the AI label: a corner or a band at an edge.
TextPosition = Literal["top", "center", "bottom", Corner]
LabelPosition = Literal[Corner, "top", "bottom"]

CORNERS: tuple[str, ...] = get_args(Corner)
ANCHOR_NAMES: tuple[str, ...] = get_args(Anchor)
assert set(ANCHORS) == set(ANCHOR_NAMES)
