"""Channel presets and styles from data and configuration, assets by URI, and `moviegen channels`."""

from __future__ import annotations

import json
import subprocess

import fsspec
import pytest
from typer.testing import CliRunner

from flows.cli import app
from moviegen.assets import AssetError, check_uri, fetch_asset, read_cube_size
from moviegen.config import ConfigError
from moviegen.media import ffmpeg_binary
from moviegen.presets import builtin_channels, builtin_luts, builtin_styles, channel_presets, styles

REQUIRED_CHANNELS = {
    "tiktok": (1080, 1920),
    "instagram_reels": (1080, 1920),
    "youtube_shorts": (1080, 1920),
    "youtube": (1920, 1080),
    "instagram_feed": (1080, 1350),
    "linkedin": (1080, 1080),
    "x": (1280, 720),
    "x_vertical": (720, 1280),
}


def test_shipped_presets_cover_the_channels():
    presets = builtin_channels()
    for name, size in REQUIRED_CHANNELS.items():
        p = presets[name]
        assert (p.width, p.height) == size
        assert (p.codec, p.pix_fmt, p.audio_codec, p.audio_rate, p.faststart) == ("h264", "yuv420p", "aac", 48000, True)
        _, _, w, h = p.safe_zone.box(p.width, p.height)
        assert 0 < w < p.width and 0 < h < p.height
    assert {"warm", "cool", "cinematic", "mono", "vivid"} <= set(builtin_styles())
    assert set(builtin_luts()) >= {"teal_orange", "film_fade", "sepia"}
    for path in builtin_luts().values():
        assert read_cube_size(path) == 17


def test_users_add_and_override_presets_in_configuration():
    presets = channel_presets(
        {
            "story": {"width": 720, "height": 1280, "fps": 30, "max_duration_s": 15, "level": "3.1"},
            "tiktok": {"crf": 23, "safe_zone": {"bottom": 0.3}},
        }
    )
    assert presets["story"].safe_zone.top == 0.05 and presets["story"].x264_preset == "veryfast"
    tiktok = presets["tiktok"]
    assert tiktok.crf == 23 and tiktok.safe_zone.bottom == 0.3
    assert tiktok.safe_zone.right == builtin_channels()["tiktok"].safe_zone.right  # the rest stays
    assert styles({"brand": {"saturation": 1.2, "lut": "teal_orange"}})["brand"].lut == "teal_orange"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"widht": 720}, "channels.tiktok.widht: Extra inputs are not permitted"),
        ({"width": 1081}, "must be even"),
        ({"fps": 60}, "too much for H.264 level 4.0"),
        ({"maxrate_kbps": 30000}, "exceeds level 4.0"),
        ({"x264_preset": "turbo"}, "channels.tiktok.x264_preset"),
    ],
)
def test_a_bad_user_preset_is_a_configuration_error(spec, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        channel_presets({"tiktok": spec})


def test_a_bad_user_style_is_a_configuration_error():
    with pytest.raises(ConfigError, match=r"styles\.loud\.saturation"):
        styles({"loud": {"saturation": 9}})


def test_uri_checks():
    assert "not allowed" in check_uri("ftp://host/logo.png", "logo")
    # ffmpeg protocol syntax is just a (missing) local file name here: it never reaches ffmpeg.
    assert "does not exist" in check_uri("concat:a.mp3|b.mp3", "music")
    assert "must end in" in check_uri("https://cdn.example.com/logo.gif", "logo")
    assert "does not exist" in check_uri("/no/such/logo.png", "logo")
    assert check_uri("https://cdn.example.com/brand/logo.png?v=2", "logo") is None


def test_assets_are_fetched_through_fsspec_and_checked(tmp_path):
    from PIL import Image

    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(tmp_path / "logo.png")
    with fsspec.open("memory://brand/logo.png", "wb") as f:
        f.write((tmp_path / "logo.png").read_bytes())
    asset = fetch_asset("memory://brand/logo.png", "logo", tmp_path / "cache")
    assert asset.path.parent == tmp_path / "cache" and asset.path.read_bytes() == (tmp_path / "logo.png").read_bytes()
    assert asset.ffmpeg_url == f"file:{asset.path}"
    # A file that only claims to be what its name says is refused.
    with fsspec.open("memory://brand/fake.png", "wb") as f:
        f.write(b"not an image")
    with pytest.raises(AssetError, match="not a readable image"):
        fetch_asset("memory://brand/fake.png", "logo", tmp_path / "cache")
    with pytest.raises(AssetError, match="does not exist"):
        fetch_asset("memory://brand/missing.png", "logo", tmp_path / "cache")


def test_music_must_be_a_plain_audio_file(tmp_path):
    # An HLS playlist could make ffmpeg open other files or URLs: refused whatever its name.
    playlist = tmp_path / "song.mp3"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    with pytest.raises(AssetError, match="music"):
        fetch_asset(str(playlist), "music", tmp_path / "cache")
    song = tmp_path / "song.ogg"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.3", "-c:a", "libvorbis", str(song)],
        check=True,
    )
    assert fetch_asset(str(song), "music", tmp_path / "cache").input_format == "ogg"


def test_luts_are_checked(tmp_path):
    one_d = tmp_path / "one.cube"
    one_d.write_text("LUT_1D_SIZE 2\n0 0 0\n1 1 1\n")
    with pytest.raises(AssetError, match="1D LUT"):
        fetch_asset(str(one_d), "lut", tmp_path / "cache")
    short = tmp_path / "short.cube"
    short.write_text("LUT_3D_SIZE 2\n0 0 0\n1 1 1\n")
    with pytest.raises(AssetError, match="needs 8"):
        fetch_asset(str(short), "lut", tmp_path / "cache")


def test_channels_command_lists_presets_and_styles(tmp_path):
    config = tmp_path / "moviegen.yaml"
    config.write_text("channels:\n  story:\n    width: 720\n    height: 1280\n    fps: 30\n    max_duration_s: 15\n")
    runner = CliRunner()
    listing = runner.invoke(app, ["channels", "--config", str(config), "--json"])
    assert listing.exit_code == 0, listing.output
    data = json.loads(listing.stdout)
    assert data["story"]["width"] == 720 and data["tiktok"]["safe_zone"]["bottom"] == 0.22
    looks = runner.invoke(app, ["channels", "--styles", "--json"])
    assert json.loads(looks.stdout)["cinematic"]["lut"] == "teal_orange"
    config.write_text("channels:\n  story:\n    width: 721\n")
    bad = runner.invoke(app, ["channels", "--config", str(config)])
    assert bad.exit_code == 2 and "story" in bad.output
