"""Reading a watermark back from a video, identifying a clip, and the delivery gate's watermark check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.media import probe, run_ffmpeg
from moviegen.store import MANIFEST_SCHEMA, OutputRoot
from moviegen.watermark.model import Watermarker, default_watermarker, working_size
from moviegen.watermark.payload import (
    SAMPLE_FRAMES,
    WatermarkReading,
    bit_errors,
    near_payloads,
    payload_hex,
    reading_from_logits,
)


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
