"""Things drawn over a rendition: literal text (captions, titles, call to action, labels) and images (logos).

Problem: ffmpeg's drawtext takes its text inside the filter graph, where quotes, colons,
backslashes, ``%{...}`` expansions and newlines all mean something, so one caption such as
``50% off: don't miss it`` breaks or subverts the graph; drawtext also uses a single font and does
not wrap lines.
Solution: text is laid out and drawn here with Pillow (FreeType, with HarfBuzz and FriBiDi shaping
through libraqm for Arabic and other complex scripts) into a transparent PNG, and the graph only
overlays that image at a pixel position computed here. No user text ever enters the filter graph:
there is nothing to escape and nothing to inject. The font is chosen at run time through fontconfig,
as the preferred installed face that has every character of the text.

``draw_text`` is the one way to put text on a rendition; captions, titles, the end card and the
AI-generated label all go through it.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import unicodedata
import uuid
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ffmpeg
from PIL import Image, ImageColor, ImageDraw, ImageFont, features

from moviegen.layout import TextPosition as Position
from moviegen.presets import SafeZone

log = logging.getLogger(__name__)


Weight = Literal["regular", "bold"]

# Preferred families, best first; any other "Noto Sans <script>" family comes right after Noto Sans.
FONT_FAMILIES = ("Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Micro Hei")

FONT_PACKAGES = (
    "fonts-noto-core (Latin, Greek, Cyrillic, Arabic, Hebrew, Indic, Thai) "
    "and fonts-wqy-microhei or fonts-noto-cjk (Chinese, Japanese, Korean)"
)


class FontError(RuntimeError):
    """No installed font can draw a text; the message names the characters and what to install."""


@dataclass(frozen=True)
class TextLayer:
    """One block of literal text over the video, placed inside the channel's safe zone.

    Sizes are fractions of the frame's shorter side, so a layer looks alike on 9:16, 1:1 and 16:9.
    The text is shrunk (down to 60 %) and then cut with an ellipsis when it needs more than
    ``max_lines`` lines of ``max_width`` of the safe area's width.
    """

    text: str
    position: Position = "bottom"
    size: float = 0.045  # font size (em) / shorter side of the frame
    max_width: float = 0.92  # of the safe area's width
    max_lines: int = 3
    color: str = "#FFFFFF"
    background: str | None = "#000000A0"  # rounded plate behind the text; None draws an outline instead
    weight: Weight = "bold"
    font: str | None = None  # a font family or font file; default FONT_FAMILIES
    start_s: float = 0.0
    end_s: float | None = None  # None: until the end
    inset: float = 0.0  # extra margin inside the safe area, of the shorter side
    use_safe_zone: bool = True  # False: place against the frame's edges

    def __post_init__(self) -> None:
        for name in ("color", "background"):
            value = getattr(self, name)
            if value is not None:
                try:
                    ImageColor.getrgb(value)
                except ValueError:
                    raise ValueError(f"{name} {value!r} is not a colour: use #RRGGBB or #RRGGBBAA") from None
        if not 0.005 <= self.size <= 0.5:
            raise ValueError(f"size {self.size} must be between 0.005 and 0.5 of the frame's shorter side")
        if not 0.05 <= self.max_width <= 1.0 or self.max_lines < 1:
            raise ValueError("max_width must be 0.05-1.0 and max_lines at least 1")
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} must come after start_s {self.start_s}")


@dataclass(frozen=True)
class Placed:
    """A rendered overlay image and where its top-left corner goes on the frame."""

    image: Image.Image
    x: int
    y: int


@dataclass(frozen=True)
class FontFace:
    """One installed font face, as fontconfig lists it, with the code points it has."""

    path: str
    index: int
    family: str
    style: str
    weight: int
    slant: int
    mono: bool
    ranges: tuple[tuple[int, int], ...]

    def covers(self, code_point: int) -> bool:
        starts = [lo for lo, _ in self.ranges]
        i = bisect_right(starts, code_point) - 1
        return i >= 0 and self.ranges[i][1] >= code_point


FC_FORMAT = "%{file}\t%{index}\t%{family[0]}\t%{style[0]}\t%{weight}\t%{slant}\t%{spacing}\t%{charset}\n"


def _fontconfig(args: list[str]) -> tuple[FontFace, ...]:
    """Run fc-list or fc-query with FC_FORMAT and parse the faces it prints."""
    try:
        out = subprocess.run([*args, "--format", FC_FORMAT], capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise FontError(f"cannot read fonts with {args[0]} ({exc}): install fontconfig and {FONT_PACKAGES}") from None
    faces = []
    for line in out.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 8 or not parts[1].isdigit() or int(parts[1]) > 0xFFFF:
            continue  # named instances of variable fonts come with their base face anyway
        ranges = []
        for item in parts[7].split():
            lo, _, hi = item.partition("-")
            ranges.append((int(lo, 16), int(hi or lo, 16)))
        faces.append(
            FontFace(
                path=parts[0],
                index=int(parts[1]),
                family=parts[2],
                style=parts[3],
                weight=int(parts[4] or 80),
                slant=int(parts[5] or 0),
                mono=parts[6] == "100",
                ranges=tuple(sorted(ranges)),
            )
        )
    return tuple(faces)


@functools.cache
def installed_fonts() -> tuple[FontFace, ...]:
    """Every font face fontconfig knows (``fc-list``), read once per process."""
    return _fontconfig(["fc-list"])


@functools.cache
def font_file(path: str) -> FontFace:
    """The first face of a font file the user named (``fc-query``), with its characters."""
    if not Path(path).is_file():
        raise FontError(f"font file {path} does not exist: give an existing .ttf, .otf or .ttc file")
    faces = _fontconfig(["fc-query", path])
    if not faces:
        raise FontError(f"{path} is not a font fontconfig can read")
    return faces[0]


def _needed(text: str) -> set[int]:
    # Spaces and format characters (zero-width joiners, bidi marks) need no glyph of their own.
    return {ord(c) for c in text if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf")}


def _family_rank(face: FontFace, wanted: str | None) -> int:
    if wanted and face.family.lower() == wanted.lower():
        return 0
    if face.family in FONT_FAMILIES[:1]:
        return 1
    if face.family.startswith("Noto Sans ") and face.family not in FONT_FAMILIES:
        return 2  # Noto Sans Arabic, Hebrew, Devanagari, Thai, ...: the script's own Noto face
    if face.family in FONT_FAMILIES:
        return 3 + FONT_FAMILIES.index(face.family)
    return 20 if "sans" in face.family.lower() else 30


def _face_order(weight: Weight, family: str | None) -> list[FontFace]:
    target = 200 if weight == "bold" else 80

    def score(face: FontFace) -> tuple[Any, ...]:
        upright = face.slant == 0 and "italic" not in face.style.lower() and "oblique" not in face.style.lower()
        narrow = any(w in face.style.lower() for w in ("condensed", "narrow", "compressed"))
        return (_family_rank(face, family), face.mono, not upright, narrow, abs(face.weight - target), face.path)

    return sorted(installed_fonts(), key=score)


@functools.lru_cache(maxsize=512)
def find_font(text: str, weight: Weight = "bold", family: str | None = None) -> tuple[FontFace, str]:
    """The best installed face that has every character of ``text``, and the text to draw with it.

    ``family`` (a fontconfig family name) is preferred when given. Symbols no installed face has
    (typically emoji) are left out of the drawn text, with a warning; letters, digits and
    punctuation never are: then FontError says which fonts to install.
    """
    needed = _needed(text)
    faces = _face_order(weight, family)
    for face in faces:
        if all(face.covers(cp) for cp in needed):
            return face, text
    essential = {cp for cp in needed if unicodedata.category(chr(cp))[0] in "LNPM"}
    for face in faces:
        if all(face.covers(cp) for cp in essential):
            dropped = "".join(sorted({chr(cp) for cp in needed if not face.covers(cp)}))
            log.warning("no installed font draws %r; leaving them out of the burned-in text", dropped)
            kept = "".join(c for c in text if ord(c) not in needed or face.covers(ord(c)))
            return face, re.sub(r"[ \t]{2,}", " ", kept).strip()
    missing = sorted({chr(cp) for cp in essential if not any(f.covers(cp) for f in faces)})
    if missing:
        raise FontError(f"no installed font has the characters {''.join(missing)!r}: install {FONT_PACKAGES}")
    raise FontError(
        f"no single installed font has every character of {text[:60]!r} (it mixes scripts): "
        f"split the text or install a font covering all of them ({FONT_PACKAGES})"
    )


def font_for(text: str, layer: TextLayer) -> tuple[str, int, str]:
    """``(font file, face index, drawable text)`` for a layer: its own font file, or fontconfig's choice."""
    family = layer.font
    if layer.font and Path(layer.font).suffix.lower() in (".ttf", ".otf", ".ttc"):
        face = font_file(layer.font)
        if all(face.covers(cp) for cp in _needed(text)):
            return face.path, face.index, text
        log.warning("font %s lacks characters of %r; choosing an installed font instead", layer.font, text[:40])
        family = None
    face, drawable = find_font(text, layer.weight, family)
    return face.path, face.index, drawable


