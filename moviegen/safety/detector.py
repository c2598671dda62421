"""Frame content detectors behind one small interface, and NudeNet's bundled detector as the default.

A detector takes uint8 RGB frames (N, H, W, 3) and returns, per frame, the highest score of each
of its labels (an (N, len(labels)) array). The frame gate compares those scores with the policy's
per-label thresholds; it never needs boxes or anything else.

To use another detector, register it (``register_detector("mine", MyDetector)``) or name it in the
policy as ``package.module:Class``; a class is built with no arguments.

NudeNet's 320n model (an Ultralytics YOLOv8 export shipped in the ``nudenet`` package) is licensed
AGPL-3.0, as its ONNX metadata says: teams that cannot accept that swap it for their own detector.
It is run here with onnxruntime directly, fed RGB: the nudenet package's own reader swaps channels
for arrays (its issue 203), which this code does not go through.
"""

from __future__ import annotations

import ast
import importlib
import threading
from collections.abc import Callable
from importlib import resources
from typing import Protocol, runtime_checkable

import numpy as np

from moviegen.config import ConfigError


@runtime_checkable
class FrameDetector(Protocol):
    """What the frame gate needs from a detector."""

    name: str
    license: str
    labels: tuple[str, ...]

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame, per-label highest score in [0, 1] for uint8 RGB frames (N, H, W, 3)."""
        ...


class NudeNetDetector:
    """NudeNet 3.4's bundled 320n ONNX detector (18 body-part labels, faces included)."""

    name = "nudenet-320n"
    input_size = 320
    batch_size = 8

    def __init__(self, threads: int | None = None) -> None:
        import onnxruntime as ort

        model = resources.files("nudenet") / "320n.onnx"
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        names = ast.literal_eval(meta["names"])  # "{0: 'FEMALE_GENITALIA_COVERED', ...}" in the export
        self.labels = tuple(names[i] for i in sorted(names))
        self.license = meta.get("license", "AGPL-3.0")
        self.input_name = self.session.get_inputs()[0].name

    def scores(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), len(self.labels)), np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = self._prepare(frames[start : start + self.batch_size])
            raw = self.session.run(None, {self.input_name: batch})[0]  # (B, 4 + labels, anchors)
            out[start : start + len(batch)] = raw[:, 4:, :].max(axis=2)
        return out

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        """Pad each RGB frame to a square at the bottom/right (as NudeNet trains), resize to 320, scale to [0, 1]."""
        import cv2

        size = self.input_size
        batch = np.empty((len(frames), size, size, 3), np.float32)
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            side = max(h, w)
            square = np.zeros((side, side, 3), np.uint8)
            square[:h, :w] = frame
            batch[i] = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
        return (batch / 255.0).transpose(0, 3, 1, 2)


_FACTORIES: dict[str, Callable[[], FrameDetector]] = {NudeNetDetector.name: NudeNetDetector}
_detectors: dict[str, FrameDetector] = {}
_lock = threading.Lock()


class DetectorError(ConfigError):
    """A policy names a detector that cannot be found or built, or labels it does not have."""


def register_detector(name: str, factory: Callable[[], FrameDetector]) -> None:
    """Make a detector available to policies under ``name``."""
    with _lock:
        _FACTORIES[name] = factory
        _detectors.pop(name, None)


def get_detector(name: str) -> FrameDetector:
    """The detector a policy names, built once per process (model loading is the slow part)."""
    with _lock:
        if name not in _detectors:
            _detectors[name] = _build(name)
        return _detectors[name]


def _build(name: str) -> FrameDetector:
    factory = _FACTORIES.get(name)
    if factory is None and ":" in name:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DetectorError(f"cannot import detector {name!r}: {exc}") from None
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise DetectorError(f"unknown detector {name!r}: use one of {known}, or 'package.module:Class'")
    detector = factory()
    if not isinstance(detector, FrameDetector):
        raise DetectorError(f"detector {name!r} lacks name, license, labels or scores(frames)")
    return detector
