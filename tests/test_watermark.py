"""The invisible watermark on real footage: photographs panned into clips, marked, encoded with H.264, read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as photos
from typer.testing import CliRunner

from flows.cli import app
from moviegen.media import run_ffmpeg, write_master
from moviegen.store import MANIFEST_SCHEMA, OutputRoot, utc_now
from moviegen.watermark.model import Watermarker, default_watermarker, working_size
from moviegen.watermark.payload import (
    MIN_BIT_ACCURACY,
    bit_errors,
    bits_payload,
    near_payloads,
    payload_bits,
    payload_for,
    payload_hex,
    payload_is_valid,
    reading_from_logits,
)
from moviegen.watermark.placement import watermark_placement
from moviegen.watermark.readback import delivery_gate, read_video, verify_video

FPS = 30


def panned_clip(photo: np.ndarray, frames: int, width: int, height: int) -> np.ndarray:
    """A slow zoom and pan over a photograph: uint8 RGB (frames, height, width, 3)."""
    ih, iw = photo.shape[:2]
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        zoom = 1.0 + 0.15 * t
        crop_h = ih / zoom
        crop_w = crop_h * width / height
        if crop_w > iw:
            crop_w = iw / zoom
            crop_h = crop_w * height / width
        x0 = (iw - crop_w) * (0.3 + 0.4 * t)
        y0 = (ih - crop_h) / 2
        sx, sy = width / crop_w, height / crop_h
        matrix = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], np.float32)
        out.append(cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def encode_h264(frames: np.ndarray, path: Path, crf: int = 20) -> Path:
    """Encode like a channel rendition: H.264 high profile, yuv420p, 2 s GOP, +faststart."""
    _, height, width, _ = frames.shape
    run_ffmpeg(
        [
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS), "-i", "pipe:0"),
            *("-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-profile:v", "high"),
            *("-pix_fmt", "yuv420p", "-g", str(2 * FPS), "-movflags", "+faststart", str(path)),
        ],
        input_bytes=np.ascontiguousarray(frames).tobytes(),
    )
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def marker() -> Watermarker:
    return default_watermarker()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A 9:16 clip (360x640) panned over the astronaut photograph."""
    return panned_clip(photos.astronaut(), 12, 360, 640)


def test_payload_carries_an_identifier_and_a_check_value():
    payload = payload_for("a1b2c3d4e5f6a7b8c9d0", "tiktok")
    assert payload == payload_for("a1b2c3d4e5f6a7b8c9d0", "tiktok")  # deterministic: reruns mark the same
    assert payload != payload_for("a1b2c3d4e5f6a7b8c9d0", "youtube")
    assert 0 <= payload < 2**32 and payload_is_valid(payload)
    assert payload_hex(payload) == f"{payload:08x}"
    assert bits_payload(payload_bits(payload)) == payload
    assert not payload_is_valid(payload ^ 0xFF)  # a different check value


def test_check_value_rejects_random_words():
    words = np.random.default_rng(0).integers(0, 2**32, 60_000)
    passed = sum(payload_is_valid(int(w)) for w in words)
    # 1 in 256 expected (234): a 5-sigma band around it.
    assert 160 < passed < 310


def test_one_wrong_voted_bit_is_tolerated_two_are_not():
    payload = payload_for("clip-key", "tiktok")
    signs = payload_bits(payload).astype(np.float32) * 2 - 1
    logits = np.tile(signs * 3.0, (16, 1))
    logits[:, 5] *= -1  # content that pulls one bit the wrong way in every frame
    one = reading_from_logits(logits, payload)
    assert one.word != payload and bit_errors(one.word, payload) == 1
    assert one.verified and one.payload == payload and one.bit_accuracy == pytest.approx(31 / 32)
    logits[:, 9] *= -1
    assert not reading_from_logits(logits, payload).verified
    # Without an expected payload, the nearest valid payload is found among the word's neighbours.
    assert payload in near_payloads(one.word)
    noise = np.random.default_rng(0).normal(0, 3, (16, 32)).astype(np.float32)
    assert not reading_from_logits(noise, payload).verified


def test_working_size_follows_the_frames_own_dimensions():
    assert working_size(1080, 1920) == (144, 256)
    assert working_size(1920, 1080) == (256, 144)
    assert working_size(1080, 1080) == (144, 144)
    assert working_size(1080, 1350) == (144, 180)


def test_marked_clip_survives_h264_at_channel_settings(marker, portrait, tmp_path):
    payload = payload_for("clipkey-portrait", "tiktok")
    marked = marker.embed(portrait, payload)
    assert marked.shape == portrait.shape and marked.dtype == np.uint8
    assert psnr(marked, portrait) >= 40

    video = encode_h264(marked, tmp_path / "marked.mp4")
    reading = verify_video(video, payload, watermarker=marker)
    assert reading.verified, reading.describe()
    assert reading.word == payload
    assert reading.bit_accuracy >= 0.95
    found = read_video(video, watermarker=marker)  # no expectation: the check value and agreement decide
    assert found.verified and found.payload == payload


