"""More model families and tasks: LTX-Video, CogVideoX and Wan image-to-video as tiny offline builds,
registry resolution per task, and the conditioning inputs (a real photograph, a real clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moviegen.generation.conditioning import load_reference_image, read_source_clip
from moviegen.generation.device import pick_device
from moviegen.generation.generate import call_arguments, generate_batch
from moviegen.generation.loading import PipelineCache
from moviegen.models.registry import MODELS, UnknownModelError, resolve_for_task, resolve_model
from moviegen.models.tiny import TINY_BUILDS, ensure_tiny_model
from moviegen.spec import GenerationRequest

CPU = pick_device("cpu")


def request(task="t2v", seed=3, **kw):
    base = dict(
        prompt="a cup of coffee, steam rising",
        negative_prompt="",
        seed=seed,
        width=96,
        height=64,
        num_frames=9,
        steps=2,
        guidance=5.0,
        task=task,
    )
    base.update(kw)
    return GenerationRequest(**base)


@pytest.mark.parametrize(
    ("name", "pipeline"),
    [("tiny-ltx", "LTXPipeline"), ("tiny-cogvideox", "CogVideoXPipeline"), ("tiny-wan-i2v", "WanImageToVideoPipeline"),
     ("tiny-cogvideox-i2v", "CogVideoXImageToVideoPipeline")],
)  # fmt: skip
def test_each_tiny_build_round_trips_through_save_and_from_pretrained(name, pipeline, cache_dir):
    import diffusers

    from moviegen.models import tiny

    folder = ensure_tiny_model(cache_dir, name)
    assert folder.name == TINY_BUILDS[name]
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline
    assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")], "safetensors only"
    loaded = getattr(diffusers, pipeline).from_pretrained(folder, use_safetensors=True)
    fresh = {
        "tiny-ltx": tiny.build_tiny_ltx,
        "tiny-cogvideox": tiny.build_tiny_cogvideox,
        "tiny-wan-i2v": tiny.build_tiny_wan_i2v,
        "tiny-cogvideox-i2v": lambda: tiny.build_tiny_cogvideox(image_to_video=True),
    }[name]()
    saved, built = loaded.transformer.state_dict(), fresh.transformer.state_dict()
    assert saved.keys() == built.keys() and all(torch.equal(saved[k], built[k]) for k in saved)


def test_registry_knows_the_real_families_and_their_defaults():
    ltx, cog = resolve_model("Lightricks/LTX-Video"), resolve_model("THUDM/CogVideoX-5b")
    assert (ltx.info.name, ltx.info.fps, ltx.info.family.frames_multiple, ltx.info.family.size_multiple) == (
        "ltx-video", 24, 8, 32)  # fmt: skip
    assert ltx.info.frames_for(2.0) == 49  # 8k+1 frames at 24 fps
    assert (cog.info.size_for("9:16"), cog.info.fps, cog.info.max_frames) == ((720, 480), 8, 49)
    assert resolve_model("THUDM/CogVideoX-2b").info.name == "cogvideox-2b"
    for info in MODELS.values():  # every registered size suits its family
        for width, height in info.sizes.values():
            assert width % info.family.size_multiple == 0 and height % info.family.size_multiple == 0
    # a hub id of an image-to-video checkpoint is recognised as one
    i2v = resolve_model("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    assert i2v.info.tasks == {"i2v": "WanImageToVideoPipeline"}


def test_each_task_resolves_to_a_model_that_runs_it(tiny_model):
    assert resolve_for_task(resolve_model("tiny-wan"), "i2v").info.name == "tiny-wan-i2v"
    assert resolve_for_task(resolve_model("wan2.1-t2v-1.3b"), "i2v").location == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
    assert resolve_for_task(resolve_model("tiny-ltx"), "i2v").info.name == "tiny-ltx"  # same weights
    assert resolve_for_task(resolve_model("cogvideox-5b"), "i2v").location == "THUDM/CogVideoX-5b-I2V"
    assert resolve_for_task(resolve_model("tiny-cogvideox"), "i2v").info.name == "tiny-cogvideox-i2v"
    assert resolve_for_task(resolve_model("tiny-cogvideox"), "v2v").pipeline_for("v2v") == (
        "CogVideoXVideoToVideoPipeline"
    )
    with pytest.raises(UnknownModelError, match=r"cannot do video-to-video: use one of .*tiny-wan"):
        resolve_for_task(resolve_model("tiny-ltx"), "v2v")
    # a local folder of the I2V build runs image-to-video only
    folder = resolve_model(str(ensure_tiny_model(tiny_model.parent.parent, "tiny-wan-i2v")))
    assert folder.info.tasks == {"i2v": "WanImageToVideoPipeline"}


def test_reference_image_fills_the_size_without_stretching(photo):
    image = load_reference_image(photo, (96, 64))
    assert image.size == (96, 64) and image.mode == "RGB"
    # the square photograph is cropped to 3:2 around its centre: the middle row matches the source's
    source = np.asarray(load_reference_image(photo, (512, 512)))
    crop = np.asarray(image)
    assert abs(crop[32].mean() - source[256].mean()) < 25


def test_source_clip_is_resampled_to_the_models_rate_size_and_frame_count(real_clip):
    frames = read_source_clip(real_clip, (96, 64), fps=16, frames=17)  # 2 s at 30 fps -> 17 frames at 16 fps
    assert frames.shape == (17, 64, 96, 3) and frames.dtype == np.uint8
    assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 1.0  # the pan moves
    held = read_source_clip(real_clip, (96, 64), fps=16, frames=41)  # longer than the clip: last frame held
    assert held.shape[0] == 41 and np.array_equal(held[-1], held[-5])


def test_image_to_video_on_wan_starts_from_the_photograph(photo, tmp_path, cache_dir):
    from PIL import Image

    cache = PipelineCache()
    ref = resolve_for_task(resolve_model("tiny-wan"), "i2v")
    pipe = cache.get(ref, CPU, cache_dir, task="i2v")
    assert type(pipe).__name__ == "WanImageToVideoPipeline"
    [clip] = generate_batch(pipe, [request("i2v", reference_sha256="a", reference_path=str(photo))], CPU)
    assert clip.frames.shape == (9, 64, 96, 3) and clip.nan_fraction == 0.0
    other = tmp_path / "flat.png"
    Image.new("RGB", (512, 512), (30, 200, 90)).save(other)
    [flat] = generate_batch(pipe, [request("i2v", reference_sha256="b", reference_path=str(other))], CPU)
    assert np.abs(flat.frames.astype(int) - clip.frames).mean() > 0.5  # the reference image drives the video


def test_video_to_video_edits_the_clip_on_the_text_to_video_weights(real_clip, cache_dir, tiny_model):
    cache = PipelineCache()
    ref = resolve_model("tiny-wan")
    t2v = cache.get(ref, CPU, cache_dir)
    v2v = cache.get(ref, CPU, cache_dir, task="v2v")
    assert type(v2v).__name__ == "WanVideoToVideoPipeline" and v2v.transformer is t2v.transformer
    assert cache.loads == {ref.location: 1}  # the weights were loaded once for both tasks
    edit = request("v2v", source_sha256="c", source_path=str(real_clip), strength=0.6, fps=16, num_frames=17)
    [clip] = generate_batch(v2v, [edit], CPU)
    assert clip.frames.shape == (17, 64, 96, 3)
    from dataclasses import replace

    [stronger] = generate_batch(v2v, [replace(edit, strength=1.0)], CPU)
    assert not np.array_equal(stronger.frames, clip.frames)  # the strength reaches the pipeline


@pytest.mark.parametrize(
    ("model", "task"), [("tiny-ltx", "t2v"), ("tiny-ltx", "i2v"), ("tiny-cogvideox", "v2v"), ("tiny-cogvideox", "i2v")]
)
def test_ltx_and_cogvideox_generate_on_their_tiny_builds(model, task, photo, real_clip, cache_dir):
    ref = resolve_for_task(resolve_model(model), task)
    pipe = PipelineCache().get(ref, CPU, cache_dir, task=task)
    inputs = {
        "t2v": {},
        "i2v": {"reference_sha256": "a", "reference_path": str(photo)},
        "v2v": {"source_sha256": "c", "source_path": str(real_clip), "strength": 0.7},
    }[task]
    a, b = request(task, seed=1, fps=ref.info.fps, **inputs), request(task, seed=2, fps=ref.info.fps, **inputs)
    clips = generate_batch(pipe, [a, b], CPU)
    assert [c.frames.shape for c in clips] == [(9, 64, 96, 3)] * 2
    assert not np.array_equal(clips[0].frames, clips[1].frames)  # each clip keeps its own seed


def test_each_family_passes_its_own_call_arguments(cache_dir, tiny_model):
    """LTX gets its frame rate, and decode noise only when its VAE is timestep-conditioned; Wan gets neither."""
    ltx = PipelineCache().get(resolve_model("tiny-ltx"), CPU, cache_dir)
    t2v = request("t2v", seed=1, fps=24)
    assert call_arguments(ltx, t2v) == {"num_frames": t2v.num_frames, "frame_rate": 24}
    ltx.vae.register_to_config(timestep_conditioning=True)  # as LTX-Video 0.9.1+ checkpoints are saved
    try:
        assert call_arguments(ltx, t2v) == {
            "num_frames": t2v.num_frames,
            "frame_rate": 24,
            "decode_timestep": 0.05,
            "decode_noise_scale": 0.025,
        }
    finally:
        ltx.vae.register_to_config(timestep_conditioning=False)
    wan = PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir)
    assert call_arguments(wan, t2v) == {"num_frames": t2v.num_frames}
