"""RivaGAN graph benchmark: the shipped 3-D ONNX graphs against moviegen.watermark.rivagan's 2-D rebuilds.

Problem: the encoder and decoder at the working size are most of the watermark's cost; the shipped
graphs run 3-D convolutions over a time axis of length 1. Measured side by side (interleaved rounds,
best of each) on the same photographs at the working size of a 1920x1080 frame (256x144), batch of 8:

1. time per batch of each graph: shipped, 2-D exact, 2-D with separable (low-rank) 32-to-32 layers;
2. how far each rebuild is from the shipped graph (residual correlation, largest logit difference),
   and the bit margins the encoder's residual gives before any compression.

Run: .venv/bin/python benchmarks/bench_watermark_graphs.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort
from skimage import data as photos

from moviegen.watermark.model import ENCODER_RANK, TRIAL_DECODER_RANK, model_dir, shrink
from moviegen.watermark.payload import payload_bits
from moviegen.watermark.rivagan import decoder_model, encoder_model, load_weights

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]


def session(model: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    folder = model_dir()
    small = np.stack([shrink(getattr(photos, n)(), (256, 144)) for n in PHOTOS] * 2)
    x = small.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(127.5) - np.float32(1)
    bits = payload_bits(0x5A3C96E1).astype(np.float32)
    signs = np.repeat(bits[None] * 2 - 1, len(x), 0)
    enc_w, dec_w = (load_weights(folder / f"rivagan_{p}.onnx") for p in ("encoder", "decoder"))
    shipped_enc, shipped_dec = (session(str(folder / f"rivagan_{p}.onnx")) for p in ("encoder", "decoder"))
    exact_dec = session(decoder_model(dec_w))

    encoders = {
        "shipped": lambda: shipped_enc.run(None, {"frame": x[:, :, None], "data": (signs + 1) / 2})[0][:, :, 0] - x
    }
    for rank in (None, 64, ENCODER_RANK, 16):
        s = session(encoder_model(enc_w, rank))
        encoders[f"2-D rank {rank or 'exact'}"] = lambda s=s: s.run(None, {"frame": x, "data": signs})[0]
    decoders = {"shipped": lambda: shipped_dec.run(None, {"frame": x[:, :, None]})[0]}
    for rank in (None, TRIAL_DECODER_RANK, 32):
        s = session(decoder_model(dec_w, rank, rank))
        decoders[f"2-D rank {rank or 'exact'}"] = lambda s=s: s.run(None, {"frame": x})[0]

    runs = {("encoder", k): f for k, f in encoders.items()} | {("decoder", k): f for k, f in decoders.items()}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - started)

    print(f"\n1. seconds per batch of {len(x)} frames at 256x144 (best of {args.rounds} interleaved rounds)")
    for part in ("encoder", "decoder"):
        base = min(times[(part, "shipped")])
        for (p, name), t in times.items():
            if p == part:
                print(f"   {part} {name:16s} {min(t):.3f} s  ({base / min(t):.2f}x the shipped graph)")

    print("\n2. agreement with the shipped graphs; encoder bit margins before compression (exact decoder)")
    reference = encoders["shipped"]()
    for name, run in encoders.items():
        residual = run()
        corr = np.corrcoef(residual.ravel(), reference.ravel())[0, 1]
        margin = exact_dec.run(None, {"frame": x + residual})[0] * (bits * 2 - 1)
        print(
            f"   encoder {name:16s} residual correlation {corr:.4f}; bits right {(margin > 0).mean():.3f}, "
            f"margin mean {margin.mean():.2f} min {margin.min():.2f}"
        )
    logits = decoders["shipped"]()
    for name, run in decoders.items():
        print(f"   decoder {name:16s} largest logit difference {np.abs(run() - logits).max():.3f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
