"""Multi-shot rows: a storyboard of shots, each generated on its own, assembled into one master.

Problem: people write ads in shots ("close-up of the shoe, then the runner on the trail, then the
logo"), and one prompt over one model call cannot say "then". Solution: each shot is generated and
cached like a clip (its own key); the shots are then joined in one pass at exact frame counts,
with a cut, a crossfade (the next shot blends in over the last frames of the one before, so the ad
is shorter by the overlaps) or a fade (dip to black, no overlap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def shot_frame_counts(durations: Sequence[float], fps: int) -> tuple[int, ...]:
    """Frames each shot gives the assembled master: shot k spans [round(start_k * fps), round(end_k * fps)),
    so the seams fall on the frames the timeline puts them at and the lengths never drift."""
    counts, start = [], 0.0
    for duration in durations:
        counts.append(round((start + duration) * fps) - round(start * fps))
        start += duration
    return tuple(counts)


def fit_shot(frames: np.ndarray, count: int, extend: str = "hold") -> np.ndarray:
    """``frames`` cut to ``count``; a shot that came back shorter (its model's clip, not continued)
    is looped or holds its last frame, as the row's ``extend`` says."""
    if len(frames) >= count:
        return frames[:count]
    if extend == "loop":
        return frames[np.arange(count) % len(frames)]
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)])


def assemble_shots(shots: Sequence[np.ndarray], transition: str = "cut", over: int = 0) -> np.ndarray:
    """The shots (each already at its frame count) joined into one clip.

    ``cut``: one after the other. ``crossfade``: the first ``over`` frames of each next shot blend
    in over the last ``over`` frames of the one before (weights 1/(over+1) ... over/(over+1)).
    ``fade``: the last ``over // 2`` frames of a shot darken to black and the next shot's first
    ``over - over // 2`` brighten from it.
    """
    if not shots:
        raise ValueError("a multi-shot clip needs at least one shot")
    size = shots[0].shape[1:]
    for k, shot in enumerate(shots):
        if shot.shape[1:] != size:
            raise ValueError(f"shot {k} came back as {shot.shape[1:]} frames; the first shot is {size}")
    if transition == "cut" or over <= 0 or len(shots) == 1:
        return np.concatenate(shots)
    if transition == "crossfade":
        out, weights = shots[0], np.arange(1, over + 1) / (over + 1)
        pieces = []
        for shot in shots[1:]:
            pieces += [out[:-over], blend(out[-over:], shot[:over], weights)]
            out = shot[over:]
        return np.concatenate([*pieces, out])
    if transition == "fade":  # only the frames that fade are computed; the rest are joined as they are
        darken, brighten = over // 2, over - over // 2
        pieces = []
        for k, shot in enumerate(shots):
            head = brighten if k > 0 else 0
            tail = darken if k < len(shots) - 1 else 0
            if head:
                pieces.append(blend(0, shot[:head], np.linspace(0, 1, head + 1)[1:]))
            pieces.append(shot[head : len(shot) - tail])
            if tail:
                pieces.append(blend(0, shot[-tail:], np.linspace(1, 0, tail + 1)[1:]))
        return np.concatenate(pieces)
    raise ValueError(f"unknown transition {transition!r}: use cut, crossfade or fade")


def blend(before: np.ndarray | int, after: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Frame t is ``(1 - weights[t]) * before + weights[t] * after``, rounded back to uint8: a
    crossfade, a fade from black (``before`` 0), or a continuation's ease-in from one frame."""
    w = np.asarray(weights, np.float32)[:, None, None, None]
    mixed = (1 - w) * np.asarray(before, np.float32) + w * after.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
