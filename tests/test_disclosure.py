"""Per-channel disclosure flags for the sidecar and the visible label policy, from data and configuration."""

from __future__ import annotations

import pytest

from moviegen.config import ConfigError, Settings, load_settings
from moviegen.presets import builtin_channels
from moviegen.provenance import TRAINED_ALGORITHMIC_MEDIA, LabelSpec, disclosure_flags, label_for, platforms
from moviegen.render.overlays import render_text


def test_platform_flags_for_youtube_and_tiktok():
    youtube = disclosure_flags("youtube")
    assert youtube["ai_generated"] is True
    assert youtube["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert youtube["platform"] == "youtube"
    assert youtube["flags"] == {"containsSyntheticMedia": True}
    assert youtube["api_field"].startswith("status.containsSyntheticMedia")
    assert disclosure_flags("youtube_shorts")["flags"] == {"containsSyntheticMedia": True}
    assert disclosure_flags("tiktok")["flags"] == {"is_aigc": True}
    assert disclosure_flags("instagram_reels")["shows"] == "AI info"


def test_every_builtin_channel_maps_to_a_known_platform():
    for channel in builtin_channels():
        flags = disclosure_flags(channel)
        assert flags["platform"] in platforms(), channel
        assert flags["manual"], channel


def test_unknown_channel_still_says_ai_generated_and_config_can_map_it():
    assert disclosure_flags("cinema_lobby") == {
        "ai_generated": True,
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        "content_credentials": True,
        "platform": None,
        "flags": {},
    }
    settings = Settings(provenance={"channels": {"cinema_lobby": {"platform": "youtube"}}}).provenance
    assert disclosure_flags("cinema_lobby", settings)["flags"] == {"containsSyntheticMedia": True}


def test_label_defaults_and_shipped_channel_placement():
    youtube, tiktok = label_for("youtube"), label_for("tiktok")
    assert youtube == LabelSpec(
        text="AI-generated", position="top_left", size=0.035, margin=0.04, color="white", box_color="black@0.5"
    )
    # Short vertical feeds keep the mark below the app's top bar.
    assert tiktok.margin == 0.12
    assert tiktok.font_px(1080, 1920) == 38
    # Drawn like every other text (Pillow, through overlays.render_text), against the frame's edges.
    assert _label_box(tiktok, 1080, 1920)[:2] == (130, 130)
    assert _label_box(youtube, 1920, 1080)[:2] == (43, 43)
    layer = tiktok.text_layer(1080, 1920)
    assert (layer.text, layer.color, layer.background, layer.max_lines) == ("AI-generated", "#FFFFFFFF", "#00000080", 1)
    # Still legible on a tiny preview frame, and inside it.
    assert youtube.font_px(160, 90) == 16
    x, y, w, h = _label_box(youtube, 160, 90)
    assert x >= 0 and y >= 0 and x + w <= 160 and y + h <= 90


def _label_box(label, width: int, height: int) -> tuple[int, int, int, int]:
    """Where the label is drawn on a frame: (x, y, width, height) of its box."""
    placed = render_text(label.text_layer(width, height), (width, height))
    return placed.x, placed.y, *placed.image.size


def test_label_configuration_precedence_and_per_channel_policy(tmp_path):
    config = tmp_path / "moviegen.yaml"
    config.write_text(
        "provenance:\n"
        "  label:\n"
        "    text: Made with AI\n"
        "    margin: 0.05\n"
        "  channels:\n"
        "    linkedin:\n"
        "      label: {enabled: false}\n"
        "    youtube:\n"
        "      label: {position: bottom_right, size: 0.05}\n"
    )
    settings = load_settings(config).provenance
    assert label_for("linkedin", settings) is None
    youtube = label_for("youtube", settings)
    assert (youtube.text, youtube.position, youtube.size, youtube.margin) == (
        "Made with AI",
        "bottom_right",
        0.05,
        0.05,
    )
    x, y, w, h = _label_box(youtube, 1920, 1080)
    assert (1920 - x - w, 1080 - y - h) == (54, 54)  # bottom right, 0.05 of the short side from the edges
    # An explicitly configured global margin beats the shipped TikTok placement.
    assert label_for("tiktok", settings).margin == 0.05
    assert label_for("tiktok", settings).model_dump()["text"] == "Made with AI"


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ("provenance:\n  channels:\n    tiktok: {platform: myspace}\n", "provenance.channels.tiktok.platform"),
        ("provenance:\n  channels:\n    tiktok:\n      label: {sise: 0.1}\n", "provenance.channels.tiktok.label.sise"),
        ("provenance:\n  label: {position: middle}\n", "provenance.label.position"),
        ('provenance:\n  label: {text: "AI\\ngenerated"}\n', "provenance.label.text"),
        ("provenance:\n  label: {size: 0.001}\n", "provenance.label.size"),
    ],
)
def test_bad_label_or_disclosure_configuration_is_a_clear_config_error(tmp_path, yaml_text, where):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_settings(config)
