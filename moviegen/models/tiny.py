"""The built-in tiny models: random-weight pipelines of the real architectures, built offline.

Each is saved with ``save_pretrained`` and loaded back with ``from_pretrained`` exactly like a real
model, so demos and tests exercise the real loading and generation code. Their weights are random:
the video models make abstract moving colour, the audio model makes noise, and the CLIP scorer's
numbers mean nothing, but every shape, dtype, tokenizer and config path is the real one.
Over 500 lines on purpose: one builder per tiny model, side by side with the few shape helpers they
share, so a new family's build reads like its neighbours'.

    tiny-wan           WanPipeline               text-to-video (and video-to-video on the same weights)
    tiny-wan-i2v       WanImageToVideoPipeline   image-to-video, with a CLIP vision encoder
    tiny-ltx           LTXPipeline               text- and image-to-video (LTX-Video's 32x spatial, 8x temporal VAE)
    tiny-cogvideox     CogVideoXPipeline         text-to-video (and video-to-video on the same weights)
    tiny-cogvideox-i2v CogVideoXImageToVideoPipeline  image-to-video (the image's latents beside the noise's)
    tiny-stable-audio  StableAudioPipeline       text-to-audio, 44.1 kHz stereo, up to about 6 s
    tiny-clip          CLIPModel + CLIPProcessor prompt-adherence scorer (a real byte-level BPE CLIP tokenizer)
    tiny-llama-guard   LlamaForCausalLM + chat template: a generative prompt moderator ("safe" / "unsafe\nS1")
    tiny-shieldgemma   Gemma2ForCausalLM: a classifier prompt moderator (probability of "Yes")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Bump a build's version when its architecture changes: the folder name (and so every clip_key) changes with it.
# v2 of both Wan builds: rope_max_seq_len 1024 as in the real Wan 2.1 (v1's 32 ran out of positions past
# 125 frames); the weights are the same, the clip_keys of the default model changed once.
TINY_BUILD = "tiny-wan-v2"
TINY_BUILDS: dict[str, str] = {
    "tiny-wan": TINY_BUILD,
    "tiny-wan-i2v": "tiny-wan-i2v-v2",
    "tiny-ltx": "tiny-ltx-v1",
    "tiny-cogvideox": "tiny-cogvideox-v1",
    "tiny-cogvideox-i2v": "tiny-cogvideox-i2v-v1",
    "tiny-stable-audio": "tiny-stable-audio-v1",
    "tiny-clip": "tiny-clip-v1",
    "tiny-llama-guard": "tiny-llama-guard-v1",
    "tiny-shieldgemma": "tiny-shieldgemma-v1",
}


# How a tiny build is named wherever a model location is accepted (``moviegen/tiny-wan``, ...).
TINY_PREFIX = "moviegen/tiny-"


def local_location(location: str, cache_dir: Path) -> str:
    """What ``from_pretrained`` is given for a model location: a tiny build's folder (built on first
    use), or the location itself (a hub id or a local folder)."""
    if location.startswith(TINY_PREFIX):
        return str(ensure_tiny_model(cache_dir, location.removeprefix("moviegen/")))
    return location


def tiny_model_dir(cache_dir: Path, name: str = "tiny-wan") -> Path:
    """The folder a tiny model is saved in under the cache directory."""
    return Path(cache_dir) / "models" / TINY_BUILDS[name]


def ensure_tiny_model(cache_dir: Path, name: str = "tiny-wan") -> Path:
    """Build and save a tiny model on first use; return its folder. Safe across processes."""
    if name not in TINY_BUILDS:
        raise ValueError(f"no tiny model {name!r}: use one of {', '.join(sorted(TINY_BUILDS))}")
    target = tiny_model_dir(cache_dir, name)
    if (target / "model_index.json").is_file() or (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        for part in _BUILDERS[name]():
            part.save_pretrained(staging)
        try:
            os.rename(staging, target)  # atomic: a concurrent builder's identical copy may have won
        except OSError:
            if not any((target / f).is_file() for f in ("model_index.json", "config.json")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_pipeline():  # -> diffusers.WanPipeline
    """Build the tiny random-weight WanPipeline in memory (deterministic weights)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    with _seeded():
        transformer = _wan_transformer(in_channels=16)
        vae = _wan_vae()
        tokenizer = _byte_tokenizer()
        text_encoder = _t5(tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )


