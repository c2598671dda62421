"""RivaGAN's graphs rebuilt in 2-D from the shipped weights, checked against the shipped ONNX graphs."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from skimage import data as photos

from moviegen.watermark.model import ENCODER_RANK, model_dir
from moviegen.watermark.payload import payload_bits
from moviegen.watermark.rivagan import decoder_model, encoder_model, load_weights, separable


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def weights() -> dict[str, dict[str, np.ndarray]]:
    folder = model_dir()
    return {part: load_weights(folder / f"rivagan_{part}.onnx") for part in ("encoder", "decoder")}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two photographs at the working size of a 1080x1920 frame: float32 (2, 3, 144, 256) in [-1, 1]."""
    small = np.stack(
        [cv2.resize(p, (256, 144), interpolation=cv2.INTER_AREA) for p in (photos.astronaut(), photos.coffee())]
    )
    return small.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(127.5) - np.float32(1)


BITS = payload_bits(0x5A3C96E1).astype(np.float32)


def test_weights_are_read_from_the_shipped_files(weights):
    assert weights["encoder"]["_attention.3.weight"].shape == (32, 32, 1, 11, 11)
    assert weights["encoder"]["_conv.0.weight"].shape == (32, 4, 1, 11, 11)  # frame and the attention mix
    assert weights["decoder"]["_conv.3.weight"].shape == (32, 32, 1, 11, 11)


def test_exact_graphs_compute_what_the_shipped_graphs_compute(weights, frames):
    folder = model_dir()
    data = np.repeat(BITS[None], len(frames), 0)
    shipped = session(str(folder / "rivagan_encoder.onnx")).run(None, {"frame": frames[:, :, None], "data": data})[0]
    residual = session(encoder_model(weights["encoder"])).run(None, {"frame": frames, "data": data * 2 - 1})[0]
    np.testing.assert_allclose(residual, shipped[:, :, 0] - frames, atol=1e-5)

    logits = session(str(folder / "rivagan_decoder.onnx")).run(None, {"frame": frames[:, :, None]})[0]
    ours = session(decoder_model(weights["decoder"])).run(None, {"frame": frames})[0]
    np.testing.assert_allclose(ours, logits, atol=1e-3)


def test_separable_factors_approximate_the_kernel_and_are_exact_at_full_rank():
    kernel = np.random.default_rng(0).standard_normal((8, 6, 11, 11)).astype(np.float32)
    vertical, horizontal = separable(kernel, 6 * 11)
    assert vertical.shape == (66, 6, 11, 1) and horizontal.shape == (8, 66, 1, 11)
    rebuilt = np.einsum("rikx,orxy->oiky", vertical, horizontal)  # vertical then horizontal, composed
    np.testing.assert_allclose(rebuilt, kernel, atol=1e-4)
    low = np.einsum("rikx,orxy->oiky", *separable(kernel, 20))
    assert 0 < np.linalg.norm(low - kernel) < np.linalg.norm(kernel)


def test_low_rank_encoder_still_writes_every_bit(weights, frames):
    """The product's encoder (ENCODER_RANK) against the exact decoder, before any compression."""
    signs = np.repeat(BITS[None] * 2 - 1, len(frames), 0)
    residual = session(encoder_model(weights["encoder"], ENCODER_RANK)).run(None, {"frame": frames, "data": signs})[0]
    exact = session(encoder_model(weights["encoder"])).run(None, {"frame": frames, "data": signs})[0]
    assert np.corrcoef(residual.ravel(), exact.ravel())[0, 1] > 0.85
    logits = session(decoder_model(weights["decoder"])).run(None, {"frame": frames + residual})[0]
    assert ((logits > 0) == BITS.astype(bool)).all()
