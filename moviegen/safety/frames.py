"""The frame gate: content safety on sampled frames and quality checks on all of them.

    frames -> one pass: every frame's QC statistics, every stride-th frame kept
           -> QC: NaN, black, constant, frozen, flicker -> detector scores vs per-label thresholds
           -> GateResult (passed or the first rule that failed, with every score)

The frames come from memory right after generation (``check_clip``), or from a master file
decoded once, frame by frame (``check_master``). QC reads every frame subsampled to about 160
pixels wide, which is enough to see black, flat, frozen and flickering video and costs little;
the detector only sees every ``sample.stride``-th frame, at most ``sample.max_frames`` of them,
since it is the expensive part.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.media import MediaError, ffmpeg_binary, probe
from moviegen.safety.detector import DetectorError, FrameDetector, get_detector
from moviegen.safety.policy import Policy, QCPolicy

QC_WIDTH = 160  # QC reads every frame subsampled to about this width
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class GateResult:
    """What the frame gate decided for one clip: the first failed rule (None when passed) and every score."""

    passed: bool
    rule: str | None = None
    message: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    sampled: np.ndarray | None = field(default=None, repr=False)  # the frames the detector saw (contact sheet)


def sample_indices(count: int, stride: int, max_frames: int) -> list[int]:
    """Every ``stride``-th frame from the first, thinned evenly to at most ``max_frames``."""
    return _thin(list(range(0, count, stride)), max_frames)


def _thin(picked: list[int], max_frames: int) -> list[int]:
    if len(picked) <= max_frames:
        return picked
    positions = np.linspace(0, len(picked) - 1, max_frames).round().astype(int)
    return [picked[p] for p in positions]


@dataclass
class ClipScan:
    """Per-frame statistics of a whole clip, and the frames kept for the detector."""

    luma_mean: np.ndarray  # (F,)
    luma_std: np.ndarray  # (F,)
    change: np.ndarray  # (F-1,) mean absolute RGB change from the previous frame
    indices: list[int]
    sampled: np.ndarray  # (len(indices), H, W, 3) uint8 RGB, full size


def scan_frames(frames: Iterable[np.ndarray], stride: int, max_frames: int) -> ClipScan:
    """One pass over a clip's frames: QC statistics of every frame, and every ``stride``-th frame kept.

    QC reads every frame subsampled to about QC_WIDTH pixels wide (nearest pixel, so the noise that
    tells a living frame from a flat or frozen one is not averaged away).
    """
    means: list[float] = []
    stds: list[float] = []
    changes: list[float] = []
    kept: dict[int, np.ndarray] = {}
    previous = None
    for i, frame in enumerate(frames):
        step = max(1, frame.shape[1] // QC_WIDTH)
        small = frame[::step, ::step].astype(np.float32)
        luma = small @ _LUMA
        means.append(float(luma.mean()))
        stds.append(float(luma.std()))
        if previous is not None:
            changes.append(float(np.abs(small - previous).mean()))
        previous = small
        if i % stride == 0:
            kept[i] = frame
    indices = _thin(sorted(kept), max_frames)
    sampled = np.stack([kept[i] for i in indices]) if indices else np.zeros((0, 1, 1, 3), np.uint8)
    return ClipScan(np.array(means), np.array(stds), np.array(changes), indices, sampled)


def qc_metrics(scan: ClipScan, qc: QCPolicy) -> dict[str, float]:
    """Shares of black, flat, frozen and flickering frames, and the statistics behind them."""
    pairs = max(len(scan.luma_mean) - 1, 1)
    jumps = np.abs(np.diff(scan.luma_mean))
    return {
        "black_fraction": float((scan.luma_mean < qc.black_luma).mean()) if len(scan.luma_mean) else 1.0,
        "constant_fraction": float((scan.luma_std < qc.constant_std).mean()) if len(scan.luma_std) else 1.0,
        "frozen_fraction": float((scan.change < qc.frozen_diff).sum() / pairs),
        "flicker_fraction": float((jumps > qc.flicker_luma).sum() / pairs),
        "mean_luma": float(scan.luma_mean.mean()) if len(scan.luma_mean) else 0.0,
        "min_luma_std": float(scan.luma_std.min()) if len(scan.luma_std) else 0.0,
        "mean_change": float(scan.change.mean()) if len(scan.change) else 0.0,
        "max_luma_jump": float(jumps.max()) if len(jumps) else 0.0,
    }


def qc_failures(metrics: dict[str, float], nan_fraction: float | None, qc: QCPolicy) -> list[dict[str, Any]]:
    """The QC rules a clip breaks, worst first: nan, black, constant, frozen, flicker.

    ``nan_fraction`` None means unknown (a master reused from an earlier run): that check is skipped.
    """
    checks = [
        ("nan", nan_fraction, qc.max_nan_fraction, "of the generated values were not finite (NaN or inf): "
         "try another seed, or float32/bfloat16 instead of float16"),
        ("black", metrics["black_fraction"], qc.max_black_fraction,
         f"of the frames are black (mean luma below {qc.black_luma:g})"),
        ("constant", metrics["constant_fraction"], qc.max_constant_fraction,
         f"of the frames are one flat colour (luma spread below {qc.constant_std:g})"),
        ("frozen", metrics["frozen_fraction"], qc.max_frozen_fraction,
         f"of consecutive frames do not change (mean change below {qc.frozen_diff:g}): the clip is a still"),
        ("flicker", metrics["flicker_fraction"], qc.max_flicker_fraction,
         f"of consecutive frames jump in brightness by more than {qc.flicker_luma:g} (flicker)"),
    ]  # fmt: skip
    failures = []
    for rule, value, limit, what in checks:
        if value is not None and value > limit:
            failures.append(
                {
                    "rule": rule,
                    "value": round(value, 6),
                    "limit": limit,
                    "message": f"QC: {value:.1%} {what}; the policy allows {limit:.0%}",
                }
            )
    return failures


def detector_failures(
    scores: np.ndarray, labels: tuple[str, ...], indices: list[int], thresholds: dict[str, float]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Each label's highest score over the sampled frames, and the labels at or above their thresholds."""
    best = scores.max(axis=0) if len(scores) else np.zeros(len(labels))
    where = scores.argmax(axis=0) if len(scores) else np.zeros(len(labels), int)
    by_label = {label: round(float(best[i]), 4) for i, label in enumerate(labels)}
    failures = []
    for i, label in enumerate(labels):
        limit = thresholds.get(label)
        if limit is not None and best[i] >= limit:
            frame = indices[int(where[i])]
            failures.append(
                {
                    "rule": "detector",
                    "label": label,
                    "value": by_label[label],
                    "limit": limit,
                    "frame": frame,
                    "message": f"detector: {label} scored {best[i]:.2f} in frame {frame} (policy limit {limit:g})",
                }
            )
    failures.sort(key=lambda f: f["value"] - f["limit"], reverse=True)
    return by_label, failures