def build_tiny_wan_i2v():  # -> diffusers.WanImageToVideoPipeline
    """Wan 2.1 image-to-video: the transformer takes 36 channels (noise, mask, encoded first frame) and
    CLIP image embeddings through its added key/value projections, as Wan2.1-I2V does."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    with _seeded():
        transformer = _wan_transformer(in_channels=36, image_dim=24, added_kv_proj_dim=24)
        vae = _wan_vae()
        tokenizer = _byte_tokenizer()
        text_encoder = _t5(tokenizer)
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=24,
                projection_dim=24,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=37,
                image_size=32,
                patch_size=8,
            )
        )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )


def build_tiny_ltx():  # -> diffusers.LTXPipeline
    """LTX-Video with the real compression (32x spatial, 8x temporal: frames 8k+1, sizes multiple of 32)."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    with _seeded():
        transformer = LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            num_layers=2,
            caption_channels=32,
        )
        vae = AutoencoderKLLTXVideo(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            patch_size=4,
            patch_size_t=1,
        )
        tokenizer = _byte_tokenizer()
        text_encoder = _t5(tokenizer)
    # LTX-Video's own scheduler settings (resolution-dependent shift).
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return LTXPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


def build_tiny_cogvideox(image_to_video: bool = False):  # -> diffusers.CogVideoXPipeline (or ...ImageToVideo...)
    """CogVideoX-2b's layout (8x spatial, 4x temporal VAE, 2x2 patches, sin-cos positions, 226 text tokens).

    ``image_to_video``: CogVideoX-5b-I2V's way of conditioning: the image's latents are concatenated
    to the noise's on the channel axis, so the transformer takes twice the latent channels in.
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    with _seeded():
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=8 if image_to_video else 4,
            out_channels=4,
            time_embed_dim=8,
            text_embed_dim=32,
            num_layers=2,
            sample_width=90,
            sample_height=60,
            sample_frames=49,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=226,
        )
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2
        )
        tokenizer = _byte_tokenizer()
        text_encoder = _t5(tokenizer)
    scheduler = CogVideoXDDIMScheduler(
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        snr_shift_scale=3.0,
    )
    pipeline = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return pipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def build_tiny_stable_audio():  # -> diffusers.StableAudioPipeline
    """Stable Audio Open's layout: T5 text encoder, seconds conditioning, DiT, Oobleck VAE at 44.1 kHz stereo.

    512 latent steps x a hop of 512 samples: at most about 5.9 s per call (the real model: 47 s).
    """
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    with _seeded():
        tokenizer = _byte_tokenizer()
        text_encoder = _t5(tokenizer)
        vae = AutoencoderOobleck(
            encoder_hidden_size=6,
            downsampling_ratios=[2, 4, 8, 8],
            channel_multiples=[1, 2, 2, 2],
            decoder_channels=6,
            decoder_input_channels=8,
            audio_channels=2,
            sampling_rate=44100,
        )
        projection = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=16, min_value=0, max_value=512)
        transformer = StableAudioDiTModel(
            sample_size=512,
            in_channels=8,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            num_key_value_attention_heads=1,
            out_channels=8,
            cross_attention_dim=16,
            time_proj_dim=8,
            global_states_input_dim=32,
            cross_attention_input_dim=16,
        )
    scheduler = CosineDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
    )
    return StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )


def build_tiny_clip() -> tuple[Any, Any]:  # -> (transformers.CLIPModel, transformers.CLIPProcessor)
    """A CLIP model and processor: the real CLIPTokenizer class over a byte-level BPE vocabulary made here."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({f"{ch}</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("i", "n"), ("o", "n</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    special = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id}
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "pad_token_id": tokenizer.pad_token_id,
            **special,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with _seeded():
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


_BUILDERS: dict[str, Callable[[], Any]] = {
    "tiny-wan": lambda: [build_tiny_pipeline()],
    "tiny-wan-i2v": lambda: [build_tiny_wan_i2v()],
    "tiny-ltx": lambda: [build_tiny_ltx()],
    "tiny-cogvideox": lambda: [build_tiny_cogvideox()],
    "tiny-cogvideox-i2v": lambda: [build_tiny_cogvideox(image_to_video=True)],
    "tiny-stable-audio": lambda: [build_tiny_stable_audio()],
    "tiny-clip": lambda: list(build_tiny_clip()),
}


class _seeded:
    """Deterministic weights without touching the caller's random state."""

    def __enter__(self) -> None:
        import torch

        self._rng = torch.random.fork_rng(devices=[])
        self._rng.__enter__()
        torch.manual_seed(0)

    def __exit__(self, *exc: object) -> None:
        self._rng.__exit__(*exc)


def _wan_transformer(in_channels: int, image_dim: int | None = None, added_kv_proj_dim: int | None = None):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,  # Wan 2.1's own: positions for up to 4093 frames and 2048 pixels a side
        image_dim=image_dim,
        added_kv_proj_dim=added_kv_proj_dim,
    )


