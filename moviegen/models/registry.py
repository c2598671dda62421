"""Known model families and models: hub ids, defaults, and how a catalog's ``model`` value resolves.

A ``model`` value is one of:
- a registry name (``tiny-wan``, ``wan2.1-t2v-1.3b``, ...), the friendly way;
- a Hugging Face hub id (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``), loaded from the local hub cache
  when ``HF_HUB_OFFLINE=1`` and downloaded otherwise;
- a local folder written by ``save_pretrained`` (its ``model_index.json`` names the family).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from moviegen.config import TINY_MODEL_ID

ASPECTS = ("16:9", "9:16", "1:1")


@dataclass(frozen=True)
class ModelFamily:
    """One diffusers pipeline family: how to load it and how its frame counts work."""

    name: str
    pipeline_class: str  # a class exported by diffusers
    frames_multiple: int  # num_frames must be k * frames_multiple + 1
    size_multiple: int  # width and height must be multiples of this
    max_sequence_length: int = 512


@dataclass(frozen=True)
class ModelInfo:
    """A model's identity and generation defaults."""

    name: str
    family: ModelFamily
    source: str  # hub id, or TINY_MODEL_ID for the locally built tiny model
    sizes: dict[str, tuple[int, int]]  # aspect -> (width, height)
    fps: int
    steps: int
    guidance: float
    max_frames: int
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def size_for(self, aspect: str) -> tuple[int, int]:
        return self.sizes[aspect]

    def frames_for(self, duration_s: float) -> int:
        """Frames to generate so the clip lasts at least ``duration_s`` (capped at ``max_frames``)."""
        m = self.family.frames_multiple
        wanted = max(1, math.ceil(duration_s * self.fps))
        frames = math.ceil((wanted - 1) / m) * m + 1
        return min(frames, self.max_frames)


WAN = ModelFamily("wan", "WanPipeline", frames_multiple=4, size_multiple=16)

MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            name="tiny-wan",
            family=WAN,
            source=TINY_MODEL_ID,
            sizes={"16:9": (480, 272), "9:16": (272, 480), "1:1": (352, 352)},
            fps=16,
            steps=8,
            guidance=5.0,
            max_frames=161,
            notes="Random weights, built offline: abstract moving colour, for demos and tests.",
            aliases=(TINY_MODEL_ID,),
        ),
        ModelInfo(
            name="wan2.1-t2v-1.3b",
            family=WAN,
            source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            sizes={"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)},
            fps=16,
            steps=50,
            guidance=5.0,
            max_frames=81,
            notes="480p text-to-video; about 8 GB of VRAM with CPU offload.",
        ),
        ModelInfo(
            name="wan2.1-t2v-14b",
            family=WAN,
            source="Wan-AI/Wan2.1-T2V-14B-Diffusers",
            sizes={"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)},
            fps=16,
            steps=50,
            guidance=5.0,
            max_frames=81,
            notes="720p text-to-video; needs a large GPU.",
        ),
        ModelInfo(
            name="wan2.2-ti2v-5b",
            family=WAN,
            source="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            sizes={"16:9": (1280, 704), "9:16": (704, 1280), "1:1": (960, 960)},
            fps=24,
            steps=50,
            guidance=5.0,
            max_frames=121,
            notes="720p at 24 fps, text- and image-to-video in one model.",
        ),
    ]
}

FAMILIES = {WAN.name: WAN}
_FAMILY_BY_PIPELINE = {f.pipeline_class: f for f in FAMILIES.values()}


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``model`` value: what to load and the defaults to generate with."""

    requested: str  # what the catalog or configuration said
    info: ModelInfo
    location: str  # hub id, local folder, or TINY_MODEL_ID

    @property
    def is_tiny(self) -> bool:
        return self.location == TINY_MODEL_ID


class UnknownModelError(ValueError):
    """The model value names nothing loadable."""


def resolve_model(value: str) -> ModelRef:
    """Resolve a catalog/configuration ``model`` value without loading anything."""
    value = value.strip()
    lowered = value.lower()
    for info in MODELS.values():
        if lowered == info.name or value == info.source or value in info.aliases:
            return ModelRef(value, info, info.source)
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise UnknownModelError(
                f"folder {value} has no model_index.json: point model at a diffusers pipeline folder "
                "(written by save_pretrained)"
            )
        cls = json.loads(index.read_text()).get("_class_name", "")
        family = _FAMILY_BY_PIPELINE.get(cls)
        if family is None:
            raise UnknownModelError(
                f"folder {value} holds a {cls or 'unknown'} pipeline; supported: "
                + ", ".join(sorted(_FAMILY_BY_PIPELINE))
            )
        base = _closest_info(family, path.name)
        return ModelRef(value, base, str(path.resolve()))
    if value.count("/") == 1 and all(value.split("/")):
        family = _family_from_name(value)
        if family is not None:
            return ModelRef(value, _closest_info(family, value), value)
    known = ", ".join(sorted(MODELS))
    raise UnknownModelError(
        f"unknown model {value!r}: use one of {known}, a hub id of a supported family "
        "(Wan), or a local folder written by save_pretrained"
    )


def _family_from_name(name: str) -> ModelFamily | None:
    lowered = name.lower()
    return WAN if "wan" in lowered else None


def _closest_info(family: ModelFamily, name: str) -> ModelInfo:
    """Defaults for an unregistered model: the registered one of its family whose name it resembles."""
    lowered = name.lower()
    candidates = [m for m in MODELS.values() if m.family is family and not m.source.startswith("moviegen/")]
    for m in candidates:
        size_tag = m.name.split("-")[-1]
        if size_tag in lowered:
            return ModelInfo(**{**m.__dict__, "name": name, "source": name, "aliases": ()})
    m = candidates[0]
    return ModelInfo(**{**m.__dict__, "name": name, "source": name, "aliases": ()})


def fingerprint_folder(path: Path) -> str:
    """A stable identity of a saved pipeline folder, part of every clip_key made with it.

    Hashes every file's name and, for files up to 64 MB (configs, tokenizers, tiny weights), its
    bytes; bigger weight files contribute their size only, since real models are many GB. A hub
    snapshot folder's commit hash, when the path contains one, is used as is.
    """
    parts = path.resolve().parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode())
        if f.stat().st_size <= 64 * 2**20:
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]
