"""GPU efficiency options: each applies where it can; on this CPU offload and compile are skipped with a
note, VAE tiling and First Block Cache run for real."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from moviegen.config import ConfigError, load_settings
from moviegen.generation.device import pick_device
from moviegen.generation.generate import generate_batch
from moviegen.generation.loading import PipelineCache
from moviegen.generation.options import PipelineOptions
from moviegen.models.registry import resolve_model
from moviegen.spec import GenerationRequest

CPU = pick_device("cpu")


def clip(pipe, steps=2, **kw):
    request = GenerationRequest("a red kite over the sea", "", 3, 96, 64, 9, steps, 5.0, **kw)
    return generate_batch(pipe, [request], CPU)[0].frames.astype(int)


def test_offload_and_compile_are_skipped_on_the_cpu_with_a_note(cache_dir, tiny_model, caplog):
    cache = PipelineCache()
    options = PipelineOptions(offload="group", compile=True)
    with caplog.at_level(logging.WARNING, logger="moviegen.generation.options"):
        pipe = cache.get(resolve_model("tiny-wan"), CPU, cache_dir, options=options)
    assert any("offload=group applies to CUDA only" in n for n in cache.notes)
    assert any("compile applies to CUDA only" in n for n in cache.notes)
    assert "CUDA only" in caplog.text
    assert pipe.device.type == "cpu" and not getattr(pipe, "_all_hooks", None)  # no offload hooks were set
    assert clip(pipe).shape == (9, 64, 96, 3)


def test_vae_tiling_decodes_in_tiles_and_keeps_the_picture(cache_dir, tiny_model):
    plain = PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir)
    tiled = PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir, options=PipelineOptions(vae_tiling=True))
    assert tiled.vae.use_tiling and not plain.vae.use_tiling
    # Tiles smaller than the frame, so the tiled path really runs at this tiny size.
    tiled.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                            tile_sample_stride_width=16)  # fmt: skip
    a, b = clip(plain), clip(tiled)
    assert a.shape == b.shape
    assert 0 < np.abs(a - b).mean() < 20  # blended seams: close to, not the same as, the whole-frame decode


def test_first_block_cache_reuses_steps_only_above_its_threshold(cache_dir, tiny_model, real_clip):
    ref = resolve_model("tiny-wan")
    plain = clip(PipelineCache().get(ref, CPU, cache_dir), steps=6)
    exact = PipelineCache().get(ref, CPU, cache_dir, options=PipelineOptions(cache="first_block", cache_threshold=1e-9))
    assert exact.transformer.is_cache_enabled
    assert np.array_equal(clip(exact, steps=6), plain)  # nothing is close enough to reuse: same pixels
    loose = PipelineCache().get(ref, CPU, cache_dir, options=PipelineOptions(cache="first_block", cache_threshold=1.0))
    assert not np.array_equal(clip(loose, steps=6), plain)  # steps were reused: an approximation
    # WanVideoToVideoPipeline marks no cache contexts: it runs with the cache paused, and gets it back after.
    cache = PipelineCache()
    options = PipelineOptions(cache="first_block", cache_threshold=1.0)
    v2v = cache.get(ref, CPU, cache_dir, task="v2v", options=options)
    edit = dict(task="v2v", source_sha256="c", source_path=str(real_clip), strength=0.6, fps=16)
    assert clip(v2v, **edit).shape == (9, 64, 96, 3)
    assert v2v.transformer.is_cache_enabled


def test_pixel_changing_options_are_part_of_the_clip_key():
    assert PipelineOptions(offload="model", compile=True).identity() == ()
    assert PipelineOptions(cache="first_block", vae_tiling=True).identity() == (
        ("cache", "first_block:0.05"),
        ("vae_tiling", "on"),
    )


def test_options_are_configured_and_checked(tmp_path):
    config = tmp_path / "gpu.yaml"
    config.write_text("generation:\n  dtype: bfloat16\n  offload: group\n  vae_tiling: true\n  cache: first_block\n")
    settings = load_settings(config)
    assert PipelineOptions.from_settings(settings.generation) == PipelineOptions("group", True, False, "first_block")
    config.write_text("generation:\n  offload: disk\n")
    with pytest.raises(ConfigError, match=r"generation\.offload"):
        load_settings(config)
