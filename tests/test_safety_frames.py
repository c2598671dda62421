"""The frame gate on real footage (scikit-image's photographs panned into clips) and broken clips."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import fast_settings
from skimage import data

from moviegen.config import ConfigError, SafetySettings
from moviegen.media import probe, write_master
from moviegen.models.registry import resolve_model
from moviegen.records import Master
from moviegen.run.context import start_run
from moviegen.run.masters import check_frames, master_path
from moviegen.safety import (
    DetectorError,
    check_clip,
    check_master,
    load_policy,
    prepare_detector,
    register_detector,
    sample_indices,
)
from moviegen.spec import ClipPlan, ClipSpec, GenerationRequest

WIDTH, HEIGHT, FRAMES = 480, 272, 17  # the tiny model's 16:9 master, 1 s at 16 fps


def pan(image: np.ndarray, frames: int = FRAMES, step: int = 3) -> np.ndarray:
    """A slow pan across a photograph: uint8 RGB frames (F, HEIGHT, WIDTH, 3), like a generated clip."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    need_w, need_h = WIDTH + step * frames, HEIGHT
    scale = max(need_w / image.shape[1], need_h / image.shape[0])
    resized = cv2.resize(image[..., :3], (round(image.shape[1] * scale) + 1, round(image.shape[0] * scale) + 1))
    return np.stack([resized[:HEIGHT, i * step : i * step + WIDTH] for i in range(frames)])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return pan(data.astronaut())


@pytest.fixture(scope="module")
def default_policy():
    return load_policy()


@pytest.fixture(scope="module")
def faces_policy_file(tmp_path_factory) -> Path:
    """A test policy that denies a benign detector label: proves the detector path fires without unsafe material."""
    path = tmp_path_factory.mktemp("policy") / "no-faces.yaml"
    path.write_text("extends: default\nname: no-faces\nframes:\n  thresholds:\n    FACE_FEMALE: 0.4\n")
    return path


def test_sample_indices():
    assert sample_indices(17, 8, 8) == [0, 8, 16]
    assert sample_indices(49, 4, 5) == [0, 12, 24, 36, 48]
    assert sample_indices(1, 8, 8) == [0]


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee", "rocket"])
def test_real_footage_passes_the_default_policy(photo, default_policy):
    result = check_clip(pan(getattr(data, photo)()), 0.0, default_policy)
    assert result.passed, result.message
    scores = result.scores
    assert scores["frames"] == FRAMES and scores["sampled"] == [0, 8, 16]
    assert scores["detector"] == "nudenet-320n" and set(default_policy.frames.thresholds) <= set(scores["labels"])
    assert all(scores["qc"][k] == 0 for k in ("black_fraction", "constant_fraction", "frozen_fraction"))


def test_the_detector_sees_the_astronauts_face(astronaut, default_policy):
    labels = check_clip(astronaut, 0.0, default_policy).scores["labels"]
    assert labels["FACE_FEMALE"] > 0.5
    assert max(labels[k] for k in default_policy.frames.thresholds) < 0.3


def test_a_denied_detector_label_holds_the_clip_back(astronaut, faces_policy_file):
    result = check_clip(astronaut, 0.0, load_policy(faces_policy_file))
    assert not result.passed and result.rule == "detector"
    failure = result.failures[0]
    assert failure["label"] == "FACE_FEMALE" and failure["value"] >= 0.4 and failure["frame"] in (0, 8, 16)
    assert "FACE_FEMALE scored" in result.message and "policy limit 0.4" in result.message


def broken_clips() -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(0)
    photo = pan(data.coffee())
    flicker = photo.copy()
    flicker[1::2] = (flicker[1::2] * 0.4).astype(np.uint8)
    hues = np.linspace(40, 220, FRAMES).astype(np.uint8)
    constant = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    constant[:] = np.stack([hues, hues[::-1], np.full(FRAMES, 128, np.uint8)], axis=-1)[:, None, None, :]
    return {
        "nan": (photo, 0.02),
        "black": (rng.integers(0, 6, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8), 0.0),
        "constant": (constant, 0.0),
        "frozen": (np.repeat(photo[:1], FRAMES, axis=0), 0.0),
        "flicker": (flicker, 0.0),
    }


@pytest.mark.parametrize("rule", ["nan", "black", "constant", "frozen", "flicker"])
def test_qc_holds_back_broken_clips(rule, default_policy):
    frames, nan_fraction = broken_clips()[rule]
    result = check_clip(frames, nan_fraction, default_policy)
    assert not result.passed and result.rule == rule, result.failures
    assert result.message.startswith("QC: ") and "the policy allows" in result.message


def test_a_reused_masters_unknown_nan_share_is_not_a_failure(default_policy):
    result = check_clip(pan(data.coffee()), None, default_policy)
    assert result.passed and result.scores["nan_fraction"] is None


def test_decoding_the_master_gives_the_same_verdict(astronaut, default_policy, tmp_path):
    path = write_master(astronaut, 16, tmp_path / "m.mkv")
    from_file = check_master(path, 0.0, default_policy)  # probes the size
    in_memory = check_clip(astronaut, 0.0, default_policy)
    assert from_file.scores["qc"] == in_memory.scores["qc"]
    assert from_file.scores["labels"] == in_memory.scores["labels"]
    assert from_file.scores["sampled"] == in_memory.scores["sampled"]


