"""The typed records that flow between stages: a validated row, its plan, and what went wrong."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from moviegen.generate import GenerationRequest
from moviegen.models.registry import ModelRef


@dataclass(frozen=True)
class ClipSpec:
    """One valid catalog row, with defaults filled in."""

    row: int
    campaign_id: str
    clip_id: str
    prompt: str
    channels: tuple[str, ...]
    negative_prompt: str = ""
    duration_s: float = 3.0
    seed: int = 0
    model: str = ""
    style: str = "none"
    caption: str = ""
    hashtags: tuple[str, ...] = ()
    aspect: str = "16:9"
    steps: int | None = None
    guidance: float | None = None
    # Rendition columns (see moviegen/render.py): text, brand, sound, framing and the row's own look.
    title: str = ""
    cta: str = ""
    logo_uri: str | None = None
    logo_position: str = "top_right"
    music_uri: str | None = None
    fit: str | None = None
    anchor: str | None = None
    look: tuple[tuple[str, Any], ...] = ()  # (style parameter, value) pairs that replace the style's
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Problem:
    """Why a row or clip cannot go on: where (row, clip_id, column), which stage and rule, what to do."""

    row: int | None
    clip_id: str | None
    column: str | None
    stage: str
    rule: str
    message: str
    campaign_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The contract's problem object for ``moviegen validate --json``."""
        return {k: getattr(self, k) for k in ("row", "clip_id", "column", "stage", "rule", "message")}

    def describe(self) -> str:
        where = [f"row {self.row}" if self.row is not None else "catalog"]
        if self.clip_id:
            where.append(f"clip_id {self.clip_id}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}"


@dataclass(frozen=True)
class ClipPlan:
    """A spec resolved against a model: exactly what to generate, and its identity."""

    spec: ClipSpec
    model: ModelRef
    model_revision: str
    request: GenerationRequest
    fps: int

    @property
    def clip_key(self) -> str:
        """Hash of everything that determines the generated pixels. Same key, same output."""
        return stable_hash(
            {
                "v": 1,
                "model": self.model.location,
                "revision": self.model_revision,
                "request": asdict(self.request),
            }
        )

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Plans with the same batch key are generated in one pipeline call."""
        return (self.model.location, *self.request.batch_key())


def stable_hash(value: Any, length: int = 20) -> str:
    """A short hex digest of a JSON-able value, independent of dict order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
