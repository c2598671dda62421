"""Known model families and models: hub ids, defaults, and how a catalog's ``model`` value resolves.

A ``model`` value is one of:
- a registry name (``tiny-wan``, ``wan2.1-t2v-1.3b``, ``ltx-video``, ``cogvideox-5b``, ...), the friendly way;
- a Hugging Face hub id (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, ``Lightricks/LTX-Video``,
  ``THUDM/CogVideoX-5b``), loaded from the local hub cache
  when ``HF_HUB_OFFLINE=1`` and downloaded otherwise;
- a local folder written by ``save_pretrained`` (its ``model_index.json`` names the family).

A row with a ``reference_image`` needs image-to-video and one with a ``source_video`` needs
video-to-video: ``resolve_for_task`` picks the model's own pipeline for that task when its weights
can run it, else its image-to-video companion (``image_model``), else says which models can.

Over 500 lines on purpose: it is one table of every model's facts and the few rules that read it
(tasks, companions, frame counts); split, a model's facts would live in two places.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moviegen.config import TINY_MODEL_ID
from moviegen.models.tiny import TINY_PREFIX

ASPECTS = ("16:9", "9:16", "1:1")


Task = Literal["t2v", "i2v", "v2v"]
TASK_NAMES = {"t2v": "text-to-video", "i2v": "image-to-video", "v2v": "video-to-video"}


@dataclass(frozen=True)
class ModelFamily:
    """One diffusers model family: its pipelines, and how its frame counts and sizes work.

    ``pipelines`` maps the class a checkpoint is saved as (``model_index.json``) to the tasks those
    same weights can run and the pipeline class for each: Wan's text-to-video weights also edit
    videos (WanVideoToVideoPipeline), LTX-Video's also animate an image (LTXImageToVideoPipeline).
    A task the weights cannot run needs another checkpoint (``ModelInfo.image_model``).
    """

    name: str
    pipeline_class: str  # the family's text-to-video pipeline, exported by diffusers
    frames_multiple: int  # num_frames must be k * frames_multiple + 1
    size_multiple: int  # width and height must be multiples of this
    pipelines: dict[str, dict[str, str]] = field(default_factory=dict)
    # The family's quirks, owned here rather than checked by name where they bite:
    # a VAE class kept in float32 when the rest runs in half precision (Wan's is numerically fragile);
    full_precision_vae: str | None = None
    # one checkpoint runs every task of the family (LTX-Video's weights also animate an image);
    one_checkpoint: bool = False
    # (decode_timestep, decode_noise_scale) for checkpoints whose VAE is timestep-conditioned
    # (LTX-Video 0.9.1+ decodes with a little noise: its model card's values).
    decode_noise: tuple[float, float] | None = None

    def tasks_of(self, pipeline_class: str) -> dict[str, str]:
        return self.pipelines.get(pipeline_class, {})

    def call_options(self, pipe: Any) -> dict[str, Any]:
        """This family's own keyword arguments of a call of ``pipe`` (one of its pipelines)."""
        vae_config = getattr(getattr(pipe, "vae", None), "config", None)
        if self.decode_noise and getattr(vae_config, "timestep_conditioning", False):
            timestep, noise_scale = self.decode_noise
            return {"decode_timestep": timestep, "decode_noise_scale": noise_scale}
        return {}


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
    pipeline_class: str = ""  # what the weights are saved as; default: the family's text-to-video pipeline
    image_model: str | None = None  # registry name of the checkpoint that animates a reference image
    # Step- and CFG-distilled checkpoints sample with their own flow-matching timestep shift.
    scheduler_shift: float | None = None

    @property
    def weights_class(self) -> str:
        return self.pipeline_class or self.family.pipeline_class

    @property
    def tasks(self) -> dict[str, str]:
        """Task -> the pipeline class that runs it on these weights."""
        return self.family.tasks_of(self.weights_class)

    def size_for(self, aspect: str) -> tuple[int, int]:
        """The generated size for an aspect; models trained at one size only use it for every aspect
        (the channel renditions crop or pad)."""
        return self.sizes.get(aspect) or next(iter(self.sizes.values()))

    def frames_for(self, duration_s: float) -> int:
        """Frames one call generates so the clip lasts at least ``duration_s`` (capped at ``max_frames``)."""
        return min(self.frames_needed(duration_s), self.max_frames)

    def frames_needed(self, duration_s: float) -> int:
        """Frames ``duration_s`` takes at this model's rate, in the family's k * multiple + 1 steps (uncapped)."""
        m = self.family.frames_multiple
        wanted = max(1, math.ceil(duration_s * self.fps))
        return math.ceil((wanted - 1) / m) * m + 1

    def segments_for(self, duration_s: float) -> int:
        """Calls a clip of ``duration_s`` takes when continued: one clip of ``max_frames``, then continuations
        that each add ``max_frames - 1`` new frames (their first frame is the one they continue from)."""
        needed = self.frames_needed(duration_s)
        if needed <= self.max_frames:
            return 1
        return 1 + math.ceil((needed - self.max_frames) / (self.max_frames - 1))


