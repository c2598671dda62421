"""The typed records that flow between stages: a validated row, its plan, and what went wrong."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from moviegen.models.registry import ModelRef
from moviegen.redact import redact_text, redact_value


@dataclass(frozen=True)
class ShotSpec:
    """One shot of a multi-shot row (the ``shots`` column), validated: its seed is filled in."""

    prompt: str
    duration_s: float
    seed: int
    negative_prompt: str = ""
    reference_image: str | None = None  # this shot starts from the image (image-to-video)


TRANSITIONS = ("cut", "crossfade", "fade")

CONTINUITIES = ("none", "last_frame")


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
    # Rendition columns (see moviegen/render/): text, brand, sound, framing and the row's own look.
    title: str = ""
    cta: str = ""
    logo_uri: str | None = None
    logo_position: str = "top_right"
    music_uri: str | None = None
    fit: str | None = None
    anchor: str | None = None
    look: tuple[tuple[str, Any], ...] = ()  # (style parameter, value) pairs that replace the style's
    # Generation beyond text-to-video (docs/models.md): conditioning, soundtrack, best-of-N.
    reference_image: str | None = None  # image-to-video from this image
    source_video: str | None = None  # video-to-video: edit this clip as the prompt describes
    edit_strength: float | None = None  # how far the edit may move from the source (0-1)
    audio_prompt: str = ""  # a soundtrack to generate and mix under the video
    best_of: int = 1  # candidates generated (seeds seed..seed+N-1); the best CLIP score is kept
    loras: tuple[tuple[str, float], ...] = ()  # (uri, scale) LoRA adapters the row asks for
    # A multi-shot row: its shots in order, how they are joined, and whether each starts from the last frame.
    shots: tuple[ShotSpec, ...] = ()
    transition: str = "cut"
    transition_s: float = 0.5
    continuity: str = "none"
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def task(self) -> str:
        """t2v, i2v (a reference image) or v2v (a source clip to edit)."""
        return "i2v" if self.reference_image else "v2v" if self.source_video else "t2v"

    def shot_specs(self) -> tuple[ClipSpec, ...]:
        """Each shot as a one-shot row of its own: the row's model, look and settings, the shot's text,
        length, seed and reference image; no soundtrack (one plays under the whole ad)."""
        return tuple(
            replace(
                self,
                prompt=shot.prompt,
                negative_prompt=shot.negative_prompt,
                duration_s=shot.duration_s,
                seed=shot.seed,
                reference_image=shot.reference_image,
                source_video=None,
                audio_prompt="",
                shots=(),
            )
            for shot in self.shots
        )


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

    def __post_init__(self) -> None:
        # Every problem ends up in rejected/, run.json, the report and the terminal: no secrets in any.
        object.__setattr__(self, "message", redact_text(self.message))
        object.__setattr__(self, "details", redact_value(self.details))

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


# Frames over which a continued segment eases in from the frame it continues (moviegen.generation.continuation).
SEAM_FRAMES = 4


@dataclass(frozen=True)
class ClipPlan:
    """A spec resolved against a model: exactly what to generate, and its identity."""

    spec: ClipSpec
    model: ModelRef
    model_revision: str
    request: GenerationRequest
    fps: int
    # Best-of-N: how many seeds, and the scorer (location@revision) that picks one; 1 and None: no choice.
    best_of: int = 1
    scorer: str | None = None
    # Pixel-affecting pipeline options (PipelineOptions.identity()), empty by default.
    options: tuple[tuple[str, str], ...] = ()
    audio: Any = None  # moviegen.generation.soundtrack.AudioRequest when the row has an audio_prompt
    loras: tuple[LoraAdapter, ...] = ()  # configuration's then row's adapters, fetched (by content)
    # A row longer than one call (``extend: continue``): calls in all, and the image-to-video model
    # (and its revision) that makes each next segment from the last frame of the one before.
    segments: int = 1
    continuation: ModelRef | None = None
    continuation_revision: str | None = None
    # A shot with ``continuity: last_frame``: the clip_key of the shot whose last frame it starts from.
    after: str | None = None
    # A multi-shot row: its shots' plans in order, the frames each gives the assembled master, and
    # the seams (``transition``, over ``transition_frames`` frames; a cut has none).
    shots: tuple[ClipPlan, ...] = ()
    shot_frames: tuple[int, ...] = ()
    transition: str = "cut"
    transition_frames: int = 0

    @property
    def clip_key(self) -> str:
        """Hash of everything that determines the generated pixels. Same key, same output.

        Text-to-video rows hash exactly what they always did; conditioning inputs (by content
        hash), best-of-N and pixel-affecting pipeline options are added only when present. A
        multi-shot row's key is its shots' keys and how they are assembled: editing a shot changes it.
        """
        if self.shots:
            over = 0 if self.transition == "cut" else self.transition_frames  # a cut's transition_s changes nothing
            assembly = {"frames": self.shot_frames, "transition": self.transition, "over": over}
            return stable_hash({"v": 1, "shots": [shot.clip_key for shot in self.shots], "assembly": assembly})
        identity: dict[str, Any] = {
            "v": 1,
            "model": self.model.location,
            "revision": self.model_revision,
            "request": self.request.identity(),
        }
        if self.best_of > 1:
            identity["best_of"] = {"n": self.best_of, "scorer": self.scorer}
        if self.options:
            identity["options"] = dict(self.options)
        if self.loras:
            identity["loras"] = [lora.identity() for lora in self.loras]
        if self.segments > 1 and self.continuation is not None:
            identity["continue"] = {
                "segments": self.segments,
                "frames": self.frames,
                "model": self.continuation.location,
                "revision": self.continuation_revision,
                "seam": SEAM_FRAMES,
            }
        if self.after is not None:
            identity["after"] = self.after
        return stable_hash(identity)

    @property
    def frames(self) -> int:
        """Frames of the finished master: one call's, (continued) what the row's duration takes, or
        (multi-shot) the shots' less the crossfades' overlaps."""
        if self.shots:
            overlap = self.transition_frames if self.transition == "crossfade" else 0
            return sum(self.shot_frames) - overlap * (len(self.shots) - 1)
        if self.segments == 1:
            return self.request.num_frames
        return min(self.model.info.frames_needed(self.spec.duration_s),
                   self.request.num_frames + (self.segments - 1) * (self.request.num_frames - 1))  # fmt: skip

    @property
    def calls(self) -> int:
        """Pipeline calls the clip takes: best-of-N's candidates, continuations, every shot's."""
        if self.shots:
            return sum(shot.calls for shot in self.shots)
        return self.best_of + self.segments - 1

    @property
    def seeds(self) -> tuple[int, ...]:
        """The candidate seeds of best-of-N: the row's seed and the next ones (wrapping at 2**32)."""
        return tuple((self.request.seed + i) % 2**32 for i in range(self.best_of))

    @property
    def sound_key(self) -> str | None:
        """The generated soundtrack's identity, or None without an audio prompt."""
        return None if self.audio is None else self.audio.key

    @property
    def rendition_source_key(self) -> str:
        """What a rendition is made from: the clip's pixels and, when generated, its soundtrack.

        The rendition key hashes this (not the soundtrack file's bytes), so it is known at planning,
        before anything is generated.
        """
        if self.audio is None:
            return self.clip_key
        return stable_hash({"clip": self.clip_key, "sound": self.sound_key})

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Plans with the same batch key are generated in one pipeline call."""
        if self.shots:  # generated shot by shot, in order, on its own
            return ("shots", self.clip_key)
        return (self.model.location, self.model.info.scheduler_shift, self.loras, *self.request.batch_key())

    def loras_record(self) -> list[dict[str, Any]]:
        """The adapters as the manifest, sidecar and C2PA manifest record them: file name, content hash, scale.

        The file name, not the URI: a URI can carry credentials or name an internal host.
        """
        return [
            {"name": lora.uri.rstrip("/").rsplit("/", 1)[-1], "sha256": lora.sha256, "scale": lora.scale}
            for lora in self.loras
        ]

    def shots_record(self) -> list[dict[str, Any]]:
        """A multi-shot row's shots as the sidecar and the report list them: prompt, seed, where each
        lies in the ad (seconds; a crossfade's shots overlap), its clip_key and calls; empty otherwise."""
        overlap = self.transition_frames if self.transition == "crossfade" else 0
        records, start = [], 0
        for shot, frames in zip(self.shots, self.shot_frames, strict=True):
            records.append(
                {
                    "prompt": shot.spec.prompt,
                    "seed": shot.spec.seed,
                    "start_s": round(start / self.fps, 6),
                    "end_s": round((start + frames) / self.fps, 6),
                    "frames": frames,
                    "clip_key": shot.clip_key,
                    "segments": shot.segments,
                    "continues_last_frame": shot.after is not None,
                }
            )
            start += frames - overlap
        return records


def stable_hash(value: Any, length: int = 20) -> str:
    """A short hex digest of a JSON-able value, independent of dict order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one clip's pixels depend on (its clip_key is a hash of ``identity()`` and the model).

    Image-to-video (``task`` i2v) and video-to-video (v2v) requests carry their input's content
    hash, which is part of the identity, and its local path, which is not (a path says where a
    copy is, not what it holds).
    """

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    num_frames: int
    steps: int
    guidance: float
    task: str = "t2v"
    reference_sha256: str | None = None  # i2v: the reference image's content
    source_sha256: str | None = None  # v2v: the source clip's content
    strength: float | None = None  # v2v: how far the result may move away from the source (0-1)
    reference_path: str | None = field(default=None, compare=False)
    source_path: str | None = field(default=None, compare=False)
    fps: int | None = field(default=None, compare=False)  # the model's rate: LTX's frame_rate, the source's resampling

    def identity(self) -> dict[str, Any]:
        """What the clip_key hashes: the text-to-video fields as before, plus the conditioning when present."""
        values = asdict(self)
        for name in ("reference_path", "source_path", "fps"):
            values.pop(name)
        if values["task"] == "t2v":
            values.pop("task")
        return {k: v for k, v in values.items() if v is not None}

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with the same key can share one pipeline call (one reference image or source clip per call)."""
        return (
            self.width,
            self.height,
            self.num_frames,
            self.steps,
            self.guidance,
            self.task,
            self.reference_sha256,
            self.source_sha256,
            self.strength,
        )


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter a clip asked for: its fetched safetensors file (by content) and scale."""

    sha256: str
    scale: float
    path: str = field(default="", compare=False)  # where the local copy is; says nothing of the content
    uri: str = field(default="", compare=False)  # what the catalog or configuration named (for the records)

    def identity(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "scale": self.scale}


DEFAULT_EDIT_STRENGTH = 0.6
