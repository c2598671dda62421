"""The built-in tiny model: a random-weight Wan pipeline of the real architecture, built offline.

It is saved with ``save_pretrained`` and loaded back with ``from_pretrained`` exactly like a real
model, so demos and tests exercise the real loading and generation code. Its weights are random:
it makes abstract moving colour, not pictures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Bump when the architecture below changes: the folder name (and so every clip_key) changes with it.
TINY_BUILD = "tiny-wan-v1"


def tiny_model_dir(cache_dir: Path) -> Path:
    """The folder the tiny model is saved in under the cache directory."""
    return Path(cache_dir) / "models" / TINY_BUILD


def ensure_tiny_model(cache_dir: Path) -> Path:
    """Build and save the tiny pipeline on first use; return its folder. Safe across processes."""
    target = tiny_model_dir(cache_dir)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        import diffusers

        diffusers.utils.logging.disable_progress_bar()
        build_tiny_pipeline().save_pretrained(staging)
        try:
            os.rename(staging, target)  # atomic: a concurrent builder's identical copy may have won
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_pipeline():  # -> diffusers.WanPipeline
    """Build the tiny random-weight WanPipeline in memory (deterministic weights)."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        # base_dim=3 is the fastest decoder on a CPU (wider ones take 2-4x longer per frame).
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
        tokenizer = _byte_tokenizer()
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
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
