"""Continued segments: a clip longer than one call of its model, made segment by segment instead of looped.

Problem: the open models make 5 s (Wan: 81 frames at 16 fps) to about 10 s (LTX-Video) per call,
while a catalog row may ask for up to 60 s; looping the clip (or freezing its last frame) shows.
Solution: the first segment comes from the text as usual; each next one is generated image-to-video
(the family's own pipeline, or its companion model) from the last frame of the segment before,
with the same prompt and the next seed. A continuation's first frame is the frame it starts from,
so it is dropped, and the next ``SEAM_FRAMES`` ease in from that frame, so the seam shows no jump
even where the model's reconstruction of the frame differs a little. The frames are then cut to
exactly what the row's duration takes; the last continuation is asked only for the frames still missing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.generation.device import Device
from moviegen.generation.generate import GeneratedClip
from moviegen.generation.resilient import generate_resilient
from moviegen.generation.shots import blend
from moviegen.media import write_frame
from moviegen.spec import SEAM_FRAMES, ClipPlan


def continue_clip(
    first: GeneratedClip,
    clip: ClipPlan,
    seed: int,
    pipe: Any,
    device: Device,
    frame_dir: Path,
    oom_fallback: bool = True,
    notes: list[str] | None = None,
) -> GeneratedClip:
    """``first`` (one call's frames, made with ``seed``) continued with ``pipe`` (image-to-video) to
    ``clip.frames`` frames; segment k uses ``seed + k``.

    ``frame_dir`` holds the PNG each continuation starts from. Raises the continuation's error when
    one cannot be made (out of memory whatever the fall-back, included).
    """
    parts, nan_fraction = [first.frames], first.nan_fraction
    made_frames = len(first.frames)
    for segment in range(1, clip.segments):
        if made_frames >= clip.frames:
            break
        start = write_frame(parts[-1][-1], frame_dir / f"{clip.clip_key}-{segment}.png")
        request = replace(
            clip.request,
            task="i2v",
            reference_path=str(start),
            seed=(seed + segment) % 2**32,
            num_frames=segment_frames(clip, made_frames),
        )
        [made] = generate_resilient(pipe, [request], device, oom_fallback, notes)
        if isinstance(made, BaseException):
            raise made
        parts.append(eased_segment(parts[-1][-1], made.frames))
        made_frames += len(parts[-1])
        nan_fraction = max(nan_fraction, made.nan_fraction)
        start.unlink(missing_ok=True)
    # One concatenation at the end: joining segment by segment would copy the clip once per segment.
    return GeneratedClip(np.concatenate(parts)[: clip.frames], nan_fraction)


def segment_frames(clip: ClipPlan, made: int) -> int:
    """Frames to ask of the next continuation: a full call, or for the last one only what is still
    missing (plus the frame it starts from), in the family's k * multiple + 1 steps."""
    multiple = clip.model.info.family.frames_multiple
    missing = clip.frames - made
    return min(clip.request.num_frames, math.ceil(missing / multiple) * multiple + 1)


def eased_segment(last: np.ndarray, segment: np.ndarray, seam: int = SEAM_FRAMES) -> np.ndarray:
    """``segment`` without its first frame (the one it starts from, ``last``), its next ``seam`` frames
    eased in from ``last`` (weights 1/(seam+1) ... seam/(seam+1)): the frames that follow ``last``."""
    if segment.shape[1:] != last.shape:
        raise ValueError(f"a continuation of {last.shape} frames came back as {segment.shape[1:]}")
    ease = min(seam, len(segment) - 1)
    new = segment[1:].copy()
    new[:ease] = blend(last, segment[1 : ease + 1], np.arange(1, ease + 1) / (seam + 1))
    return new
