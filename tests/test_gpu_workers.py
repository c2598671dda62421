"""GPU workers for real (issue 15), proven on the CPU with the tiny models' real pipelines.

- An out-of-memory error raised inside the transformer's forward, after it allocated a large
  tensor, leaves nothing referring to that tensor when the retry starts.
- Group offload hooks on a derived pipeline (video-to-video over the loaded text-to-video weights).
- The tiny Wan build's rotary embedding covers every frame count the registry allows.
- ``batch_size: auto``, ``deterministic``, distilled registry entries, step caches, LoRA adapters.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref

import numpy as np
import pytest
import torch
from conftest import fast_settings, row

from moviegen.catalog.check import validate_catalog
from moviegen.catalog.schema import read_catalog
from moviegen.config import ConfigError, GenerationSettings, load_settings
from moviegen.generation.device import Device, pick_device, use_deterministic_algorithms
from moviegen.generation.generate import AUTO_TINY_BATCH, batch_size_for, frames_per_call_limit, generate_batch
from moviegen.generation.loading import PipelineCache
from moviegen.generation.options import PipelineOptions, _offload, offload_derived
from moviegen.generation.resilient import generate_resilient
from moviegen.models.registry import MODELS, resolve_model
from moviegen.presets import channel_presets, styles
from moviegen.run.context import start_run
from moviegen.run.planning import plan_clip
from moviegen.spec import GenerationRequest

CPU = pick_device("cpu")


def request(prompt: str = "a red kite over the sea", seed: int = 3, frames: int = 9, **kw) -> GenerationRequest:
    return GenerationRequest(prompt, "", seed, 96, 64, frames, kw.pop("steps", 2), kw.pop("guidance", 5.0), **kw)


@pytest.fixture(scope="module")
def wan(cache_dir, tiny_model):
    return PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir)


# 1. The out-of-memory fall-back frees what the failed call held ---------------------------------


def test_a_failed_calls_tensors_are_freed_before_the_retry(wan, monkeypatch):
    """A real torch.OutOfMemoryError from inside the transformer's forward, after it allocated 64 MiB
    (a memory cap where one clip fits and two do not): the batch of two is split and both clips are
    made, and the failed call's tensor is gone (weakref dead) when the first retry starts."""
    transformer = type(wan.transformer)
    real_forward = transformer.forward
    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def forward(self, hidden_states, *args, **kwargs):
        batch = hidden_states.shape[0]
        if batch > 1:  # more than one clip in this call (Wan runs its CFG passes one after the other)
            scratch = torch.empty(16 * 2**20, dtype=torch.float32)  # 64 MiB "activations" of the failed call
            held.append(weakref.ref(scratch))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (cap: one clip fits)")
        if held and not alive_at_retry:
            gc.collect()
            alive_at_retry.append(held[0]() is not None)
        return real_forward(self, hidden_states, *args, **kwargs)

    expected = [generate_batch(wan, [request(seed=seed)], CPU)[0].frames for seed in (1, 2)]
    monkeypatch.setattr(transformer, "forward", forward)
    notes: list[str] = []
    clips = generate_resilient(wan, [request(seed=1), request(seed=2)], CPU, notes=notes)
    assert notes == ["out of memory with 2 clips in one call: split into 1 + 1"]
    assert alive_at_retry == [False], "the failed call's tensor was still referenced when the retry started"
    assert all(np.array_equal(c.frames, e) for c, e in zip(clips, expected, strict=True))