class BrightRedDetector:
    """A second detector through the same interface: the share of strongly red pixels in a frame."""

    name = "bright-red"
    license = "Apache-2.0"
    labels = ("RED",)

    def scores(self, frames: np.ndarray) -> np.ndarray:
        r, g, b = (frames[..., i].astype(int) for i in range(3))
        red = (r > 150) & (g < 90) & (b < 90)
        return red.mean(axis=(1, 2))[:, None].astype(np.float32)


def test_another_detector_can_replace_nudenet(tmp_path, astronaut):
    register_detector("bright-red", BrightRedDetector)
    policy_file = tmp_path / "red.yaml"
    policy_file.write_text("name: red\nframes:\n  detector: bright-red\n  thresholds: {RED: 0.5}\n")
    policy = load_policy(policy_file)
    red = np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    red[..., 0] = 200 + np.arange(FRAMES, dtype=np.uint8)[:, None, None] * 3
    red[:, ::2, ::2, 1] = 40  # some texture, so QC has nothing to say
    assert check_clip(astronaut, 0.0, policy).passed
    result = check_clip(red, 0.0, policy)
    assert (result.rule, result.scores["detector"], result.scores["labels"]) == ("detector", "bright-red", {"RED": 1.0})


def test_policies_must_name_a_known_detector_and_its_labels(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("extends: default\nname: typo\nframes:\n  thresholds: {FACE_FEMAL: 0.5}\n")
    with pytest.raises(DetectorError, match="FACE_FEMAL"):
        prepare_detector(load_policy(typo))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("extends: default\nname: unknown\nframes:\n  detector: no-such-detector\n")
    with pytest.raises(DetectorError, match="unknown detector 'no-such-detector'"):
        prepare_detector(load_policy(unknown))
    # The run refuses to start (a configuration error: exit status 2), before any generation.
    with pytest.raises(ConfigError):
        start_run(fast_settings(tmp_path / "out", safety=SafetySettings(policy=str(unknown))))


def photo_master(frames: np.ndarray, campaign_id: str, clip_id: str, ctx) -> Master:
    """A master made from real footage, standing where a generated one would: the frame gate cannot tell."""
    spec = ClipSpec(
        row=3, campaign_id=campaign_id, clip_id=clip_id, prompt="an astronaut portrait", channels=("youtube",)
    )
    request = GenerationRequest(spec.prompt, "", 0, WIDTH, HEIGHT, FRAMES, 2, 5.0)
    clip = ClipPlan(spec, resolve_model("tiny-wan"), "real-footage", request, fps=16)
    return Master(clip, write_master(frames, clip.fps, master_path(clip, ctx)))


@pytest.mark.parametrize("source", ["file", "memory"])
def test_check_frames_quarantines_a_held_back_clip(source, astronaut, faces_policy_file, tmp_path):
    out = tmp_path / "out"
    settings = fast_settings(out, safety=SafetySettings(campaign_policies={"no-faces": str(faces_policy_file)}))
    ctx = start_run(settings)
    held = photo_master(astronaut, "no-faces", "portrait", ctx)
    kept = photo_master(astronaut, "default-rules", "portrait", ctx)
    frames = astronaut if source == "memory" else None

    held_result = check_frames(held, ctx, frames)
    kept_result = check_frames(kept, ctx, frames)

    # Held back: no master to render from, a frames problem that names the rule and where it went.
    # Both rows share one clip_key (same prompt, seed and model), hence one work master, which stays.
    assert held_result.path is None and held.path == kept.path
    problem = held_result.problem
    assert (problem.stage, problem.rule, problem.clip_id, problem.row) == ("frames", "detector", "portrait", 3)
    assert problem.details["quarantine"] == "quarantine/no-faces/portrait"
    assert "held in quarantine/no-faces/portrait/" in problem.message
    folder = out / "quarantine" / "no-faces" / "portrait"
    assert sorted(p.name for p in folder.iterdir()) == ["contact.jpg", "master.mkv", "verdict.json"]
    assert probe(folder / "master.mkv").frames == FRAMES
    sheet = probe(folder / "contact.jpg")
    assert (sheet.width, sheet.height) == (3 * 240, 136)  # three sampled frames, halved
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["rule"] == "detector" and verdict["failures"][0]["label"] == "FACE_FEMALE"
    assert verdict["policy"] == "no-faces" and verdict["scores"]["labels"]["FACE_FEMALE"] >= 0.4
    assert not (out / "published").exists()

    # The same footage under the default policy passes untouched.
    assert kept_result.path == kept.path and kept_result.path.is_file() and kept_result.problem is None

    # Both decisions are on record with their scores.
    scores = sorted(pq.read_table(out / "scores").to_pylist(), key=lambda r: r["campaign_id"])
    assert [(r["campaign_id"], r["gate"], r["passed"], r["rule"], r["policy"]) for r in scores] == [
        ("default-rules", "frames", True, None, "default"),
        ("no-faces", "frames", False, "detector", "no-faces"),
    ]
    assert json.loads(scores[0]["scores"])["labels"]["FACE_FEMALE"] > 0.5


def test_a_master_with_nans_is_not_kept_for_reuse(astronaut, tmp_path):
    ctx = start_run(fast_settings(tmp_path / "out"))
    master = photo_master(astronaut, "camp", "nans", ctx)
    master.nan_fraction = 0.01
    result = check_frames(master, ctx, astronaut)
    assert (result.path, result.problem.rule) == (None, "nan")
    # A reused master's NaN share cannot be known (NaNs were zeroed), so a rerun must generate it again.
    assert not master.path.exists()
    assert (tmp_path / "out" / "quarantine" / "camp" / "nans" / "master.mkv").is_file()
