"""What a rendition is (RenditionSpec) and its key: everything that determines its bytes."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from moviegen.assets import Asset, AssetError, UriPolicy, fetch_asset, local_asset
from moviegen.layout import Corner
from moviegen.media import ffmpeg_binary
from moviegen.presets import ChannelPreset, Style, builtin_luts
from moviegen.render.overlays import FontError, TextLayer, font_identity
from moviegen.spec import ClipSpec, stable_hash

# Bump when the graph changes in a way that changes bytes for the same inputs.
RENDER_VERSION = 2


class FrameProcessor(Protocol):
    """Changes frames on their way to the encoder (for example the invisible watermark).

    Called in order with batches of uint8 RGB frames shaped (N, H, W, 3) at the rendition's final
    size, after the whole filter graph (text and labels included); must return an array of the
    same shape and dtype. The input array is writable and may be modified and returned, but it
    is reused for the next batch: copy what must outlive the call.
    """

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RenditionSpec:
    """Everything that decides a rendition's pixels and sound, apart from the master.

    ``preset`` and ``style`` already carry the catalog row's own fit, anchor and look columns
    (``rendition_spec`` applies them). ``layers`` are extra text layers drawn last, over
    everything else (issue 6's AI-generated label goes here).
    """

    preset: ChannelPreset
    style: Style
    duration_s: float
    caption: str = ""
    title: str = ""
    cta: str = ""
    logo: Asset | None = None
    logo_position: Corner = "top_right"
    music: Asset | None = None
    lut: Asset | None = None
    layers: tuple[TextLayer, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= self.preset.max_duration_s:
            limit = self.preset.max_duration_s
            raise ValueError(f"duration {self.duration_s:g} s does not fit {self.preset.name} (0 to {limit:g} s)")
        if self.style.lut and self.lut is None:
            raise ValueError(f"style {self.style.name} names the LUT {self.style.lut!r}: resolve it with resolve_lut")

    @property
    def frames(self) -> int:
        return self.preset.frames_for(self.duration_s)

    @property
    def size(self) -> tuple[int, int]:
        return self.preset.width, self.preset.height

    @property
    def card_s(self) -> float:
        """Seconds of end card at the end (0 without a call to action)."""
        return round(min(1.5, 0.35 * self.duration_s), 3) if self.cta.strip() else 0.0

    def title_layer(self) -> TextLayer | None:
        """The title: large, at the top, over the first seconds (never over the end card)."""
        if not self.title.strip():
            return None
        end = min(3.0, max(1.0, 0.45 * self.duration_s), self.duration_s - self.card_s)
        return TextLayer(self.title, "top", size=0.07, max_lines=2, background=None, font=self.style.font, end_s=end)

    def caption_layer(self) -> TextLayer | None:
        """The caption: at the bottom of the safe zone, on a plate, until the end card."""
        if not self.caption.strip():
            return None
        end = self.duration_s - self.card_s if self.card_s else None
        return TextLayer(self.caption, "bottom", size=0.05, font=self.style.font, end_s=end)

    def cta_layer(self) -> TextLayer | None:
        """The call to action: dark text on a light button, centred on the end card."""
        if not self.card_s:
            return None
        return TextLayer(
            self.cta,
            "center",
            size=0.075,
            max_lines=2,
            color="#111111",
            background="#FFFFFFF0",
            font=self.style.font,
            start_s=self.duration_s - self.card_s,
        )

    def text_layers(self) -> list[TextLayer]:
        """Every text drawn on the rendition, in drawing order: title, caption, call to action, extra layers."""
        own = [self.title_layer(), self.caption_layer(), self.cta_layer()]
        return [*(layer for layer in own if layer is not None), *self.layers]

    def identity(self) -> dict[str, Any]:
        """A JSON-able description of everything above, with file contents as hashes."""
        return {
            "preset": self.preset.model_dump(),
            "style": self.style.model_dump(),
            "duration_s": self.duration_s,
            "frames": self.frames,
            "texts": [{**dataclasses.asdict(t), "font_file": font_identity(t)} for t in self.text_layers()],
            "logo": self.logo.sha256 if self.logo else None,
            "logo_position": self.logo_position,
            "music": self.music.sha256 if self.music else None,
            "lut": self.lut.sha256 if self.lut else None,
        }


def resolve_lut(name_or_uri: str | None, asset_dir: Path, policy: UriPolicy | None = None) -> Asset | None:
    """A style's LUT: one shipped with moviegen (by name) or a .cube file fetched under ``policy``."""
    if not name_or_uri:
        return None
    shipped = builtin_luts()
    if name_or_uri in shipped:
        return local_asset(shipped[name_or_uri], "lut")
    return fetch_asset(name_or_uri, "lut", asset_dir, policy)


def rendition_spec(
    clip: ClipSpec,
    preset: ChannelPreset,
    style: Style,
    *,
    asset_dir: Path,
    layers: Sequence[TextLayer] = (),
    policy: UriPolicy | None = None,
) -> RenditionSpec:
    """Resolve one catalog row for one channel: the row's columns over the channel and the style.

    Fetches the row's logo, music and LUT into ``asset_dir`` under the input ``policy`` (raises
    AssetError when one cannot be used). ``layers`` are extra text layers such as the AI-generated label.
    """
    placement = {k: v for k, v in (("fit", clip.fit), ("anchor", clip.anchor)) if v}
    if placement:
        preset = ChannelPreset.model_validate({**preset.model_dump(), **placement})
    style = style.with_overrides(dict(clip.look))
    return RenditionSpec(
        preset=preset,
        style=style,
        duration_s=clip.duration_s,
        caption=clip.caption,
        title=clip.title,
        cta=clip.cta,
        logo=_fetch(clip.logo_uri, "logo", asset_dir, "logo_uri", policy),
        logo_position=clip.logo_position,  # type: ignore[arg-type]
        music=_fetch(clip.music_uri, "music", asset_dir, "music_uri", policy),
        lut=_with_column(
            lambda: resolve_lut(style.lut, asset_dir, policy), "lut" if dict(clip.look).get("lut") else "style"
        ),
        layers=tuple(layers),
    )


def _fetch(uri: str | None, kind: Any, asset_dir: Path, column: str, policy: UriPolicy | None) -> Asset | None:
    return _with_column(lambda: fetch_asset(uri, kind, asset_dir, policy), column) if uri else None


def _with_column(fetch: Any, column: str) -> Any:
    try:
        return fetch()
    except AssetError as exc:
        raise AssetError(str(exc), column=exc.column or column) from None


@cache
def tool_versions() -> dict[str, str]:
    """Versions of the tools whose output is in a rendition's bytes (ffmpeg, Pillow, libraqm)."""
    from PIL import __version__ as pillow
    from PIL import features

    out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, check=False).stdout.decode()
    return {
        "ffmpeg": out.splitlines()[0] if out else "unknown",
        "pillow": pillow,
        "raqm": str(features.version("raqm")),
    }


def rendition_key(clip_key: str, spec: RenditionSpec, processor_key: str | None = None) -> str:
    """Hash of everything that determines a rendition's bytes: same key, nothing to redo.

    ``processor_key`` describes the frame processor, if any (for example the watermark's model
    and payload): anything that changes its output must change this string.
    """
    return stable_hash(
        {
            "v": RENDER_VERSION,
            "clip": clip_key,
            "rendition": spec.identity(),
            "processor": processor_key,
            "tools": tool_versions(),
        }
    )


def render_rule(exc: Exception) -> str:
    """The ``rule`` of a rendition that failed with ``exc``: a bad input, a missing font, or ffmpeg."""
    return "asset" if isinstance(exc, AssetError) else "font" if isinstance(exc, FontError) else "ffmpeg"
