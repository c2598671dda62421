"""Model loading: safetensors only by default; pickle weights only with generation.allow_pickle."""

from __future__ import annotations

import pytest

from moviegen.config import load_settings
from moviegen.generation.device import ModelLoadError, pick_device
from moviegen.generation.loading import PipelineCache
from moviegen.models.registry import resolve_model


@pytest.fixture(scope="module")
def pickled_model(tiny_model, tmp_path_factory):
    """The tiny Wan pipeline saved again with save_pretrained(safe_serialization=False)."""
    from diffusers import WanPipeline

    folder = tmp_path_factory.mktemp("pickled") / "tiny-wan-pickle"
    WanPipeline.from_pretrained(tiny_model, use_safetensors=True).save_pretrained(folder, safe_serialization=False)
    # diffusers' models (transformer, VAE) are now pickles; transformers 5 always writes safetensors.
    for part in ("transformer", "vae"):
        assert [p.name for p in (folder / part).glob("*.bin")] and not list((folder / part).glob("*.safetensors"))
    return folder


def test_pickle_weights_are_refused_by_default(pickled_model, cache_dir):
    settings = load_settings(None)
    assert settings.generation.allow_pickle is False
    with pytest.raises(ModelLoadError) as info:
        PipelineCache().get(resolve_model(str(pickled_model)), pick_device("cpu"), cache_dir)
    message = str(info.value)
    assert "pickle weights" in message and "can run code" in message
    assert "diffusion_pytorch_model.bin" in message and "generation.allow_pickle: true" in message


def test_pickle_weights_load_when_explicitly_allowed(pickled_model, tiny_model, cache_dir, monkeypatch):
    monkeypatch.setenv("MOVIEGEN_GENERATION__ALLOW_PICKLE", "true")
    settings = load_settings(None)
    cache = PipelineCache()
    pipe = cache.get(resolve_model(str(pickled_model)), pick_device("cpu"), cache_dir, settings.generation.allow_pickle)
    assert type(pipe).__name__ == "WanPipeline" and cache.loads[str(pickled_model.resolve())] == 1
    # The safetensors original still loads with the default (no pickle needed).
    assert PipelineCache().get(resolve_model(str(tiny_model)), pick_device("cpu"), cache_dir) is not None
