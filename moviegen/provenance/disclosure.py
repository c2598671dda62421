"""Per-channel disclosure: the platform flags for the sidecar, and the visible label's placement.

Problem: each platform asks for AI disclosure differently (YouTube ``containsSyntheticMedia``,
TikTok ``is_aigc``, Meta's "AI info", LinkedIn's CR icon), and each channel's frame has app UI in
different places, so the "AI-generated" mark cannot sit in the same spot everywhere.

Solution: ``moviegen/data/disclosure.yaml`` maps every channel to its platform and default label
placement; ``provenance.channels`` in configuration overrides or extends it. ``disclosure_flags``
gives the sidecar's ``disclosure`` object; ``label_for`` gives the label to draw (or None), as
plain data, and ``label_layer`` the text layer the render pass draws last, over everything.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from PIL import ImageColor
from pydantic import BaseModel, ConfigDict, Field

from moviegen.config import ChannelProvenance, LabelSettings, ProvenanceSettings, disclosure_data
from moviegen.layout import LabelPosition
from moviegen.provenance.common import TRAINED_ALGORITHMIC_MEDIA
from moviegen.render.overlays import TextLayer

MIN_LABEL_PX = 16  # smaller text is not legible on a phone


class Platform(BaseModel):
    """How one platform takes an AI disclosure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    flags: dict[str, Any] = Field(default_factory=dict)
    api_field: str | None = None
    shows: str
    reads_content_credentials: bool
    manual: str


@cache
def platforms() -> dict[str, Platform]:
    """The platforms in ``moviegen/data/disclosure.yaml``, by name."""
    return {name: Platform(**spec) for name, spec in disclosure_data()["platforms"].items()}


def channel_provenance(channel: str, settings: ProvenanceSettings | None = None) -> ChannelProvenance:
    """A channel's platform and label overrides: the shipped defaults updated with ``provenance.channels``."""
    settings = settings or ProvenanceSettings()
    builtin = ChannelProvenance(**disclosure_data()["channels"].get(channel, {}))
    user = settings.channels.get(channel)
    if user is None:
        return builtin
    return ChannelProvenance(
        platform=user.platform if "platform" in user.model_fields_set else builtin.platform,
        label={**builtin.label, **user.label},
    )


def disclosure_flags(channel: str, settings: ProvenanceSettings | None = None) -> dict[str, Any]:
    """The sidecar's ``disclosure`` object for a rendition on ``channel``.

    Always says ``ai_generated: true`` with the IPTC digital source type; for a known platform it
    adds the flags to set in the upload call (``flags``), where they go (``api_field``), the label
    viewers will see and what to do when posting by hand.
    """
    info = channel_provenance(channel, settings)
    disclosure: dict[str, Any] = {
        "ai_generated": True,
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        "content_credentials": True,
        "platform": info.platform,
        "flags": {},
    }
    if info.platform is not None:
        platform = platforms()[info.platform]
        disclosure.update(
            flags=dict(platform.flags),
            api_field=platform.api_field,
            shows=platform.shows,
            reads_content_credentials=platform.reads_content_credentials,
            manual=platform.manual,
        )
    return disclosure


class LabelSpec(BaseModel):
    """The visible mark for one channel: what to write, where, how big (fractions of the short side).

    Plain data: ``model_dump()`` belongs in the rendition key, since it changes the pixels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    position: LabelPosition
    size: float
    margin: float
    color: str
    box_color: str

    def font_px(self, width: int, height: int) -> int:
        """Text height in pixels for a ``width`` x ``height`` frame (at least MIN_LABEL_PX)."""
        return max(MIN_LABEL_PX, round(self.size * min(width, height)))

    def margin_px(self, width: int, height: int) -> int:
        """Distance from the frame's edges in pixels."""
        return round(self.margin * min(width, height))

    def text_layer(self, width: int, height: int) -> TextLayer:
        """The label as a text layer for a ``width`` x ``height`` rendition, drawn like every other text.

        Placed against the frame's edges (not the safe zone: ``margin`` already keeps it clear of the
        app's interface), one line, on its box; sizes become the layer's fractions of the short side.
        """
        short = min(width, height)
        return TextLayer(
            self.text,
            self.position,
            size=self.font_px(width, height) / short,
            max_width=0.9,
            max_lines=1,
            color=pillow_colour(self.color),
            background=pillow_colour(self.box_color),
            inset=self.margin_px(width, height) / short,
            use_safe_zone=False,
        )


def pillow_colour(colour: str) -> str:
    """A label colour (``white``, ``#RRGGBB``, either with ``@alpha`` as ffmpeg writes it) as ``#RRGGBBAA``."""
    name, _, alpha = colour.partition("@")
    red, green, blue = ImageColor.getrgb(name)[:3]
    return f"#{red:02X}{green:02X}{blue:02X}{round(float(alpha or 1) * 255):02X}"


def label_layer(
    channel: str, frame_size: tuple[int, int], settings: ProvenanceSettings | None = None
) -> TextLayer | None:
    """The label ``channel``'s rendition of ``frame_size`` (w, h) draws last, or None when its label is off."""
    label = label_for(channel, settings)
    return label.text_layer(*frame_size) if label else None


def label_for(channel: str, settings: ProvenanceSettings | None = None) -> LabelSpec | None:
    """The label to draw on ``channel``'s rendition, or None when that channel's label is off.

    Precedence: ``provenance.label`` defaults < the channel's shipped placement (disclosure.yaml)
    < keys set explicitly in ``provenance.label`` < ``provenance.channels.<channel>.label``.
    """
    settings = settings or ProvenanceSettings()
    base = settings.label
    shipped = {k: v for k, v in channel_provenance(channel).label.items() if k not in base.model_fields_set}
    user = settings.channels[channel].label if channel in settings.channels else {}
    merged = LabelSettings(**{**base.model_dump(), **shipped, **user})
    if not merged.enabled:
        return None
    return LabelSpec(**merged.model_dump(exclude={"enabled"}))
