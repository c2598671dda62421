"""Burned-in text: fonts found at run time, wrapping, shrinking, placement inside the safe zone."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from PIL import ImageFont

from moviegen.presets import SafeZone
from moviegen.render.overlays import FontError, TextLayer, find_font, installed_fonts, render_text, wrap_text

FRAME = (1080, 1920)
SAFE = SafeZone(top=0.1, bottom=0.2, left=0.05, right=0.1)


@pytest.mark.parametrize(
    ("text", "script_family"),
    [
        ("Step into spring", "Noto Sans"),
        ("Привет, мир", "Noto Sans"),
        ("春季新品 周五发布", None),
        ("مرحبا بالعالم", "Arabic"),
        ("नमस्ते दुनिया", "Devanagari"),
    ],
)
def test_a_font_with_every_character_is_found(text, script_family):
    face, drawable = find_font(text)
    assert drawable == text
    assert all(face.covers(ord(c)) for c in text if not c.isspace())
    if script_family:
        assert script_family in face.family
    assert face.weight >= 180 or "Micro Hei" in face.family  # bold where the family has it


def _letter_no_font_has() -> str | None:
    for cp in range(0x10000, 0x30000):
        char = chr(cp)
        if unicodedata.category(char).startswith("L") and not any(f.covers(cp) for f in installed_fonts()):
            return char
    return None


def test_emoji_no_font_has_are_left_out_but_letters_never_are():
    _, drawable = find_font("Sale \U0001f525 now")
    assert drawable == "Sale now"
    missing = _letter_no_font_has()
    assert missing is not None
    with pytest.raises(FontError, match="install"):
        find_font(f"hello {missing}")


def test_long_text_wraps_then_shrinks_then_ends_with_an_ellipsis():
    short = render_text(TextLayer("Hello"), FRAME, SAFE)
    long = render_text(TextLayer("word " * 200, max_lines=3), FRAME, SAFE)
    _, _, w, _ = SAFE.box(*FRAME)
    assert long.image.width <= w * 0.92 + 2
    assert long.image.height < short.image.height * 3  # three lines, at a smaller size
    font = ImageFont.truetype(find_font("word")[0].path, 48)
    lines = wrap_text("a few words that will not fit on one short line", font, 300)
    assert len(lines) > 1 and all(font.getlength(line) <= 300 for line in lines)
    cjk = wrap_text("春季新品周五发布欢迎光临我们的商店" * 3, ImageFont.truetype(find_font("春")[0].path, 48), 400)
    assert len(cjk) > 1  # Chinese breaks between characters, without spaces


@pytest.mark.parametrize(
    "position", ["top", "center", "bottom", "top_left", "top_right", "bottom_left", "bottom_right"]
)
def test_layers_are_placed_inside_the_safe_zone(position):
    placed = render_text(TextLayer("AI-generated", position=position, size=0.03), FRAME, SAFE)
    x, y, w, h = SAFE.box(*FRAME)
    assert x <= placed.x and placed.x + placed.image.width <= x + w
    assert y <= placed.y and placed.y + placed.image.height <= y + h
    if position.endswith("right"):
        assert placed.x + placed.image.width == x + w
    if position.startswith("bottom"):
        assert placed.y + placed.image.height == y + h
    alpha = np.asarray(placed.image)[..., 3]
    assert alpha.max() == 255 and alpha.min() == 0  # drawn glyphs and transparent surroundings


def test_without_a_background_text_gets_an_outline_and_frame_edges_can_be_used():
    placed = render_text(TextLayer("Edge", position="top_left", background=None, use_safe_zone=False), FRAME, SAFE)
    assert (placed.x, placed.y) == (0, 0)
    pixels = np.asarray(placed.image)
    visible = pixels[pixels[..., 3] > 200][:, :3]
    assert visible.max() == 255 and visible.min() < 60  # white letters, dark outline


def test_empty_text_draws_nothing_and_bad_layers_are_refused():
    assert render_text(TextLayer("   "), FRAME, SAFE) is None
    with pytest.raises(ValueError, match="not a colour"):
        TextLayer("x", color="reddish")
    with pytest.raises(ValueError, match="after start_s"):
        TextLayer("x", start_s=2, end_s=1)


def test_a_brand_font_file_is_used_when_it_has_the_characters():
    from moviegen.render.overlays import font_for

    dejavu = next(f for f in installed_fonts() if f.family == "DejaVu Sans" and f.style == "Book").path
    assert font_for("Hello", TextLayer("Hello", font=dejavu))[0] == dejavu
    # DejaVu has no Chinese: another installed face draws it rather than empty boxes.
    path, _, text = font_for("春季新品", TextLayer("春季新品", font=dejavu))
    assert path != dejavu and text == "春季新品"
    with pytest.raises(FontError, match="does not exist"):
        font_for("x", TextLayer("x", font="/no/such/brand.ttf"))
