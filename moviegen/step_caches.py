"""Step caches: diffusers' hooks that reuse a transformer's outputs across denoising steps.

Each trades exactness for speed in its own way (docs/models.md has the table); the name and its
settings are part of every clip_key made with them. Whether the trade is worth it can only be
judged on real weights: on the tiny random-weight models the pixels change, but not in a way a
viewer could rate.

    first_block  First Block Cache: skip the other blocks while the first block's output barely changes
    mag          MagCache: skip steps while the accumulated magnitude-ratio error stays under a threshold;
                 needs the model's calibrated ``mag_ratios`` (or ``calibrate: true`` once to print them)
    taylorseer   TaylorSeer: compute every ``cache_interval`` steps, predict the steps between by Taylor series
    faster       FasterCache: reuse attention outputs across steps and the unconditional pass's
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

CACHES = ("first_block", "mag", "taylorseer", "faster")
_CONFIG_CLASSES = {
    "first_block": "FirstBlockCacheConfig",
    "mag": "MagCacheConfig",
    "taylorseer": "TaylorSeerCacheConfig",
    "faster": "FasterCacheConfig",
}
TAYLORSEER_ATTENTION = r"^(blocks|transformer_blocks)\.\d+\.attn\d*$"
# Settings moviegen fills in itself: the step count of each call, and FasterCache's view of the current step.
_MANAGED = {"num_inference_steps", "current_timestep_callback"}


def cache_config(
    name: str,
    threshold: float,
    options: dict[str, Any],
    steps: int,
    current_timestep: Callable[[], int] | None = None,
) -> Any:
    """The diffusers config object of step cache ``name``; raises ValueError naming a wrong setting.

    ``threshold`` applies to the caches that have one (first_block, mag); ``options`` holds the rest
    by diffusers' own names. MagCache is built for the call's ``steps`` (its ratios are interpolated
    to them).
    """
    import diffusers

    if name not in _CONFIG_CLASSES:
        raise ValueError(f"unknown cache {name!r}: use none, {', '.join(CACHES)}")
    cls = getattr(diffusers, _CONFIG_CLASSES[name])
    known = {f.name for f in dataclasses.fields(cls)} - _MANAGED
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"cache {name}: unknown setting(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    kwargs = dict(options)
    if name in ("first_block", "mag"):
        kwargs.setdefault("threshold", threshold)
    if name == "mag":
        kwargs["num_inference_steps"] = steps
        if kwargs.get("mag_ratios") is None and not kwargs.get("calibrate"):
            raise ValueError(
                "cache mag needs the model's calibrated magnitude ratios: set cache_options.mag_ratios (a list "
                "of floats), or run once with cache_options.calibrate: true to print them"
            )
    if name == "taylorseer":
        # diffusers' default patterns must match a whole module name and miss Wan's blocks.N.attn1:
        # these match the attention layers of Wan (blocks), LTX-Video and CogVideoX (transformer_blocks).
        kwargs.setdefault("cache_identifiers", [TAYLORSEER_ATTENTION])
    if name == "faster":
        kwargs["current_timestep_callback"] = current_timestep or (lambda: 0)
        # The pipelines here run the conditional and unconditional passes as separate calls, not as one
        # batch FasterCache could split: its unconditional-batch reuse does not apply to them.
        kwargs.setdefault("is_guidance_distilled", True)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cache {name}: {exc}") from None


def steps_dependent(name: str) -> bool:
    """Whether the cache's config depends on the call's step count (it is then set again per call)."""
    return name == "mag"
