"""The RivaGAN encoder and decoder on ONNX Runtime: embedding frames at the model's working size."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from moviegen.watermark import rivagan
from moviegen.watermark.payload import PAYLOAD_BITS, WatermarkError, WatermarkReading, payload_bits, reading_from_logits

# Working size: frames are scaled so their short side is this many pixels before the encoder runs,
# and files are scaled the same way before the decoder runs. 144 was the most robust of 112-270
# after H.264 at CRF 33 on 1080x1920 footage, and the encoder costs grow with its area.
WORK_SHORT_SIDE = 144

# RivaGAN's residual lives almost entirely on one colour axis (first principal component of the
# encoder's RGB residual over photographs: 88% of its energy); luma alone carries no bits at all.
MARK_AXIS = np.array([-0.58, 0.59, -0.56], np.float32) / np.float32(np.linalg.norm([-0.58, 0.59, -0.56]))

# Residual gain on that axis: the encoder's own strength (0.016 of the range) times this; PSNR stays
# about 41 dB on 1080x1920 frames (goal: at least 40).
GAIN = 1.25

# Per-bit weighting: rounds of trial embed + decode on one frame per chunk, and the logit margin
# a bit should reach before compression.
ADAPT_ROUNDS = 2

ADAPT_TARGET = 8.0

ADAPT_STEP = (0.7, 2.0)  # how far one round may move a weight

ADAPT_RANGE = (0.5, 4.0)  # weights stay within this


_BATCH = 8  # frames per onnxruntime call: bounds memory at any working size

# The graphs run as moviegen.watermark.rivagan rebuilds them (2-D convolutions, same weights). The encoder's
# 32-to-32 attention convolution is replaced by a rank-ENCODER_RANK separable pair (about 76% of its
# arithmetic; the residual keeps its bit margins); the decoder stays exact (DECODER_RANK None), since
# its logits decide delivery and verification.
ENCODER_RANK: int | None = 32

DECODER_RANK: int | None = None

# The trial decode that weights the bits only estimates margins: a rank-64 decoder (logits within
# about 0.4 of the exact ones on photographs, about half the cost) is enough for it.
TRIAL_DECODER_RANK: int | None = 64


def model_dir() -> Path:
    """The folder of invisible-watermark's bundled RivaGAN ONNX files (the package is not imported)."""
    spec = importlib.util.find_spec("imwatermark")
    if spec is None or not spec.submodule_search_locations:
        raise WatermarkError("the RivaGAN models come with invisible-watermark: pip install invisible-watermark")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("rivagan_encoder.onnx", "rivagan_decoder.onnx"):
        if not (folder / name).is_file():
            raise WatermarkError(f"{folder / name} is missing: reinstall invisible-watermark")
    return folder


def providers() -> list[str]:
    """CUDA when onnxruntime has it (onnxruntime-gpu), else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def working_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) the models see for a frame of this size: short side WORK_SHORT_SIDE, even sides.

    The same rule serves the embed and the reader, so a file's own size tells the reader the scale.
    """
    scale = WORK_SHORT_SIDE / min(width, height)
    return max(16, 2 * round(width * scale / 2)), max(16, 2 * round(height * scale / 2))