def test_landscape_clip_marked_in_two_chunks(marker, tmp_path):
    clip = panned_clip(photos.coffee(), 12, 640, 360)
    payload = payload_for("clipkey-landscape", "youtube")
    marked = np.concatenate([marker.embed(clip[:6], payload), marker.embed(clip[6:], payload)])
    reading = verify_video(encode_h264(marked, tmp_path / "chunks.mp4"), payload, watermarker=marker)
    assert reading.verified, reading.describe()


def test_unmarked_video_does_not_verify(marker, portrait, tmp_path):
    video = encode_h264(portrait, tmp_path / "unmarked.mp4")
    reading = read_video(video, watermarker=marker)
    expected = payload_for("clipkey-portrait", "tiktok")
    against = reading.against(expected)
    assert not against.verified
    assert against.bit_accuracy < MIN_BIT_ACCURACY
    if reading.verified:  # only when its 32 voted bits pass the check value by chance (1 in 256)
        assert payload_is_valid(reading.word)


def test_delivery_gate_refuses_a_rendition_rendered_from_the_unmarked_master(marker, portrait, tmp_path):
    payload = payload_for("clipkey-portrait", "instagram_reels")
    master = write_master(portrait, FPS, tmp_path / "master.mkv")
    stripped = tmp_path / "stripped.mp4"
    run_ffmpeg(["-i", str(master), "-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p", str(stripped)])
    gate = delivery_gate(stripped, payload, watermarker=marker)
    assert not gate.passed
    assert gate.bit_accuracy < MIN_BIT_ACCURACY
    assert "NOT verified" in gate.message and f"{gate.bit_accuracy:.3f}" in gate.message

    marked = encode_h264(marker.embed(portrait, payload), tmp_path / "marked.mp4")
    assert delivery_gate(marked, payload, watermarker=marker).passed


def test_cli_verify_traces_a_file_back_to_its_manifest_row(marker, portrait, tmp_path):
    payload = payload_for("clipkey-portrait", "tiktok")
    root = OutputRoot(str(tmp_path / "out"))
    video = encode_h264(marker.embed(portrait, payload), tmp_path / "clip.mp4")
    relative = root.put_file(video, "published", "tiktok", "camp", "clip.mp4")
    row = {
        "run_id": "run-1",
        "campaign_id": "camp",
        "clip_id": "clip",
        "channel": "tiktok",
        "path": relative,
        "clip_key": "clipkey-portrait",
        "watermark_payload": payload_hex(payload),
        "published_at": utc_now(),
    }
    root.append_rows("manifest", MANIFEST_SCHEMA, [row], "run-1")
    runner = CliRunner()

    result = runner.invoke(app, ["verify", str(video), "--out", root.url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["watermark"]["verified"] is True
    assert report["watermark"]["payload"] == payload_hex(payload)
    assert report["watermark"]["bit_accuracy"] >= 0.95
    assert report["watermark"]["manifest_row"]["clip_id"] == "clip"
    # No credentials in this file: nulls (and no failures), and no label metadata.
    assert (report["c2pa"]["state"], report["c2pa"]["digital_source_type"], report["c2pa"]["failures"]) == (
        None,
        None,
        [],
    )
    assert report["label"] is None

    unmarked = encode_h264(portrait, tmp_path / "unmarked.mp4")
    result = runner.invoke(app, ["verify", str(unmarked), "--out", root.url, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["watermark"]["verified"] is False and report["watermark"]["manifest_row"] is None

    result = runner.invoke(app, ["verify", str(tmp_path / "missing.mp4"), "--out", root.url])
    assert result.exit_code == 2


def test_embed_takes_any_size_and_rejects_wrong_input(marker):
    odd = panned_clip(photos.chelsea(), 2, 101, 77)
    assert marker.embed(odd, 7).shape == odd.shape
    assert marker.embed(odd[:0], 7).shape == (0, 77, 101, 3)
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        marker.embed(odd.astype(np.float32), 7)
    with pytest.raises(ValueError, match="32-bit"):
        marker.embed(odd, 2**32)


def test_placement_embeds_in_the_master_only_when_every_rendition_scales_the_whole_frame():
    master = (832, 480)
    youtube, square = ((1920, 1080), "crop"), ((1080, 1080), "crop")
    tiktok, reels_pad = ((1080, 1920), "crop"), ((1080, 1920), "pad")
    assert watermark_placement(master, [youtube, ((1280, 720), "crop")]) == "master"
    assert watermark_placement(master, [youtube, square]) == "rendition"
    assert watermark_placement(master, [youtube, tiktok]) == "rendition"
    assert watermark_placement(master, [reels_pad]) == "rendition"
    assert watermark_placement(master, [((1080, 1350), "crop")]) == "rendition"


def test_product_path_imports_neither_torch_nor_imwatermark():
    code = "import sys, moviegen.watermark; print('torch' in sys.modules, 'imwatermark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
