"""Quarantine and the score record: what was held back, where it went, and why every clip passed or not.

A clip the frame gate holds back goes to ``quarantine/<campaign_id>/<clip_id>/`` under the output
root (never under ``published/``): the master, a contact sheet of the frames the detector saw,
and ``verdict.json`` with the rule, the message and every score. Each write is atomic.

Every gate decision, pass or fail, is one row of the ``scores/`` Parquet dataset (SCORES_SCHEMA):
gate ``prompt`` per valid catalog row, gate ``frames`` per generated clip, scores as JSON text.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from moviegen.media import run_ffmpeg
from moviegen.safety.policy import Policy
from moviegen.store import OutputRoot, utc_now

SCORES_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("campaign_id", pa.string()),
        ("clip_id", pa.string()),
        ("row", pa.int64()),
        ("clip_key", pa.string()),
        ("gate", pa.string()),  # prompt | frames
        ("passed", pa.bool_()),
        ("rule", pa.string()),  # the first rule that failed; null when passed
        ("policy", pa.string()),
        ("policy_digest", pa.string()),
        ("scores", pa.string()),  # JSON
        ("checked_at", pa.timestamp("us", tz="UTC")),
    ]
)
CONTACT_COLUMNS = 4
CONTACT_TILE_WIDTH = 240


def score_row(
    run_id: str,
    campaign_id: str,
    clip_id: str,
    row: int | None,
    gate: str,
    passed: bool,
    rule: str | None,
    policy: Policy,
    scores: dict[str, Any],
    clip_key: str | None = None,
) -> dict[str, Any]:
    """One row of the ``scores/`` dataset."""
    return {
        "run_id": run_id,
        "campaign_id": campaign_id,
        "clip_id": clip_id,
        "row": row,
        "clip_key": clip_key,
        "gate": gate,
        "passed": passed,
        "rule": rule,
        "policy": policy.name,
        "policy_digest": policy.digest,
        "scores": json.dumps(scores, sort_keys=True, default=str),
        "checked_at": utc_now(),
    }


def record_scores(out: OutputRoot, rows: list[dict[str, Any]], run_id: str) -> None:
    """Append score rows to the output root's ``scores/`` dataset (one atomic part file)."""
    out.append_rows("scores", SCORES_SCHEMA, rows, run_id)


def contact_sheet(
    frames: np.ndarray, columns: int = CONTACT_COLUMNS, tile_width: int = CONTACT_TILE_WIDTH
) -> np.ndarray:
    """Tile frames (N, H, W, 3) into one image, each shrunk by an integer step to at most ``tile_width``."""
    if len(frames) == 0:
        raise ValueError("a contact sheet needs at least one frame")
    step = max(1, math.ceil(frames.shape[2] / tile_width))
    tiles = frames[:, ::step, ::step]
    count, h, w, _ = tiles.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet[: sheet.shape[0] // 2 * 2, : sheet.shape[1] // 2 * 2]  # even sides for the JPEG encoder


def write_jpeg(image: np.ndarray, path: Path) -> Path:
    """Encode a uint8 RGB image (H, W, 3) as JPEG with ffmpeg."""
    height, width, _ = image.shape
    run_ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "pipe:0", "-frames:v", "1",
         "-q:v", "3", str(path)],
        input_bytes=np.ascontiguousarray(image).tobytes(),
        what="writing a contact sheet",
    )  # fmt: skip
    return path


def quarantine_clip(
    out: OutputRoot,
    campaign_id: str,
    clip_id: str,
    master: Path,
    sampled: np.ndarray | None,
    verdict: dict[str, Any],
) -> str:
    """Put a held-back clip's master, contact sheet and verdict under ``quarantine/``; return that folder."""
    folder = ("quarantine", campaign_id, clip_id)
    with tempfile.TemporaryDirectory(prefix="moviegen-quarantine-") as tmp:
        if sampled is not None and len(sampled):
            sheet = write_jpeg(contact_sheet(sampled), Path(tmp) / "contact.jpg")
            out.put_file(sheet, *folder, "contact.jpg")
    out.put_file(master, *folder, f"master{master.suffix}")
    out.write_json(verdict, *folder, "verdict.json")
    return "/".join(folder)