class Watermarker:
    """The RivaGAN encoder and decoder, loaded once; ``default_watermarker()`` shares one per process.

    ``embed`` keeps no state between calls, so a clip can be marked in consecutive chunks of any
    length (each chunk pays one trial embed for its bit weights: chunks of 16 frames or more keep
    that under a tenth of the cost).
    """

    def __init__(self, threads: int | None = None) -> None:
        folder = model_dir()
        options = ort.SessionOptions()
        # The cores this process may use (a pinned worker, a container), not the machine's: more
        # threads than cores make onnxruntime's spinning threads slow the encodes beside them.
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        options.intra_op_num_threads = threads or usable or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        chosen = providers()
        encoder = rivagan.encoder_model(rivagan.load_weights(folder / "rivagan_encoder.onnx"), ENCODER_RANK)
        decoder_weights = rivagan.load_weights(folder / "rivagan_decoder.onnx")
        decoder = rivagan.decoder_model(decoder_weights, DECODER_RANK, DECODER_RANK)
        trial = rivagan.decoder_model(decoder_weights, TRIAL_DECODER_RANK, TRIAL_DECODER_RANK)
        self.encoder = ort.InferenceSession(encoder, options, providers=chosen)
        self.decoder = ort.InferenceSession(decoder, options, providers=chosen)
        self.trial_decoder = ort.InferenceSession(trial, options, providers=chosen)
        self.provider = self.encoder.get_providers()[0]

    def embed(self, frames: np.ndarray, payload: int) -> np.ndarray:
        """Mark uint8 RGB frames (N, H, W, 3) of any size with a 32-bit payload; returns new frames.

        1. scale the frames to the working size, 2. weight the bits on a trial frame, 3. run the
        encoder on the batch, 4. keep the residual's colour-axis part, scale it up and add it.
        """
        _check_frames(frames)
        if not 0 <= payload < 1 << PAYLOAD_BITS:
            raise ValueError(f"payload must be a 32-bit unsigned integer, got {payload}")
        count, height, width, _ = frames.shape
        if count == 0:
            return frames.copy()
        # 1. Working size
        size = working_size(width, height)
        small = np.stack([shrink(f, size) for f in frames])
        signs = payload_bits(payload).astype(np.float32) * 2 - 1
        # 2. Bit weights from the middle frame
        weights = self._bit_weights(small[count // 2], signs)
        # 3. Encoder residual on the colour axis, in uint8 units
        residual = self._residual(small, signs * weights)
        # 4. Scale up and add (cv2.add rounds and saturates)
        marked = np.empty_like(frames)
        for i in range(count):
            big = cv2.resize(residual[i][..., None] * MARK_AXIS, (width, height), interpolation=cv2.INTER_LINEAR)
            marked[i] = cv2.add(frames[i], big, dtype=cv2.CV_8U)
        return marked

    def logits(self, small: np.ndarray) -> np.ndarray:
        """Decoder logits (N, 32) for uint8 RGB frames already at their working size (> 0 reads as 1)."""
        batches = range(0, len(small), _BATCH)
        out = [self.decoder.run(None, {"frame": _to_model(small[i : i + _BATCH])})[0] for i in batches]
        return np.concatenate(out) if out else np.zeros((0, PAYLOAD_BITS), np.float32)

    def read_frames(self, frames: np.ndarray, expected: int | None = None) -> WatermarkReading:
        """Read the mark from uint8 RGB frames (N, H, W, 3) at their delivered size."""
        _check_frames(frames)
        size = working_size(frames.shape[2], frames.shape[1])
        small = np.stack([shrink(f, size) for f in frames])
        return reading_from_logits(self.logits(small), expected)

    def _residual(self, small: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """The encoder's residual for each frame, projected on MARK_AXIS, times GAIN: (N, h, w) float32."""
        data = signs.astype(np.float32)[None]
        parts = []
        for i in range(0, len(small), _BATCH):
            x = _to_model(small[i : i + _BATCH])
            out = self.encoder.run(None, {"frame": x, "data": np.repeat(data, len(x), 0)})[0]
            # The residual is in [-1, 1] units: 127.5 turns it into uint8 steps.
            parts.append(np.einsum("nchw,c->nhw", out, MARK_AXIS * np.float32(127.5 * GAIN)))
        return np.concatenate(parts)

    def _bit_weights(self, frame: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Per-bit data weights for one chunk: raise bits whose trial margin falls short of ADAPT_TARGET."""
        weights = np.ones(PAYLOAD_BITS, np.float32)
        for _ in range(ADAPT_ROUNDS):
            residual = self._residual(frame[None], signs * weights)[0]
            trial = cv2.add(frame, residual[..., None] * MARK_AXIS, dtype=cv2.CV_8U)
            margin = self.trial_decoder.run(None, {"frame": _to_model(trial[None])})[0][0] * signs
            weights *= np.clip(1 + (ADAPT_TARGET - margin) / ADAPT_TARGET, *ADAPT_STEP)
            weights = np.clip(weights, *ADAPT_RANGE)
        return weights


_default: Watermarker | None = None

_default_lock = threading.Lock()


def default_watermarker() -> Watermarker:
    """The process-wide Watermarker (ONNX sessions are created once and reused)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Watermarker()
        return _default


def shrink(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a frame down to (width, height): exact halvings first (cv2's fast integer-factor
    path, about 2.5x quicker at 1080x1920 than one non-integer step), then one area step."""
    width, height = size
    while frame.shape[1] >= 4 * width and frame.shape[0] >= 4 * height:
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")


def _to_model(small: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, 3) RGB -> float32 (N, 3, h, w) in [-1, 1]: the graphs' frame input."""
    x = small.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
