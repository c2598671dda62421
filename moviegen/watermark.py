"""Invisible watermark: a 32-bit RivaGAN mark embedded fast into every rendition, and verified in the file.

Problem: invisible-watermark's RivaGAN loop runs its ONNX encoder on every frame at full resolution
(about 8 s per 1080x1920 frame here) and imports torch to do it. Solution: run the two networks
that ship inside the package through onnxruntime (rebuilt as 2-D graphs by ``moviegen.rivagan``,
the encoder's costliest layer made separable), on frames scaled down to a small working
size derived from the frame's own dimensions (short side 144), batched through the graphs' dynamic
batch axis, and scale only the watermark residual back up to full size (Meta Video Seal's approach).
Three further steps make it robust at that size (each measured in benchmarks/bench_watermark.py):

- the residual is projected onto its own colour axis (green against magenta: about 88% of RivaGAN's
  residual energy) and scaled by ``GAIN``; the rest costs PSNR without carrying the bits;
- the 32 data inputs are weighted per chunk: a trial embed on the chunk's middle frame is decoded,
  and bits that came out weak (the picture's own content pulls them the other way) get more weight;
- the reader decodes frames sampled over the file at the working size of the file's own dimensions
  (the same rule as the embed) and votes with the mean logit of each bit.

The payload is 24 bits of identifier (a hash of clip_key and channel) and an 8-bit check value, so a
payload found in the wild leads back to its manifest row and a random word rarely passes the check.
See ``reading_from_logits`` for when a reading counts as verified and what a chance match costs.

Nothing here imports torch or imwatermark's Python module: the .onnx files are located on disk and
their weights read from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import onnxruntime as ort

from moviegen import rivagan
from moviegen.media import probe, run_ffmpeg
from moviegen.publish import MANIFEST_SCHEMA, OutputRoot

PAYLOAD_BITS = 32
# Changes whenever the embed changes what a marked frame looks like: part of a rendition's key.
WATERMARK_VERSION = "rivagan-2d-enc-r32-ws144-axis-g1.25-adapt2-trial-r64-v2"
# 24 bits of identifier: a new rendition shares its payload with one of M issued ones with
# probability M / 2**24 (0.06% for M = 10,000; ``identify`` then returns the latest such row).
# 8 check bits: a random word passes 1 time in 256. Verification needs the voted word within
# MAX_BIT_ERRORS of an expected payload (or of a manifest row's), so a chance match on unmarked
# video is 33 / 2**32 (about 8e-9) per expected payload and 33 M / 2**32 for a lookup in a manifest
# of M payloads, before the per-frame agreement below (unmarked clips fail that too).
ID_BITS = 24
CHECK_BITS = PAYLOAD_BITS - ID_BITS

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

# Reading: frames decoded per file, spread evenly over it.
SAMPLE_FRAMES = 16
# Verification against an expected payload: the soft-voted word may differ from it in at most
# MAX_BIT_ERRORS bits (smooth content, like the tiny model's colour fields, can pull one bit the wrong
# way in every frame of a rendition), and at least MIN_BIT_ACCURACY of the per-frame bits must agree
# with it (unmarked clips read 0.50-0.75 against real payloads).
MAX_BIT_ERRORS = 1
MIN_BIT_ACCURACY = 0.8
# Reading an unknown payload (found in the wild): the check value must hold and the per-frame bits
# must agree with the voted word this often; ``identify`` then requires a manifest row too.
MIN_AGREEMENT = 0.85

_BATCH = 8  # frames per onnxruntime call: bounds memory at any working size

# The graphs run as moviegen.rivagan rebuilds them (2-D convolutions, same weights). The encoder's
# 32-to-32 attention convolution is replaced by a rank-ENCODER_RANK separable pair (about 76% of its
# arithmetic; the residual keeps its bit margins); the decoder stays exact (DECODER_RANK None), since
# its logits decide delivery and verification.
ENCODER_RANK: int | None = 32
DECODER_RANK: int | None = None
# The trial decode that weights the bits only estimates margins: a rank-64 decoder (logits within
# about 0.4 of the exact ones on photographs, about half the cost) is enough for it.
TRIAL_DECODER_RANK: int | None = 64


class WatermarkError(RuntimeError):
    """The watermark models cannot be found or run; the message says what to install."""


# 1. Payload ------------------------------------------------------------------------------------


def payload_check(identifier: int) -> int:
    """The 8-bit check value of a 24-bit identifier (a hash, so random words pass 1 time in 256)."""
    digest = hashlib.sha256(b"moviegen-watermark-check:" + identifier.to_bytes(3, "big")).digest()
    return digest[0] >> (8 - CHECK_BITS)


def payload_for(clip_key: str, channel: str) -> int:
    """The 32-bit payload of one rendition: 24 bits of hash(clip_key, channel), then its check value.

    Deterministic, so a rerun marks the same rendition with the same payload; the manifest records
    it (``watermark_payload``, hex) so a payload found in a file leads back to its row.
    """
    digest = hashlib.sha256(f"moviegen-watermark-id:{clip_key}/{channel}".encode()).digest()
    identifier = int.from_bytes(digest[:3], "big")
    return (identifier << CHECK_BITS) | payload_check(identifier)


def payload_is_valid(payload: int) -> bool:
    """Whether a 32-bit word carries a correct check value."""
    return 0 <= payload < 1 << PAYLOAD_BITS and payload_check(payload >> CHECK_BITS) == payload & 0xFF


def bit_errors(word: int, payload: int) -> int:
    """How many of the 32 bits differ."""
    return (word ^ payload).bit_count()


def near_payloads(word: int) -> list[int]:
    """The valid payloads within MAX_BIT_ERRORS bits of a voted word, closest first."""
    candidates = [word] + [word ^ (1 << i) for i in range(PAYLOAD_BITS)] if MAX_BIT_ERRORS else [word]
    return [c for c in candidates if payload_is_valid(c)]


def payload_hex(payload: int) -> str:
    """The payload as the manifest stores it: 8 lowercase hex digits."""
    return f"{payload:08x}"


def payload_bits(payload: int) -> np.ndarray:
    """The payload as 32 bits, most significant first (the order of the model's data input)."""
    return np.array([(payload >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], np.uint8)


def bits_payload(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits), 2)


# 2. Models -------------------------------------------------------------------------------------


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


# 3. Embed and decode ---------------------------------------------------------------------------


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


# 4. Reading files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatermarkReading:
    """What the frames of a file say: the voted word, how well it is supported, and the verdict.

    ``bit_accuracy`` is the share of per-frame bits that agree with the expected payload when one
    was given, else with the voted word. ``margin`` is the weakest bit's mean logit in the vote.
    """

    word: int
    bit_accuracy: float
    margin: float
    check_ok: bool
    verified: bool
    frames: int
    expected: int | None = None
    logits: np.ndarray = field(default_factory=lambda: np.zeros((0, PAYLOAD_BITS)), repr=False, compare=False)

    @property
    def payload(self) -> int | None:
        """The payload found, or None when the file does not verifiably carry one."""
        if not self.verified:
            return None
        return self.expected if self.expected is not None else self.word

    def against(self, expected: int) -> WatermarkReading:
        """The same frames judged against an expected payload (no second decode)."""
        return reading_from_logits(self.logits, expected)

    def describe(self) -> str:
        if self.expected is not None:
            verdict = "verified" if self.verified else "NOT verified"
            return (
                f"watermark {verdict}: expected {payload_hex(self.expected)}, read {payload_hex(self.word)}, "
                f"bit accuracy {self.bit_accuracy:.3f} over {self.frames} frames"
            )
        if self.verified:
            return f"watermark {payload_hex(self.word)} (bit accuracy {self.bit_accuracy:.3f}, {self.frames} frames)"
        return f"no watermark found ({self.frames} frames read)"


def reading_from_logits(logits: np.ndarray, expected: int | None = None) -> WatermarkReading:
    """Vote the bits over frames (mean logit per bit) and decide whether the mark verifies.

    With an expected payload: the voted word may differ from it in at most MAX_BIT_ERRORS bits and
    the per-frame bit accuracy must reach MIN_BIT_ACCURACY; a chance match on unmarked video needs
    31 of 32 voted bits right (33 / 2**32, about 8e-9, per check). Without one: the check value must
    hold (a random word passes 1 time in 256) and the per-frame bits must agree with the vote
    (MIN_AGREEMENT); ``identify`` looks the word up in the manifest with the same tolerance.
    """
    if len(logits) == 0:
        return WatermarkReading(0, 0.0, 0.0, False, False, 0, expected, logits)
    mean = logits.mean(axis=0)
    voted = mean > 0
    word = bits_payload(voted)
    per_frame = logits > 0
    check_ok = payload_is_valid(word)
    margin = float(np.abs(mean).min())
    if expected is not None:
        accuracy = float((per_frame == payload_bits(expected).astype(bool)).mean())
        verified = bit_errors(word, expected) <= MAX_BIT_ERRORS and accuracy >= MIN_BIT_ACCURACY
    else:
        accuracy = float((per_frame == voted).mean())
        verified = check_ok and accuracy >= MIN_AGREEMENT
    return WatermarkReading(word, accuracy, margin, check_ok, verified, len(logits), expected, logits)


def sample_frames(path: Path, count: int = SAMPLE_FRAMES) -> np.ndarray:
    """Decode up to ``count`` frames spread evenly over a video, scaled by ffmpeg to the working size."""
    info = probe(path)
    width, height = working_size(info.width, info.height)
    step = max(1, info.frames // count) if info.frames else 1
    raw = run_ffmpeg(
        [
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-vf",
            f"select=not(mod(n\\,{step})),scale={width}:{height}:flags=area",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            str(count),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        what=f"reading frames of {path.name} for the watermark",
    )
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def read_video(path: Path, expected: int | None = None, *, watermarker: Watermarker | None = None) -> WatermarkReading:
    """Read the watermark of a video file as found: sampled frames at the working size of its own dimensions."""
    marker = watermarker or default_watermarker()
    return reading_from_logits(marker.logits(sample_frames(Path(path))), expected)


def verify_video(path: Path, expected_payload: int, *, watermarker: Watermarker | None = None) -> WatermarkReading:
    """Read a video and compare with the payload it should carry (``reading.verified``)."""
    return read_video(path, expected_payload, watermarker=watermarker)


@dataclass(frozen=True)
class Identification:
    """A file's watermark traced back to the output root that issued it."""

    reading: WatermarkReading
    manifest_row: dict[str, Any] | None

    @property
    def verified(self) -> bool:
        """The file carries a payload this output root issued, as well as the delivery gate demands."""
        return self.manifest_row is not None and self.reading.verified

    def to_json(self) -> dict[str, Any]:
        """The ``watermark`` part of ``moviegen verify --json``."""
        payload = self.reading.payload
        row = None
        if self.manifest_row is not None:
            row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in self.manifest_row.items()}
        return {
            "payload": payload_hex(payload) if payload is not None else None,
            "bit_accuracy": round(self.reading.bit_accuracy, 4),
            "verified": self.verified,
            "manifest_row": row,
        }


def identify(path: Path, out: OutputRoot, *, watermarker: Watermarker | None = None) -> Identification:
    """Read a file's mark and look its payload up in ``out``'s manifest (latest row with that payload).

    Verified only when a payload the manifest issued is within MAX_BIT_ERRORS bits of the voted word
    (a valid payload: its check value holds) and the frames support it as the delivery gate requires.
    """
    reading = read_video(path, watermarker=watermarker)
    candidates = near_payloads(reading.word)
    if not candidates:
        return Identification(reading, None)
    wanted = {payload_hex(c): c for c in candidates}
    rows = [r for r in out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist() if r["watermark_payload"] in wanted]
    if not rows:
        return Identification(reading, None)
    # The closest payload wins (the exact word when issued); among its rows, the latest.
    row = min(
        rows, key=lambda r: (bit_errors(reading.word, wanted[r["watermark_payload"]]), -r["published_at"].timestamp())
    )
    return Identification(reading.against(wanted[row["watermark_payload"]]), row)


# 5. Delivery gate and placement ----------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """The delivery gate's verdict on one final rendition."""

    passed: bool
    bit_accuracy: float
    message: str
    reading: WatermarkReading


def delivery_gate(path: Path, expected_payload: int, *, watermarker: Watermarker | None = None) -> GateResult:
    """Pass a final rendition only when its encoded file verifiably carries its expected payload.

    A rendition whose mark was lost (stripped, or re-encoded from the unmarked master) fails with
    its bit accuracy in the message, for the rejected row.
    """
    reading = verify_video(path, expected_payload, watermarker=watermarker)
    return GateResult(reading.verified, reading.bit_accuracy, reading.describe(), reading)


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
