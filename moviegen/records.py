"""Records that pass between stages and the report: a plan, a master, a rendition."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moviegen.spec import ClipPlan, Problem


@dataclass
class CampaignPlan:
    """What a run will do: clips to make (with the channels still missing) and what is already out."""

    todo: list[tuple[ClipPlan, tuple[str, ...]]] = field(default_factory=list)
    already_published: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    adopted: int = 0  # renditions an interrupted run published but did not record (now in the manifest)
    awaiting_review: list[dict[str, Any]] = field(default_factory=list)  # rendered before, still waiting
    rejected_in_review: list[dict[str, Any]] = field(default_factory=list)  # a reviewer's no stands for the key

    @property
    def renditions(self) -> int:
        return sum(len(channels) for _, channels in self.todo)


@dataclass
class Master:
    """A clip's generated master file, or why there is none."""

    clip: ClipPlan
    path: Path | None
    seconds: float = 0.0
    continued_s: float = 0.0  # of those, the continuation segments' (on the continuing model)
    reused: bool = False
    nan_fraction: float = 0.0
    problem: Problem | None = None
    gate_seconds: float = 0.0
    soundtrack: Path | None = None  # the generated soundtrack (WAV), when the row has an audio prompt
    seed: int | None = None  # the seed that made it (best-of-N may choose another than the row's)
    fallbacks: tuple[str, ...] = ()  # memory fall-backs its generation took (see generate_resilient)
    shots: tuple[Master, ...] = ()  # a multi-shot row's: the shots' masters it was assembled from


@dataclass
class Rendition:
    """One channel's outcome for one clip: a manifest row when published, else its problems."""

    clip: ClipPlan
    channel: str
    row: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
