"""Channel presets and named styles, from the data files shipped in ``moviegen/data``.

A channel preset is a delivery spec: frame size and rate, how the master is fitted into it, the
encoder (codec, profile, level, pixel format, GOP, bitrate ceiling, x264 speed preset), the audio
(AAC 48 kHz, loudness target), the longest clip the platform takes and the safe zone its own
interface leaves free for text. A style is a look: grade, LUT, effects and motion.

Users add or override presets and styles in configuration (``channels:`` and ``styles:`` keys);
a mistyped key is an error, not silently ignored.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moviegen.config import ConfigError
from moviegen.layout import Anchor

Fit = Literal["crop", "pad"]
Motion = Literal["duplicate", "blend", "interpolate"]
Extend = Literal["continue", "loop", "hold"]
Scaler = Literal["lanczos", "bicubic", "bilinear", "neighbor"]
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]

# H.264 levels (ITU-T H.264 Table A-1): max macroblocks per frame, per second, and max bitrate in
# kbit/s for the High profile (1.25 x the Main/Baseline figure).
H264_LEVELS: dict[str, tuple[int, int, int]] = {
    "3.0": (1620, 40500, 12500),
    "3.1": (3600, 108000, 17500),
    "3.2": (5120, 216000, 25000),
    "4.0": (8192, 245760, 25000),
    "4.1": (8192, 245760, 62500),
    "4.2": (8704, 522240, 62500),
    "5.0": (22080, 589824, 168750),
    "5.1": (36864, 983040, 300000),
    "5.2": (36864, 2073600, 300000),
}


class SafeZone(BaseModel):
    """Margins the platform's interface covers (buttons, captions, progress bar), as fractions of the frame.

    Text and logos are placed inside what is left.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: float = Field(0.05, ge=0, lt=0.5)
    bottom: float = Field(0.05, ge=0, lt=0.5)
    left: float = Field(0.05, ge=0, lt=0.5)
    right: float = Field(0.05, ge=0, lt=0.5)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The safe area in pixels: ``(x, y, w, h)``."""
        x0, y0 = round(self.left * width), round(self.top * height)
        x1, y1 = width - round(self.right * width), height - round(self.bottom * height)
        return x0, y0, x1 - x0, y1 - y0


class ChannelPreset(BaseModel):
    """What one channel's rendition must look like: the delivery check holds every file to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{0,31}$")
    label: str = ""
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=7680)
    fps: float = Field(gt=0, le=120)
    max_duration_s: float = Field(gt=0)
    fit: Fit = "crop"
    anchor: Anchor = "center"
    # Video encoding.
    codec: Literal["h264"] = "h264"
    profile: Literal["baseline", "main", "high"] = "high"
    level: str = "4.0"
    pix_fmt: Literal["yuv420p"] = "yuv420p"
    x264_preset: X264Preset = "veryfast"
    crf: int = Field(20, ge=0, le=51, description="Constant quality, capped by maxrate/bufsize.")
    maxrate_kbps: int = Field(8000, ge=100, le=300000)
    bufsize_kbps: int = Field(16000, ge=100, le=600000)
    gop_s: float = Field(2.0, gt=0, le=10, description="Seconds between keyframes.")
    faststart: bool = True
    # Audio.
    audio_codec: Literal["aac"] = "aac"
    audio_rate: Literal[44100, 48000] = 48000
    audio_channels: Literal[1, 2] = 2
    audio_bitrate_kbps: int = Field(128, ge=32, le=512)
    loudness_lufs: float = Field(-14.0, ge=-40, le=-5, description="Integrated loudness target of the music bed.")
    safe_zone: SafeZone = Field(default_factory=SafeZone)

    @model_validator(mode="after")
    def _check_encodable(self) -> ChannelPreset:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even for {self.pix_fmt}, got {self.width}x{self.height}")
        if self.level not in H264_LEVELS:
            raise ValueError(f"level {self.level!r} is not an H.264 level: use one of {', '.join(H264_LEVELS)}")
        max_fs, max_mbps, max_kbps = H264_LEVELS[self.level]
        macroblocks = math.ceil(self.width / 16) * math.ceil(self.height / 16)
        if macroblocks > max_fs or macroblocks * self.fps > max_mbps:
            raise ValueError(f"{self.width}x{self.height} at {self.fps:g} fps is too much for H.264 level {self.level}")
        bitrate_cap = max_kbps if self.profile == "high" else max_kbps * 4 // 5
        if self.maxrate_kbps > bitrate_cap:
            raise ValueError(f"maxrate_kbps {self.maxrate_kbps} exceeds level {self.level}'s {bitrate_cap}")
        return self

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.gop_s * self.fps))

    def frames_for(self, duration_s: float) -> int:
        """Frames a rendition of ``duration_s`` seconds has at this preset's rate."""
        return max(1, round(duration_s * self.fps))


