"""The tiny model: saved and loaded like a real one; registry resolution; real generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moviegen.config import TINY_MODEL_ID
from moviegen.generation.device import ModelLoadError, pick_device
from moviegen.generation.generate import generate_batch
from moviegen.generation.loading import PipelineCache, model_revision
from moviegen.models.registry import MODELS, UnknownModelError, resolve_model
from moviegen.spec import GenerationRequest


def request(prompt="a red kite over the sea", seed=3, **kw):
    base = dict(prompt=prompt, negative_prompt="", seed=seed, width=96, height=64, num_frames=9, steps=2, guidance=5.0)
    base.update(kw)
    return GenerationRequest(**base)


def test_tiny_model_round_trips_through_save_and_from_pretrained(tiny_model):
    from diffusers import WanPipeline

    from moviegen.models.tiny import build_tiny_pipeline

    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert list(tiny_model.glob("transformer/*.safetensors")), "weights are saved as safetensors"
    loaded = WanPipeline.from_pretrained(tiny_model, use_safetensors=True)
    fresh = build_tiny_pipeline()  # deterministic weights: the saved model is exactly the built one
    for name in ("transformer", "vae", "text_encoder"):
        saved, built = getattr(loaded, name).state_dict(), getattr(fresh, name).state_dict()
        assert saved.keys() == built.keys()
        assert all(torch.equal(saved[k], built[k]) for k in saved)
    assert loaded.tokenizer("Café 東京").input_ids != loaded.tokenizer("Cafe").input_ids


def test_pipeline_cache_loads_once_per_process(tiny_model, cache_dir):
    cache = PipelineCache()
    ref = resolve_model("tiny-wan")
    device = pick_device("cpu")
    first = cache.get(ref, device, cache_dir)
    assert cache.get(ref, device, cache_dir) is first
    assert cache.loads == {TINY_MODEL_ID: 1}


def test_generation_is_deterministic_and_batching_keeps_each_clip(tiny_model, cache_dir):
    pipe = PipelineCache().get(resolve_model("tiny-wan"), pick_device("cpu"), cache_dir)
    device = pick_device("cpu")
    a, b = request(seed=1), request(prompt="a blue train in the snow", seed=2)
    [single_a] = generate_batch(pipe, [a], device)
    [again_a] = generate_batch(pipe, [a], device)
    batch = generate_batch(pipe, [a, b], device)
    assert single_a.frames.shape == (9, 64, 96, 3) and single_a.frames.dtype == np.uint8
    assert single_a.nan_fraction == 0.0
    assert np.array_equal(single_a.frames, again_a.frames)
    # in a batch each clip keeps its own noise: nearly identical to its solo run, unlike its neighbour
    solo_vs_batch = np.abs(batch[0].frames.astype(int) - single_a.frames).mean()
    neighbours = np.abs(batch[1].frames.astype(int) - single_a.frames).mean()
    assert solo_vs_batch < 1.0 < neighbours
    # frames move: a video, not a still
    assert np.abs(np.diff(single_a.frames.astype(int), axis=0)).mean() > 0.5


def test_batch_must_share_settings(tiny_model, cache_dir):
    pipe = PipelineCache().get(resolve_model("tiny-wan"), pick_device("cpu"), cache_dir)
    with pytest.raises(ValueError, match="share"):
        generate_batch(pipe, [request(), request(num_frames=13)], pick_device("cpu"))


def test_registry_resolves_names_hub_ids_and_folders(tiny_model, tmp_path):
    assert resolve_model("tiny-wan").is_tiny and resolve_model(TINY_MODEL_ID).is_tiny
    wan = resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert wan.info.name == "wan2.1-t2v-1.3b" and wan.info.sizes["16:9"] == (832, 480)
    assert resolve_model("wan2.1-t2v-1.3b").location == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    other = resolve_model("someone/Wan2.1-T2V-14B-finetune")
    assert other.info.family.name == "wan" and other.info.sizes["16:9"] == (1280, 720)
    local = resolve_model(str(tiny_model))
    assert local.info.family.name == "wan" and local.location == str(tiny_model.resolve())
    with pytest.raises(UnknownModelError, match=r"model_index\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UnknownModelError, match="unknown model"):
        resolve_model("stability/some-image-model")


def test_frames_for_duration_follow_the_family_rule():
    tiny = MODELS["tiny-wan"]
    assert tiny.frames_for(3.0) == 49 and tiny.frames_for(1.0) == 17 and tiny.frames_for(2.5) == 41
    assert MODELS["wan2.1-t2v-1.3b"].frames_for(30.0) == 81  # capped: the render loops to length


def test_model_revision_changes_with_the_weights(tiny_model, tmp_path, cache_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    ref = resolve_model(str(copy))
    before = model_revision(ref, cache_dir)
    weights = next(copy.glob("transformer/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_revision(ref, cache_dir) != before


def test_offline_hub_model_fails_with_advice(cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"hub is offline.*download it first"):
        PipelineCache().get(resolve_model("wan2.1-t2v-1.3b"), pick_device("cpu"), cache_dir)


def test_pickle_weights_are_refused_unless_allowed(tiny_model, tmp_path, cache_dir):
    import shutil

    from diffusers import AutoencoderKLWan

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    vae = AutoencoderKLWan.from_pretrained(folder / "vae")
    for f in (folder / "vae").glob("*.safetensors"):
        f.unlink()
    vae.save_pretrained(folder / "vae", safe_serialization=False)
    ref = resolve_model(str(folder))
    with pytest.raises(ModelLoadError, match=r"pickle weights \(vae/diffusion_pytorch_model.bin\)"):
        PipelineCache().get(ref, pick_device("cpu"), cache_dir)
    assert PipelineCache().get(ref, pick_device("cpu"), cache_dir, allow_pickle=True) is not None


def test_device_is_chosen_at_run_time(monkeypatch):
    # What this machine's torch reports decides the device, and the device decides the dtype.
    here = pick_device()
    assert here.name == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert (pick_device().name, pick_device().dtype_name) == ("cuda", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_device().dtype_name == "float16"  # older GPUs: half precision without bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (pick_device().name, pick_device().dtype_name) == ("cpu", "float32")
    assert pick_device("cpu", "bfloat16").dtype == torch.bfloat16


def test_half_precision_loads_keep_the_vae_in_float32(tiny_model, cache_dir):
    """Wan's VAE is numerically fragile in half precision (its family says): it loads in float32, the rest bf16."""
    from moviegen.generation.loading import load_pipeline

    pipe = load_pipeline(resolve_model(str(tiny_model)), pick_device("cpu", "bfloat16"), cache_dir)
    assert (pipe.transformer.dtype, pipe.vae.dtype) == (torch.bfloat16, torch.float32)
    assert pipe.text_encoder.dtype == torch.bfloat16