def font_identity(layer: TextLayer) -> str:
    """What font a layer will be drawn with, for rendition keys (file name and size)."""
    path, index, _ = font_for(layer.text, layer)
    return f"{Path(path).name}#{index}:{Path(path).stat().st_size}"


def _complex_script(text: str) -> bool:
    return any(unicodedata.bidirectional(c) in ("R", "AL", "AN") or unicodedata.category(c) == "Mc" for c in text)


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _segments(line: str) -> list[str]:
    """Break opportunities: words with their trailing spaces; each CJK character stands alone."""
    out: list[str] = []
    for ch in line:
        starts_word = out and out[-1][-1].isspace() and not ch.isspace()
        if out and not _wide(ch) and not _wide(out[-1][-1]) and not starts_word:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _fitting_prefix(text: str, font: ImageFont.FreeTypeFont, max_px: float) -> int:
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid]) <= max_px:
            lo = mid
        else:
            hi = mid - 1
    return lo


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_px: float) -> list[str]:
    """Greedy line breaking at spaces (anywhere in CJK text, and inside words too long for a line)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for seg in _segments(paragraph):
            candidate = current + seg
            if current.strip() and font.getlength(candidate.rstrip()) > max_px:
                lines.append(current.rstrip())
                candidate = seg.lstrip()
            # A single word wider than the line is cut where it must be.
            while len(candidate.rstrip()) > 1 and font.getlength(candidate.rstrip()) > max_px:
                cut = _fitting_prefix(candidate, font, max_px)
                lines.append(candidate[:cut])
                candidate = candidate[cut:]
            current = candidate
        lines.append(current.rstrip())
    return lines


def _fit_lines(
    text: str, path: str, index: int, size_px: int, max_px: float, max_lines: int
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    layout = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    font = ImageFont.truetype(path, size_px, index=index, layout_engine=layout)
    lines = wrap_text(text, font, max_px)
    px = size_px
    while len(lines) > max_lines and px > size_px * 0.6:
        px = max(8, int(px * 0.9))
        font = ImageFont.truetype(path, px, index=index, layout_engine=layout)
        lines = wrap_text(text, font, max_px)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        ellipsis = "…" if font.getlength("…") > 0 else "..."
        last = lines[-1]
        while last and font.getlength(last + ellipsis) > max_px:
            last = last[:-1]
        lines[-1] = last.rstrip() + ellipsis
    return font, lines


def render_text(layer: TextLayer, frame_size: tuple[int, int], safe_zone: SafeZone | None = None) -> Placed | None:
    """Draw a text layer into a transparent image and place it on a frame of ``frame_size`` (w, h).

    Returns None when the text is empty (or only whitespace).
    """
    if not layer.text.strip():
        return None
    width, height = frame_size
    short = min(width, height)
    if layer.use_safe_zone and safe_zone is not None:
        sx, sy, sw, sh = safe_zone.box(width, height)
    else:
        sx, sy, sw, sh = 0, 0, width, height
    inset = round(layer.inset * short)
    sx, sy, sw, sh = sx + inset, sy + inset, sw - 2 * inset, sh - 2 * inset

    path, index, text = font_for(layer.text.strip(), layer)
    if _complex_script(text) and not features.check("raqm"):
        raise FontError("this text needs complex-script shaping: install libfribidi and Pillow with libraqm")
    size_px = max(8, round(layer.size * short))
    pad_x, pad_y = round(size_px * 0.45), round(size_px * 0.25)
    max_px = sw * layer.max_width - 2 * pad_x
    font, lines = _fit_lines(text, path, index, size_px, max_px, layer.max_lines)
    ascent, descent = font.getmetrics()
    line_h = round((ascent + descent) * 1.08)
    stroke = 0 if layer.background else max(1, round(font.size * 0.07))
    text_w = max(font.getlength(line) for line in lines)
    img_w = min(sw, int(text_w + 2 * pad_x + 2 * stroke + 1))
    img_h = int(line_h * len(lines) + 2 * pad_y + 2 * stroke)

    image = Image.new("RGBA", (img_w, img_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if layer.background:
        draw.rounded_rectangle((0, 0, img_w - 1, img_h - 1), radius=round(size_px * 0.3), fill=layer.background)
    for i, line in enumerate(lines):
        x = (img_w - font.getlength(line)) / 2
        y = pad_y + stroke + i * line_h
        draw.text(
            (x, y),
            line,
            font=font,
            fill=layer.color,
            anchor="la",
            stroke_width=stroke,
            stroke_fill="#000000C0" if stroke else None,
        )
    x, y = _place(layer.position, (img_w, img_h), (sx, sy, sw, sh))
    return Placed(image, x, y)


def _place(position: str, size: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[int, int]:
    w, h = size
    bx, by, bw, bh = box
    vertical, _, horizontal = position.partition("_")
    if position == "center":
        vertical, horizontal = "center", "center"
    elif not horizontal:
        horizontal = "center"
    x = {"left": bx, "center": bx + (bw - w) // 2, "right": bx + bw - w}[horizontal]
    y = {"top": by, "center": by + (bh - h) // 2, "bottom": by + bh - h}[vertical]
    return x, y


def render_image(
    image_path: Path,
    frame_size: tuple[int, int],
    safe_zone: SafeZone | None,
    position: Position = "top_right",
    *,
    width: float = 0.18,
    max_height: float = 0.12,
    opacity: float = 0.92,
) -> Placed:
    """Scale an image (a logo) to ``width`` of the frame's shorter side (at most ``max_height`` of
    the frame's height) and place it inside the safe zone."""
    frame_w, frame_h = frame_size
    short = min(frame_w, frame_h)
    box = safe_zone.box(frame_w, frame_h) if safe_zone else (0, 0, frame_w, frame_h)
    with Image.open(image_path) as source:
        image = source.convert("RGBA")
    scale = min(width * short / image.width, max_height * frame_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    if opacity < 1:
        alpha = image.getchannel("A").point(lambda a: round(a * opacity))
        image.putalpha(alpha)
    x, y = _place(position, image.size, box)
    return Placed(image, x, y)


def time_window(start_s: float, end_s: float | None) -> str | None:
    """An ffmpeg ``enable`` expression for ``[start_s, end_s)`` built from numbers only, or None for always."""
    if start_s <= 0 and end_s is None:
        return None
    if end_s is None:
        return f"gte(t,{start_s:.4f})"
    return f"between(t,{max(0.0, start_s):.4f},{end_s - 1e-4:.4f})"


def overlay_image(
    video: Any, placed: Placed, workdir: Path, *, start_s: float = 0.0, end_s: float | None = None
) -> Any:
    """Overlay a placed image on an ffmpeg-python video stream, optionally only between two times."""
    workdir.mkdir(parents=True, exist_ok=True)
    png = workdir / f"overlay-{uuid.uuid4().hex[:12]}.png"
    placed.image.save(png, optimize=False, compress_level=1)
    # png_pipe reads exactly this file: no image-sequence patterns, no other protocol.
    image = ffmpeg.input(f"file:{png.resolve()}", f="png_pipe").video
    # Planar RGB blending: no chroma subsampling of the text's edges before the final encode.
    options: dict[str, Any] = {"x": placed.x, "y": placed.y, "format": "gbrp", "eof_action": "repeat"}
    window = time_window(start_s, end_s)
    if window:
        options["enable"] = window
    return ffmpeg.overlay(video, image, **options)


def draw_text(
    video: Any,
    layer: TextLayer,
    *,
    frame_size: tuple[int, int],
    safe_zone: SafeZone | None,
    workdir: Path,
) -> Any:
    """Draw ``layer``'s text literally on an ffmpeg-python video stream of ``frame_size`` (w, h).

    The text is rendered to a PNG in ``workdir`` (which must outlive the ffmpeg run) and overlaid
    at a position computed from ``layer.position`` inside ``safe_zone`` (or the frame's edges when
    ``layer.use_safe_zone`` is False or no safe zone is given). Returns the new stream; the input
    stream comes back unchanged when the text is empty.
    """
    placed = render_text(layer, frame_size, safe_zone)
    if placed is None:
        return video
    return overlay_image(video, placed, workdir, start_s=layer.start_s, end_s=layer.end_s)
