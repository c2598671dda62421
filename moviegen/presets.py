"""Channel presets and named styles, from the data files shipped in ``moviegen/data``.

Users add or override presets in configuration (``channels:`` and ``styles:`` keys).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field


class ChannelPreset(BaseModel):
    """What one channel's rendition must look like."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{0,31}$")
    label: str = ""
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=7680)
    fps: float = Field(gt=0, le=120)
    max_duration_s: float = Field(gt=0)
    fit: Literal["crop", "pad"] = "crop"

    @property
    def aspect(self) -> float:
        return self.width / self.height


class Style(BaseModel):
    """A colour grade: multipliers around 1.0 and colour shifts around 0.0."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    description: str = ""
    brightness: float = Field(0.0, ge=-1, le=1)
    contrast: float = Field(1.0, ge=0, le=3)
    saturation: float = Field(1.0, ge=0, le=3)
    gamma: float = Field(1.0, ge=0.1, le=3)
    red_shift: float = Field(0.0, ge=-1, le=1)
    blue_shift: float = Field(0.0, ge=-1, le=1)
    shadows_blue: float = Field(0.0, ge=-1, le=1)
    highlights_red: float = Field(0.0, ge=-1, le=1)

    @property
    def is_neutral(self) -> bool:
        """True when the style changes no pixel."""
        return self == Style(name=self.name, description=self.description)


def _load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("moviegen.data").joinpath(name).read_text(encoding="utf-8"))


@cache
def builtin_channels() -> dict[str, ChannelPreset]:
    """The channel presets shipped with moviegen."""
    return {name: ChannelPreset(name=name, **spec) for name, spec in _load_yaml("channels.yaml").items()}


@cache
def builtin_styles() -> dict[str, Style]:
    """The named styles shipped with moviegen."""
    return {name: Style(name=name, **(spec or {})) for name, spec in _load_yaml("styles.yaml").items()}


def channel_presets(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, ChannelPreset]:
    """Built-in presets updated with the user's own (same name replaces, new names add)."""
    presets = dict(builtin_channels())
    for name, spec in (extra or {}).items():
        base = presets[name].model_dump() if name in presets else {}
        presets[name] = ChannelPreset(**{**base, **spec, "name": name})
    return presets


def styles(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Style]:
    """Built-in styles updated with the user's own."""
    result = dict(builtin_styles())
    for name, spec in (extra or {}).items():
        result[name] = Style(**{**(spec or {}), "name": name})
    return result