WAN = ModelFamily(
    "wan",
    "WanPipeline",
    frames_multiple=4,
    size_multiple=16,
    pipelines={
        "WanPipeline": {"t2v": "WanPipeline", "v2v": "WanVideoToVideoPipeline"},
        "WanImageToVideoPipeline": {"i2v": "WanImageToVideoPipeline"},
    },
    full_precision_vae="AutoencoderKLWan",
)
LTX = ModelFamily(
    "ltx",
    "LTXPipeline",
    frames_multiple=8,
    size_multiple=32,
    pipelines={"LTXPipeline": {"t2v": "LTXPipeline", "i2v": "LTXImageToVideoPipeline"}},
    one_checkpoint=True,
    decode_noise=(0.05, 0.025),
)
COGVIDEOX = ModelFamily(
    "cogvideox",
    "CogVideoXPipeline",
    frames_multiple=4,
    size_multiple=16,
    pipelines={
        "CogVideoXPipeline": {"t2v": "CogVideoXPipeline", "v2v": "CogVideoXVideoToVideoPipeline"},
        "CogVideoXImageToVideoPipeline": {"i2v": "CogVideoXImageToVideoPipeline"},
    },
)

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
            max_frames=81,  # Wan 2.1's trained length, like the real models: longer rows are extended
            notes="Random weights, built offline: abstract moving colour, for demos and tests.",
            aliases=(TINY_MODEL_ID,),
            image_model="tiny-wan-i2v",
        ),
        ModelInfo(
            name="tiny-wan-4step",
            family=WAN,
            source=TINY_MODEL_ID,
            sizes={"16:9": (480, 272), "9:16": (272, 480), "1:1": (352, 352)},
            fps=16,
            steps=4,
            guidance=1.0,
            max_frames=81,
            notes="tiny-wan's weights sampled like a step- and CFG-distilled checkpoint (4 steps, no CFG, shift 5): "
            "the few-step path, offline.",
            scheduler_shift=5.0,
            image_model="tiny-wan-i2v",
        ),
        ModelInfo(
            name="tiny-wan-i2v",
            family=WAN,
            source="moviegen/tiny-wan-i2v",
            sizes={"16:9": (480, 272), "9:16": (272, 480), "1:1": (352, 352)},
            fps=16,
            steps=8,
            guidance=5.0,
            max_frames=81,
            notes="Random weights, built offline: Wan 2.1 image-to-video layout with a CLIP image encoder.",
            pipeline_class="WanImageToVideoPipeline",
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
            image_model="wan2.1-i2v-14b-480p",
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
            image_model="wan2.1-i2v-14b-720p",
        ),
        ModelInfo(
            name="wan2.1-t2v-14b-4step",
            family=WAN,
            source="lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill",
            sizes={"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)},
            fps=16,
            steps=4,
            guidance=1.0,
            max_frames=81,
            notes="LightX2V's step- and CFG-distilled Wan 2.1 14B: 4 steps, no CFG pass (about 1/25 of the base "
            "model's transformer work per clip). The same speed-up as a LoRA on the base model: "
            "loras: [{uri: .../Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors}].",
            scheduler_shift=5.0,
            image_model="wan2.1-i2v-14b-480p",
        ),
        ModelInfo(
            name="fastwan2.1-t2v-1.3b",
            family=WAN,
            source="FastVideo/FastWan2.1-T2V-1.3B-Diffusers",
            sizes={"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)},
            fps=16,
            steps=3,
            guidance=1.0,
            max_frames=81,
            notes="FastVideo's DMD-distilled Wan 2.1 1.3B: 3 steps, no CFG pass. FastVideo itself adds sparse "
            "attention and its own timesteps; through diffusers' scheduler (shift 8) check the look on your prompts.",
            scheduler_shift=8.0,
            image_model="wan2.1-i2v-14b-480p",
        ),
        ModelInfo(
            name="wan2.1-i2v-14b-480p",
            family=WAN,
            source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            sizes={"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)},
            fps=16,
            steps=50,
            guidance=5.0,
            max_frames=81,
            notes="480p image-to-video (CLIP image encoder); needs a large GPU or group offload.",
            pipeline_class="WanImageToVideoPipeline",
        ),
        ModelInfo(
            name="wan2.1-i2v-14b-720p",
            family=WAN,
            source="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
            sizes={"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)},
            fps=16,
            steps=50,
            guidance=5.0,
            max_frames=81,
            notes="720p image-to-video; needs a large GPU.",
            pipeline_class="WanImageToVideoPipeline",
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
            notes="720p at 24 fps, text-to-video (its image-to-video mode is not wired here yet).",
        ),
        ModelInfo(
            name="tiny-ltx",
            family=LTX,
            source="moviegen/tiny-ltx",
            sizes={"16:9": (384, 224), "9:16": (224, 384), "1:1": (288, 288)},
            fps=24,
            steps=8,
            guidance=3.0,
            max_frames=257,
            notes="Random weights, built offline: LTX-Video layout, text- and image-to-video.",
        ),
        ModelInfo(
            name="ltx-video",
            family=LTX,
            source="Lightricks/LTX-Video",
            # Native 768x512 (3:2); sizes here keep about that many pixels at each aspect, multiples of 32.
            sizes={"16:9": (832, 480), "9:16": (480, 832), "1:1": (640, 640)},
            fps=24,
            steps=50,
            guidance=3.0,
            max_frames=257,
            notes="LTX-Video 0.9.x: fast, 24 fps, up to 257 frames (8k+1); text- and image-to-video.",
            aliases=("ltx-video-0.9",),
        ),
        ModelInfo(
            name="tiny-cogvideox",
            family=COGVIDEOX,
            source="moviegen/tiny-cogvideox",
            sizes={"16:9": (240, 160)},
            fps=8,
            steps=8,
            guidance=6.0,
            max_frames=49,
            notes="Random weights, built offline: CogVideoX layout at a third of its 720x480.",
            image_model="tiny-cogvideox-i2v",
        ),
        ModelInfo(
            name="tiny-cogvideox-i2v",
            family=COGVIDEOX,
            source="moviegen/tiny-cogvideox-i2v",
            sizes={"16:9": (240, 160)},
            fps=8,
            steps=8,
            guidance=6.0,
            max_frames=49,
            notes="Random weights, built offline: CogVideoX-5b-I2V's conditioning on the tiny-cogvideox layout.",
            pipeline_class="CogVideoXImageToVideoPipeline",
        ),
        ModelInfo(
            name="cogvideox-2b",
            family=COGVIDEOX,
            source="THUDM/CogVideoX-2b",
            sizes={"16:9": (720, 480)},
            fps=8,
            steps=50,
            guidance=6.0,
            max_frames=49,
            notes="720x480 at 8 fps, 49 frames (6 s); every aspect is generated at 720x480 and cropped.",
        ),
        ModelInfo(
            name="cogvideox-5b",
            family=COGVIDEOX,
            source="THUDM/CogVideoX-5b",
            sizes={"16:9": (720, 480)},
            fps=8,
            steps=50,
            guidance=6.0,
            max_frames=49,
            notes="720x480 at 8 fps, 49 frames; bf16 and VAE tiling recommended.",
            image_model="cogvideox-5b-i2v",
        ),
        ModelInfo(
            name="cogvideox-5b-i2v",
            family=COGVIDEOX,
            source="THUDM/CogVideoX-5b-I2V",
            sizes={"16:9": (720, 480)},
            fps=8,
            steps=50,
            guidance=6.0,
            max_frames=49,
            notes="CogVideoX-5b image-to-video, 720x480.",
            pipeline_class="CogVideoXImageToVideoPipeline",
        ),
    ]
}

FAMILIES = {f.name: f for f in (WAN, LTX, COGVIDEOX)}
_FAMILY_BY_PIPELINE = {cls: f for f in FAMILIES.values() for cls in f.pipelines}  # what checkpoints are saved as
_FAMILY_BY_TASK_PIPELINE = {
    cls: f for f in FAMILIES.values() for tasks in f.pipelines.values() for cls in tasks.values()
}


def family_of_pipeline(pipeline_class: str) -> ModelFamily | None:
    """The family a pipeline class (any task's) belongs to; None for a class no family has."""
    return _FAMILY_BY_TASK_PIPELINE.get(pipeline_class)


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``model`` value: what to load and the defaults to generate with."""

    requested: str  # what the catalog or configuration said
    info: ModelInfo
    location: str  # hub id, local folder, or TINY_MODEL_ID

    @property
    def is_tiny(self) -> bool:
        """A locally built tiny model (``moviegen/tiny-...``)."""
        return self.location.startswith(TINY_PREFIX)

    def pipeline_for(self, task: str) -> str:
        """The diffusers class that runs ``task`` on this model's weights (KeyError when they cannot)."""
        return self.info.tasks[task]


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
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a folder
        is_dir = False
    if is_dir:
        index = path / "model_index.json"
        if not index.is_file():
            raise UnknownModelError(
                f"folder {value} has no model_index.json: point model at a diffusers pipeline folder "
                "(written by save_pretrained)"
            )
        try:
            config = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnknownModelError(f"folder {value}: model_index.json cannot be read ({exc})") from None
        cls = config.get("_class_name") if isinstance(config, dict) else None
        cls = cls if isinstance(cls, str) else ""
        family = _FAMILY_BY_PIPELINE.get(cls)
        if family is None:
            raise UnknownModelError(
                f"folder {value} holds a {cls or 'unknown'} pipeline; supported: "
                + ", ".join(sorted(_FAMILY_BY_PIPELINE))
            )
        base = _closest_info(family, cls, path.name)
        return ModelRef(value, base, str(path.resolve()))
    if value.count("/") == 1 and all(value.split("/")):
        family = _family_from_name(value)
        if family is not None:
            image = any(tag in lowered for tag in ("i2v", "image2video", "img2vid"))
            cls = next((c for c, tasks in family.pipelines.items() if ("i2v" in tasks) == image), family.pipeline_class)
            if family.one_checkpoint:
                cls = family.pipeline_class
            return ModelRef(value, _closest_info(family, cls, value), value)
    known = ", ".join(sorted(MODELS))
    raise UnknownModelError(
        f"unknown model {value!r}: use one of {known}, a hub id of a supported family "
        "(Wan, LTX-Video, CogVideoX), or a local folder written by save_pretrained"
    )


def resolve_for_task(ref: ModelRef, task: str) -> ModelRef:
    """The model that runs ``task`` for a row that asked for ``ref``: itself, or its image-to-video companion.

    Raises UnknownModelError saying what to use instead when neither can.
    """
    if task in ref.info.tasks:
        return ref
    if task == "i2v" and ref.info.image_model:
        companion = resolve_model(ref.info.image_model)
        if task in companion.info.tasks:
            return companion
    able = sorted(m.name for m in MODELS.values() if task in m.tasks or (task == "i2v" and m.image_model))
    raise UnknownModelError(
        f"model {ref.requested!r} cannot do {TASK_NAMES.get(task, task)}: use one of {', '.join(able)}"
    )


def continuation_model(ref: ModelRef) -> ModelRef | None:
    """The image-to-video model that continues ``ref``'s clips from their last frame: ``ref`` itself when
    its weights animate an image (LTX-Video), else its companion (Wan's); None when the family has none."""
    try:
        return resolve_for_task(ref, "i2v")
    except UnknownModelError:
        return None


def _family_from_name(name: str) -> ModelFamily | None:
    lowered = name.lower()
    if "ltx" in lowered:
        return LTX
    if "cogvideo" in lowered:
        return COGVIDEOX
    return WAN if "wan" in lowered else None


def _closest_info(family: ModelFamily, weights_class: str, name: str) -> ModelInfo:
    """Defaults for an unregistered model: the registered one of its family and kind whose name it resembles."""
    lowered = name.lower()
    candidates = [
        m
        for m in MODELS.values()
        if m.family is family and m.weights_class == weights_class and not m.source.startswith(TINY_PREFIX)
    ] or [m for m in MODELS.values() if m.family is family and not m.source.startswith(TINY_PREFIX)]
    chosen = next((m for m in candidates if m.name.split("-")[-1] in lowered), candidates[0])
    fields = {**chosen.__dict__, "name": name, "source": name, "aliases": (), "image_model": None}
    fields["pipeline_class"] = weights_class
    return ModelInfo(**fields)


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