def _wan_vae():
    from diffusers import AutoencoderKLWan

    # base_dim=3 is the fastest decoder on a CPU (wider ones take 2-4x longer per frame).
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def _t5(tokenizer: Any, **shape: Any):
    """A 2-layer T5 encoder over ``tokenizer``; ``shape`` overrides the tiny dimensions (bench_gpu: UMT5's width)."""
    from transformers import T5Config, T5EncoderModel

    dims = {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8}
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **{**dims, **shape},
        )
    )


def _byte_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A byte-level tokenizer built without any download: every prompt, in any script, gets its own ids."""
    from tokenizers import Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


# --- prompt moderators (safety.moderator) ------------------------------------------------------

# The tokens a guard's verdict is made of: whole tokens, as in the real guards' vocabularies.
GUARD_TOKENS = ["safe", "unsafe", "Yes", "No", *(f"S{i}" for i in range(1, 15))]
LLAMA_GUARD_TEMPLATE = (
    "{{ bos_token }}Task: Check if there is unsafe content in 'User' messages in conversations according to "
    "our safety policy with the below categories.\n<BEGIN CONVERSATION>\n"
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "<END CONVERSATION>\nProvide your safety assessment for ONLY THE LAST User message in the above "
    "conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a "
    "comma-separated list of violated categories.{% if add_generation_prompt %}\n{% endif %}"
)


def build_tiny_llama_guard() -> tuple[Any, Any]:  # -> (transformers.LlamaForCausalLM, PreTrainedTokenizerFast)
    """A Llama Guard-style generative moderator: a tiny Llama and a byte-level tokenizer with a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _guard_tokenizer(LLAMA_GUARD_TEMPLATE)
    config = LlamaConfig(**_tiny_decoder(tokenizer))
    with _seeded():
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_tiny_shieldgemma() -> tuple[Any, Any]:  # -> (transformers.Gemma2ForCausalLM, PreTrainedTokenizerFast)
    """A ShieldGemma-style classifier moderator: a tiny Gemma 2 whose next-token Yes/No odds are the score."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tokenizer = _guard_tokenizer(None)
    config = Gemma2Config(**_tiny_decoder(tokenizer), head_dim=16, sliding_window=512)
    with _seeded():
        model = Gemma2ForCausalLM(config)
    return model, tokenizer


def _tiny_decoder(tokenizer: Any) -> dict[str, Any]:
    """The guards' shared tiny decoder dimensions and special tokens."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _guard_tokenizer(chat_template: str | None):  # -> transformers.PreTrainedTokenizerFast
    """A byte-level tokenizer (any text gets ids, offline) with the guards' verdict words as whole tokens."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=2048,
        padding_side="left",
    )
    tokenizer.add_tokens(GUARD_TOKENS)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


_BUILDERS.update(
    {
        "tiny-llama-guard": lambda: list(build_tiny_llama_guard()),
        "tiny-shieldgemma": lambda: list(build_tiny_shieldgemma()),
    }
)