class Style(BaseModel):
    """A look: colour grade, optional LUT, effects, and how time is handled.

    Multipliers sit around 1.0 and shifts around 0.0; every default leaves the pixels alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    description: str = ""
    # Grade (eq, colorbalance, then an optional 3D LUT).
    brightness: float = Field(0.0, ge=-1, le=1)
    contrast: float = Field(1.0, ge=0, le=3)
    saturation: float = Field(1.0, ge=0, le=3)
    gamma: float = Field(1.0, ge=0.1, le=3)
    red_shift: float = Field(0.0, ge=-1, le=1, description="More (+) or less (-) red in shadows, mids and highlights.")
    blue_shift: float = Field(0.0, ge=-1, le=1, description="More (+) or less (-) blue, across the range.")
    shadows_blue: float = Field(0.0, ge=-1, le=1, description="Split toning: extra blue in the shadows.")
    highlights_red: float = Field(0.0, ge=-1, le=1, description="Split toning: extra red in the highlights.")
    lut: str | None = Field(None, description="A LUT shipped with moviegen (by name) or a .cube file's path or URL.")
    # Effects at the rendition's size.
    vignette: float = Field(0.0, ge=0, le=1, description="Darkened corners: 0 none, 1 strong.")
    grain: float = Field(0.0, ge=0, le=1, description="Film grain: 0 none, 1 heavy.")
    sharpen: float = Field(0.0, ge=0, le=2, description="Unsharp mask after upscaling.")
    scaler: Scaler = "lanczos"
    # Time.
    speed: float = Field(1.0, ge=0.25, le=4, description="Playback speed of the generated clip.")
    motion: Motion = Field("duplicate", description="Frame-rate conversion: duplicate, blend or interpolate (slow).")
    # Unset, a row longer than its model's clip is continued (when the family has an image-to-video
    # pipeline) and a shorter master loops; the value stays "loop" so short rows keep their keys.
    extend: Extend = Field(
        "loop",
        description="A row longer than its model's clip: continue it (new segments from the last frame; the "
        "default), loop it, or hold the last frame.",
    )
    font: str | None = Field(None, description="Font family or font file for burned-in text; default: Noto Sans.")

    def changes(self) -> dict[str, Any]:
        """The parameters this style moves away from neutral: what it does, by name."""
        neutral = Style(name=self.name).model_dump()
        return {k: v for k, v in self.model_dump(exclude={"name", "description"}).items() if v != neutral[k]}

    def with_overrides(self, overrides: dict[str, Any]) -> Style:
        """This style with some parameters replaced (a catalog row's own look columns); validated."""
        if not overrides:
            return self
        return Style.model_validate({**self.model_dump(), **overrides})


# Style parameters a catalog row may set in its own column, replacing the style's value.
ROW_LOOK_FIELDS = (
    "brightness",
    "contrast",
    "saturation",
    "gamma",
    "vignette",
    "grain",
    "speed",
    "lut",
    "motion",
    "extend",
)


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


def builtin_luts() -> dict[str, Path]:
    """LUTs shipped with moviegen, by name (``moviegen/data/luts/<name>.cube``)."""
    folder = resources.files("moviegen.data").joinpath("luts")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".cube")}


def channel_presets(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, ChannelPreset]:
    """Built-in presets updated with the user's own (same name: the given keys replace; new names add).

    Raises ConfigError naming the preset and key when a user's preset is not valid.
    """
    presets = dict(builtin_channels())
    for name, spec in (extra or {}).items():
        base = presets[name].model_dump() if name in presets else {}
        if "safe_zone" in (spec or {}) and "safe_zone" in base:
            spec = {**spec, "safe_zone": {**base["safe_zone"], **(spec["safe_zone"] or {})}}
        presets[name] = _build(ChannelPreset, "channels", name, {**base, **(spec or {}), "name": name})
    return presets


def styles(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Style]:
    """Built-in styles updated with the user's own (a user's style starts from neutral)."""
    result = dict(builtin_styles())
    for name, spec in (extra or {}).items():
        result[name] = _build(Style, "styles", name, {**(spec or {}), "name": name})
    return result


def _build(model: type[BaseModel], section: str, name: str, values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            where = ".".join(str(p) for p in (section, name, *e["loc"]))
            lines.append(f"  {where}: {e['msg']}")
        raise ConfigError(f"invalid {section[:-1]} {name!r} in configuration:\n" + "\n".join(lines)) from None
