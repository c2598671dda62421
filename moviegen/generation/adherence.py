"""Prompt adherence: how well a clip's frames match its prompt, and best-of-N generation.

Problem: a seed can miss the brief (the wrong object, no product in sight) and nobody sees it
until review; trying several seeds by hand is slow.
Solution: CLIP image-text similarity on frames sampled evenly from each generated clip (the
CLIP score: 100 x the cosine similarity, floored at 0, averaged over the frames). Every clip's
score goes to ``scores/`` (gate ``adherence``); a row's ``best_of`` N generates N candidates
(seeds seed, seed+1, ...) and keeps the best-scoring one, recording every candidate's score.
The scorer is any CLIP checkpoint: a registry name, a hub id or a local folder (``tiny-clip``,
built offline, for tests: its scores are random but its code path is the real one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.generation.device import Device, device_lock
from moviegen.generation.loading import (
    loaded_models,
    location_revision,
    pretrained_processor,
    transformers_from_pretrained,
)
from moviegen.models.locations import resolve_location
from moviegen.models.tiny import local_location

SCORER_MODELS = {
    "tiny-clip": "moviegen/tiny-clip",
    "clip-vit-base-patch32": "openai/clip-vit-base-patch32",
    "clip-vit-large-patch14": "openai/clip-vit-large-patch14",
}


class ScorerError(ValueError):
    """The adherence model setting names nothing loadable."""


def resolve_scorer(value: str) -> str:
    """The scorer's location: a registry name's hub id or tiny id, a local folder, or a hub id as given."""
    return resolve_location(
        value, SCORER_MODELS, what="adherence model", holds="a CLIP model and its processor", error=ScorerError
    )


def scorer_identity(value: str, cache_dir: Path) -> str:
    """``location@revision``: part of the clip_key of best-of-N clips (another scorer may pick another seed)."""
    location = resolve_scorer(value)
    return f"{location}@{location_revision(local_location(location, cache_dir))}"


@dataclass(frozen=True)
class AdherenceScore:
    """One clip's CLIP score against its prompt, and the per-frame values it averages.

    ``clip_score`` is the usual CLIP score (100 x cosine, floored at 0); ``similarity`` is the raw
    mean cosine, which orders candidates even where every score floors at 0.
    """

    clip_score: float
    similarity: float
    per_frame: tuple[float, ...]  # CLIP score per sampled frame
    frames: tuple[int, ...]  # the sampled frame indices

    def to_json(self) -> dict[str, Any]:
        return {
            "clip_score": round(self.clip_score, 4),
            "similarity": round(self.similarity, 6),
            "per_frame": [round(s, 4) for s in self.per_frame],
            "frames": list(self.frames),
        }


class ClipScorer:
    """A CLIP model and its processor on one device; ``score`` rates frames against a prompt."""

    def __init__(self, model: Any, processor: Any, device: Device, name: str) -> None:
        self.model, self.processor, self.device, self.name = model, processor, device, name

    def score(self, frames: np.ndarray, prompt: str, max_frames: int = 8) -> AdherenceScore:
        """CLIP score of uint8 RGB frames (F, H, W, 3) against ``prompt``: 100 x cosine, floored at 0, averaged."""
        import torch

        if len(frames) == 0:
            raise ValueError("no frames to score")
        picked = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
        picked = np.unique(picked)
        inputs = self.processor(
            text=[prompt],
            images=[frames[i] for i in picked],
            return_tensors="pt",
            padding=True,
            truncation=True,  # CLIP reads 77 tokens; a longer prompt is judged on its start
        )
        inputs = {k: v.to(self.device.name) for k, v in inputs.items()}
        with device_lock(self.device), torch.inference_mode():
            image = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.model.dtype))
            text = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        image = _embeddings(image)
        text = _embeddings(text)
        cosine = torch.nn.functional.cosine_similarity(image.float(), text.float(), dim=-1).cpu().numpy()
        per_frame = 100.0 * np.maximum(cosine, 0.0)
        return AdherenceScore(
            clip_score=float(per_frame.mean()),
            similarity=float(cosine.mean()),
            per_frame=tuple(float(s) for s in per_frame),
            frames=tuple(int(i) for i in picked),
        )


def _embeddings(output: Any) -> Any:
    """get_*_features returns a tensor, or (transformers 5) an output object holding the pooled projection."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def load_scorer(value: str, device: Device, cache_dir: Path, allow_pickle: bool = False) -> ClipScorer:
    """The CLIP scorer named by ``adherence.model``, loaded once per process and device."""
    location = resolve_scorer(value)

    def load() -> ClipScorer:
        from transformers import AutoProcessor, CLIPModel

        folder = local_location(location, cache_dir)
        model = transformers_from_pretrained(CLIPModel, value, folder, device, allow_pickle)
        processor = pretrained_processor(AutoProcessor, value, folder)
        return ClipScorer(model.to(device.name), processor, device, value)

    return loaded_models().get(("clip", location, device.name, device.dtype_name), load)


def best_candidate(scores: list[AdherenceScore]) -> int:
    """The index of the best-scoring candidate (the first of equals, so the row's own seed wins ties)."""
    return max(range(len(scores)), key=lambda i: (scores[i].similarity, -i))