def prepare_detector(policy: Policy) -> FrameDetector:
    """Load the policy's detector and check that its thresholds name labels the detector has."""
    detector = get_detector(policy.frames.detector)
    unknown = sorted(set(policy.frames.thresholds) - set(detector.labels))
    if unknown:
        raise DetectorError(
            f"safety policy {policy.name!r} ({policy.source}) sets frames.thresholds for {unknown}, which "
            f"detector {detector.name} does not have; its labels are {', '.join(detector.labels)}"
        )
    return detector


def check_clip(
    frames: Iterable[np.ndarray], nan_fraction: float | None, policy: Policy, detector: FrameDetector | None = None
) -> GateResult:
    """Decide on a clip from its uint8 RGB frames (an array or any iterable of (H, W, 3) frames)."""
    rules = policy.frames
    detector = detector or prepare_detector(policy)
    scan = scan_frames(frames, rules.sample.stride, rules.sample.max_frames)
    metrics = qc_metrics(scan, rules.qc)
    failures = qc_failures(metrics, nan_fraction, rules.qc)
    started = time.perf_counter()
    labels, detected = detector_failures(detector.scores(scan.sampled), detector.labels, scan.indices, rules.thresholds)
    failures += detected
    scores = {
        "frames": len(scan.luma_mean),
        "sampled": scan.indices,
        "nan_fraction": nan_fraction,
        "qc": {k: round(v, 4) for k, v in metrics.items()},
        "detector": detector.name,
        "labels": labels,
        "detector_seconds": round(time.perf_counter() - started, 4),
    }
    if not failures:
        return GateResult(True, scores=scores, sampled=scan.sampled)
    first = failures[0]
    return GateResult(False, first["rule"], first["message"], scores, failures, scan.sampled)


def check_master(
    path: Path,
    nan_fraction: float | None,
    policy: Policy,
    size: tuple[int, int] | None = None,
    detector: FrameDetector | None = None,
) -> GateResult:
    """Run the frame gate on a master file, decoding it once; ``size`` (width, height) saves a probe."""
    width, height = size or _size(path)
    return check_clip(iter_frames(path, width, height), nan_fraction, policy, detector)


def _size(path: Path) -> tuple[int, int]:
    info = probe(path)
    return info.width, info.height


def iter_frames(path: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as uint8 RGB (H, W, 3), holding one frame in memory at a time."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
    frame_bytes = width * height * 3
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while len(chunk := proc.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            error = proc.stderr.read().decode(errors="replace").strip()
            code = proc.wait()
        if code != 0 or chunk:
            tail = "\n".join(error.splitlines()[-5:]) or f"{len(chunk)} stray bytes: is it {width}x{height}?"
            raise MediaError(f"decoding {path.name} for the frame gate failed (exit {code}): {tail}")