def test_the_kept_error_carries_no_traceback(wan, monkeypatch):
    """A clip that fits in no way gets its error back without the frames (and tensors) of the call."""

    def always(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(type(wan.transformer), "forward", always)
    notes: list[str] = []
    [error] = generate_resilient(wan, [request()], CPU, notes=notes)
    assert isinstance(error, torch.OutOfMemoryError)
    assert error.__traceback__ is None
    assert notes == ["out of memory with one clip: VAE tiling (frames decoded in overlapping tiles)"]


def test_a_rejected_clip_says_what_was_tried(tmp_path, catalog_file, monkeypatch, tiny_model):
    from moviegen.run.plain import run_campaign_plain

    def always(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(type(PipelineCache().get(resolve_model("tiny-wan"), CPU, tmp_path).transformer),
                        "forward", always)  # fmt: skip
    catalog = catalog_file([row("heavy", channels=["x"])])
    summary = run_campaign_plain(str(catalog), fast_settings(tmp_path / "out", render_workers=1))
    [problem] = summary.problems
    assert problem.rule == "out_of_memory"
    assert "tried: out of memory with one clip: VAE tiling" in problem.message
    assert problem.details["fallbacks"] == [
        "out of memory with one clip: VAE tiling (frames decoded in overlapping tiles)"
    ]


# 2. Group offload on derived pipelines ----------------------------------------------------------


def test_group_offload_hooks_are_not_set_twice_on_shared_modules(cache_dir, tiny_model):
    """The CUDA path's hooks, exercised on the CPU (onload and offload device both the CPU): the derived
    video-to-video pipeline shares the loaded modules, which already carry group offload hooks."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    base = PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir)
    base = type(base)(**base.components)  # a private copy: the hooks must not reach other tests' pipelines
    _offload(base, CPU, "group")
    assert _is_group_offload_enabled(base.transformer)
    import diffusers

    shared = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")
    derived = diffusers.WanVideoToVideoPipeline(**{k: v for k, v in base.components.items() if k in shared})
    from diffusers.hooks.group_offloading import _get_top_level_group_offload_hook

    hooks = {name: _get_top_level_group_offload_hook(m) for name, m in derived.components.items() if hasattr(m, "to")}
    # On CUDA, setting them again raised "Hook with name lazy_prefetch_group_offloading already exists"
    # (prefetching streams); the derived pipeline now keeps the hooks its modules have.
    offload_derived(derived, CPU, "group")
    assert {n: _get_top_level_group_offload_hook(m) for n, m in derived.components.items() if hasattr(m, "to")} == hooks
    assert all(_is_group_offload_enabled(m) for m in (derived.transformer, derived.vae, derived.text_encoder))


# 3. Frames per call ----------------------------------------------------------------------------


def test_every_tiny_wan_entry_fits_its_builds_rotary_embedding(cache_dir, tiny_model):
    for name in ("tiny-wan", "tiny-wan-i2v", "tiny-wan-4step"):
        ref = resolve_model(name)
        pipe = PipelineCache().get(ref, CPU, cache_dir, task=next(iter(ref.info.tasks)))
        limit = frames_per_call_limit(pipe)
        assert limit is not None and MODELS[name].max_frames <= limit, (name, limit)
    assert MODELS["tiny-wan"].max_frames == MODELS["wan2.1-t2v-1.3b"].max_frames == 81  # Wan 2.1's trained length


def test_v1s_rope_limit_is_refused_with_a_clear_message_and_v2_makes_129_frames(wan, monkeypatch):
    # 129 frames (33 latent frames) broke tiny-wan v1, whose rope_max_seq_len was 32.
    clip = generate_batch(wan, [GenerationRequest("a kite", "", 1, 32, 32, 129, 1, 1.0)], CPU)[0]
    assert clip.frames.shape[0] == 129
    from diffusers.configuration_utils import FrozenDict

    v1 = FrozenDict({**wan.transformer.config, "rope_max_seq_len": 32})
    monkeypatch.setattr(wan.transformer, "_internal_dict", v1)
    assert frames_per_call_limit(wan) == 125
    with pytest.raises(ValueError, match="at most 125 frames per call"):
        generate_batch(wan, [GenerationRequest("a kite", "", 1, 32, 32, 129, 1, 1.0)], CPU)


# 4. Clips per call ----------------------------------------------------------------------------


def test_batch_size_auto_is_resolved_for_the_device_and_the_model():
    tiny, full = resolve_model("tiny-wan"), resolve_model("wan2.1-t2v-1.3b")
    cuda = Device("cuda", "bfloat16")
    auto = GenerationSettings()
    assert auto.batch_size == "auto"
    assert batch_size_for(auto, cuda, full) == 1  # batching bought nothing on an H200 and cost 1.7x the memory
    assert batch_size_for(auto, CPU, full) == 1
    assert batch_size_for(auto, CPU, tiny) == batch_size_for(auto, cuda, tiny) == AUTO_TINY_BATCH
    assert batch_size_for(GenerationSettings(batch_size=3), cuda, full) == 3  # a number overrides
    assert batch_size_for(GenerationSettings(batch_size=3, deterministic=True), CPU, tiny) == 1


def test_generation_settings_refuse_unknown_keys_and_check_their_values(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("generation:\n  batchsize: 2\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_settings(config)
    config.write_text("generation:\n  cache: taylorseer\n  cache_options: {cache_intervall: 2}\n")
    with pytest.raises(ConfigError, match="cache_intervall"):
        load_settings(config)
    config.write_text("generation:\n  attention_backend: turbo\n")
    with pytest.raises(ConfigError, match="unknown attention backend"):
        load_settings(config)
    monkeypatch.setenv("MOVIEGEN_GENERATION__BATCH_SIZE", "2")
    assert load_settings().generation.batch_size == 2


def test_deterministic_asks_torch_for_deterministic_kernels():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic_algorithms(CPU)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


# 5. Few-step entries, step caches, attention backends -----------------------------------------


def test_a_distilled_entry_samples_with_its_own_shift_on_shared_weights(cache_dir, tiny_model, tmp_path):
    cache = PipelineCache()
    base = cache.get(resolve_model("tiny-wan"), CPU, cache_dir)
    fast = cache.get(resolve_model("tiny-wan-4step"), CPU, cache_dir)
    assert cache.loads[resolve_model("tiny-wan").location] == 1  # one load for both entries
    assert fast.transformer is base.transformer
    assert fast.scheduler.config.shift == 5.0 and base.scheduler.config.shift == 3.0
    info = MODELS["tiny-wan-4step"]
    assert (info.steps, info.guidance) == (4, 1.0)
    a = generate_batch(base, [request(steps=4, guidance=1.0)], CPU)[0].frames
    b = generate_batch(fast, [request(steps=4, guidance=1.0)], CPU)[0].frames
    assert not np.array_equal(a, b)  # the shift changes the sampling, so it is part of the clip_key
    settings = fast_settings(tmp_path / "out")
    ctx = start_run(settings)
    spec = validate_catalog(
        read_catalog(_catalog(tmp_path, [row("a", model="tiny-wan", steps=4, guidance=1.0),
                                          row("b", model="tiny-wan-4step", steps=4, guidance=1.0)])),
        channels=channel_presets(settings.channels), styles=styles(settings.styles), default_model="tiny-wan",
    ).specs  # fmt: skip
    keys = {plan_clip(s, ctx).clip_key for s in spec}
    assert len(keys) == 2


@pytest.mark.parametrize(
    "cache, options",
    [
        ("taylorseer", {"cache_interval": 2, "disable_cache_before_step": 1, "taylor_factors_dtype": None}),
        ("mag", {"mag_ratios": (1.0,) * 6, "max_skip_steps": 2}),
        ("faster", {}),
    ],
)
def test_step_caches_run_on_the_tiny_model_and_approximate(cache_dir, tiny_model, cache, options):
    ref = resolve_model("tiny-wan")
    plain = generate_batch(PipelineCache().get(ref, CPU, cache_dir), [request(steps=6)], CPU)[0].frames
    opts = PipelineOptions(cache=cache, cache_threshold=1.0, cache_options=tuple(sorted(options.items())))
    pipe = PipelineCache().get(ref, CPU, cache_dir, options=opts)
    cached = generate_batch(pipe, [request(steps=6)], CPU)[0].frames
    assert cached.shape == plain.shape
    assert not np.array_equal(cached, plain)  # outputs were reused: an approximation
    assert opts.identity()[0][0] == "cache" and cache in opts.identity()[0][1]
    again = generate_batch(pipe, [request(steps=4)], CPU)[0].frames  # MagCache is set again for 4 steps
    assert again.shape == plain.shape


def test_an_attention_backend_is_set_on_the_transformer(cache_dir, tiny_model):
    ref = resolve_model("tiny-wan")
    plain = generate_batch(PipelineCache().get(ref, CPU, cache_dir), [request()], CPU)[0].frames
    pipe = PipelineCache().get(ref, CPU, cache_dir, options=PipelineOptions(attention_backend="_native_math"))
    math = generate_batch(pipe, [request()], CPU)[0].frames
    assert PipelineOptions(attention_backend="_native_math").identity() == ()  # speed only: not in the clip_key
    assert np.abs(math.astype(int) - plain.astype(int)).max() <= 2


def test_float8_is_skipped_on_the_cpu_with_a_note(cache_dir, tiny_model):
    cache = PipelineCache()
    cache.get(resolve_model("tiny-wan"), CPU, cache_dir, options=PipelineOptions(quantize="float8"))
    assert any("quantize=float8 applies to CUDA only" in n for n in cache.notes)
    assert PipelineOptions(quantize="float8").identity() == (("quantize", "float8"),)


# 6. LoRA adapters ------------------------------------------------------------------------------


def write_random_lora(wan, path, seed: int = 0, rank: int = 4) -> None:
    """A random LoRA for the tiny Wan transformer's attention, saved as safetensors with diffusers' saver."""
    from diffusers import WanPipeline
    from safetensors.torch import save_file

    transformer = wan.transformer
    state = {}
    generator = torch.Generator().manual_seed(seed)
    for name, module in transformer.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v")) and isinstance(module, torch.nn.Linear):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator)
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator)
    assert state
    save_file(state, str(path))
    assert hasattr(WanPipeline, "load_lora_weights")


def _catalog(tmp_path, rows) -> str:
    from moviegen.catalog.schema import write_catalog

    path = tmp_path / f"catalog-{len(list(tmp_path.glob('catalog-*')))}.parquet"
    write_catalog(rows, str(path))
    return str(path)


def test_a_lora_changes_its_rows_pixels_and_key_and_no_other_rows(wan, cache_dir, tmp_path):
    from moviegen.spec import LoraAdapter
    from moviegen.store import sha256_file

    lora = tmp_path / "style.safetensors"
    write_random_lora(wan, lora)
    adapter = LoraAdapter(sha256_file(lora), 1.0, str(lora), str(lora))
    cache = PipelineCache()
    plain_pipe = cache.get(resolve_model("tiny-wan"), CPU, cache_dir)
    before = generate_batch(plain_pipe, [request()], CPU)[0].frames
    styled_pipe = cache.get(resolve_model("tiny-wan"), CPU, cache_dir, loras=(adapter,))
    assert styled_pipe is not plain_pipe and styled_pipe.transformer is not plain_pipe.transformer
    styled = generate_batch(styled_pipe, [request()], CPU)[0].frames
    assert not np.array_equal(styled, before)  # the adapter changed the pixels
    after = generate_batch(plain_pipe, [request()], CPU)[0].frames
    assert np.array_equal(after, before)  # a row without it keeps its pixels
    half = cache.get(resolve_model("tiny-wan"), CPU, cache_dir, loras=(LoraAdapter(adapter.sha256, 0.0, str(lora)),))
    assert np.array_equal(generate_batch(half, [request()], CPU)[0].frames, before)  # scale 0: no change

    settings = fast_settings(tmp_path / "out")
    ctx = start_run(settings)
    validation = validate_catalog(
        read_catalog(_catalog(tmp_path, [row("plain"), row("styled", loras=[{"uri": str(lora), "scale": 0.8}])])),
        channels=channel_presets(settings.channels), styles=styles(settings.styles), default_model="tiny-wan",
    )  # fmt: skip
    assert not validation.problems
    plain_plan, styled_plan = (plan_clip(s, ctx) for s in validation.specs)
    assert not plain_plan.loras and styled_plan.loras[0].scale == 0.8
    assert styled_plan.loras_record() == [{"name": "style.safetensors", "sha256": adapter.sha256, "scale": 0.8}]
    unstyled = plan_clip(dataclasses.replace(validation.specs[1], loras=()), ctx)
    assert unstyled.clip_key != styled_plan.clip_key  # the adapter is part of the clip_key
    assert unstyled.batch_key != styled_plan.batch_key  # and never shares a call with rows without it


def test_bad_lora_values_are_row_errors(tmp_path):
    pickle = tmp_path / "adapter.bin"
    pickle.write_bytes(b"not safetensors")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 32)
    rows = [
        row("pickled", loras=[{"uri": str(pickle), "scale": 1.0}]),
        row("scaled", loras=[{"uri": str(fake), "scale": 9.0}]),
        row("missing", loras=[{"uri": str(tmp_path / "nope.safetensors"), "scale": 1.0}]),
    ]
    settings = fast_settings(tmp_path / "out")
    validation = validate_catalog(
        read_catalog(_catalog(tmp_path, rows)),
        channels=channel_presets(settings.channels), styles=styles(settings.styles), default_model="tiny-wan",
    )  # fmt: skip
    messages = {p.clip_id: (p.column, p.message) for p in validation.problems}
    assert messages["pickled"][0] == "loras" and ".safetensors" in messages["pickled"][1]
    assert "loras[0].scale 9 is outside" in messages["scaled"][1]
    assert "does not exist" in messages["missing"][1]
    # A file named .safetensors that is not one is refused when it is fetched, before any GPU time.
    from moviegen.assets import AssetError, fetch_asset

    with pytest.raises(AssetError, match="not a safetensors file"):
        fetch_asset(str(fake), "lora", tmp_path / "assets")


MINI = {"mini": {"label": "Mini", "width": 320, "height": 180, "fps": 15, "max_duration_s": 60}}


@pytest.mark.slow
def test_a_campaign_with_a_lora_and_rows_past_the_models_clip_length(wan, tmp_path):
    """One real campaign: a LoRA row is recorded in manifest, sidecar and C2PA manifest next to the model;
    rows of 10 s and 15 s publish on the default model (its 81-frame clip looped or held, as ``extend`` says)."""
    from moviegen.media import probe
    from moviegen.provenance import read_credentials
    from moviegen.run.plain import run_campaign_plain
    from moviegen.store import MANIFEST_SCHEMA, OutputRoot

    lora = tmp_path / "brand-look.safetensors"
    write_random_lora(wan, lora, seed=1)
    rows = [
        row("plain", channels=["mini"]),
        row("styled", channels=["mini"], loras=[{"uri": str(lora), "scale": None}]),
        row("ten", channels=["mini"], duration_s=10.0, extend="loop"),  # continuing: tests/test_continuation.py
        row("fifteen", channels=["mini"], duration_s=15.0, extend="hold"),
    ]
    out = tmp_path / "out"
    summary = run_campaign_plain(_catalog(tmp_path, rows), fast_settings(out, render_workers=1, channels=MINI))
    assert summary.exit_code == 0, summary.problems
    manifest = {r["clip_id"]: r for r in OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()}
    assert manifest["plain"]["loras"] is None
    [recorded] = json.loads(manifest["styled"]["loras"])
    assert recorded["name"] == "brand-look.safetensors" and recorded["scale"] == 1.0 and len(recorded["sha256"]) == 64
    sidecar = json.loads((out / "published/mini/test-camp/styled.json").read_text())
    assert sidecar["loras"] == [recorded] and sidecar["model"] == manifest["styled"]["model"]
    assert read_credentials(out / "published/mini/test-camp/styled.mp4")["loras"] == [recorded]
    for clip_id, seconds in (("ten", 10.0), ("fifteen", 15.0)):
        assert manifest[clip_id]["duration_s"] == pytest.approx(seconds, abs=0.07)
        assert probe(out / f"published/mini/test-camp/{clip_id}.mp4").frames == round(seconds * 15)


# 7. On a CUDA machine (skipped on the CPU, saying why) --------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (offload hooks are CUDA-only)")


@needs_cuda
@pytest.mark.slow
def test_group_offload_runs_t2v_i2v_and_v2v_rows_on_cuda(tmp_path, photo, real_clip):
    from moviegen.config import Settings
    from moviegen.run.plain import run_campaign_plain

    rows = [
        row("t2v", channels=["mini"]),
        row("i2v", channels=["mini"], reference_image=str(photo)),
        row("v2v", channels=["mini"], source_video=str(real_clip)),
        row("ltx-i2v", channels=["mini"], model="tiny-ltx", reference_image=str(photo)),
    ]
    settings = Settings(
        out=str(tmp_path / "out"),
        generation=GenerationSettings(steps=2, offload="group", device="cuda"),
        watermark_gate="recorded",
        render_workers=1,
        channels=MINI,
    )
    summary = run_campaign_plain(_catalog(tmp_path, rows), settings)
    assert summary.exit_code == 0, summary.problems
    assert sorted(r["clip_id"] for r in summary.published) == ["i2v", "ltx-i2v", "t2v", "v2v"]


@needs_cuda
def test_under_a_memory_cap_the_fall_back_returns_to_the_models_own_memory(cache_dir, tiny_model):
    """One clip fits and two do not: every clip is made, and what stays allocated is the model's own."""
    device = pick_device("cuda")
    pipe = PipelineCache().get(resolve_model("tiny-wan"), device, cache_dir)
    torch.cuda.synchronize()
    model_bytes = torch.cuda.memory_allocated()
    big = [GenerationRequest("a kite", "", s, 480, 272, 81, 2, 5.0) for s in (1, 2)]
    torch.cuda.reset_peak_memory_stats()
    generate_batch(pipe, big[:1], device)
    one_clip = torch.cuda.max_memory_allocated() - model_bytes
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (model_bytes + 1.5 * one_clip) / total))
    try:
        notes: list[str] = []
        clips = generate_resilient(pipe, big, device, notes=notes)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert all(not isinstance(c, BaseException) for c in clips), notes
    gc.collect()
    assert torch.cuda.memory_allocated() <= model_bytes * 1.05 + 64 * 2**20
