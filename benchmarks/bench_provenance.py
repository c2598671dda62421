"""What provenance costs per rendition: XMP write, C2PA signing, and the delivery-gate read, next to the encode.

Problem: every published rendition gets label metadata and a signed manifest, and the delivery gate
reads both back; the cost must stay small next to rendering.

Solution: encode one channel-sized rendition (1080x1920, 30 fps, H.264 CRF 20 veryfast + AAC, the
renderer's settings) and time each provenance step on fresh copies of it, side by side in one run.

    .venv/bin/python benchmarks/bench_provenance.py [--seconds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from moviegen.config import ProvenanceSettings
from moviegen.media import run_ffmpeg
from moviegen.provenance import (
    ProvenanceFacts,
    prompt_sha256,
    provenance_violations,
    read_credentials,
    sign_credentials,
    write_label_metadata,
)


def encode(path: Path, seconds: float) -> float:
    started = time.perf_counter()
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", f"testsrc2=size=1080x1920:rate=30:duration={seconds}"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"),
            *("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(path)),
        ]
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = ProvenanceSettings(dev_signer_dir=folder / "dev-signer")
        source = folder / "rendition.mp4"
        encode_s = encode(source, args.seconds)
        size_mb = source.stat().st_size / 1e6
        facts = ProvenanceFacts(
            "bench", "clip", "tiktok", "moviegen/tiny-wan", "rev", prompt_sha256("a prompt"), None, "0" * 20
        )
        sign_credentials(shutil.copy(source, folder / "warmup.mp4"), facts, settings)  # creates the dev signer

        times: dict[str, list[float]] = {"xmp": [], "sign": [], "read": [], "gate": []}
        for i in range(args.repeats):
            video = Path(shutil.copy(source, folder / f"copy{i}.mp4"))
            for step, call in (
                ("xmp", lambda v=video: write_label_metadata(v, facts, settings)),
                ("sign", lambda v=video: sign_credentials(v, facts, settings)),
                ("read", lambda v=video: read_credentials(v, settings)),
                ("gate", lambda v=video: provenance_violations(v, settings)),
            ):
                started = time.perf_counter()
                call()
                times[step].append(time.perf_counter() - started)
            assert read_credentials(video, settings)["state"] == "Valid"

    median = {step: statistics.median(values) for step, values in times.items()}
    total = median["xmp"] + median["sign"] + median["gate"]
    print(f"rendition: 1080x1920, {args.seconds:g} s at 30 fps, {size_mb:.1f} MB; encode {encode_s:.2f} s")
    for step, label in (
        ("xmp", "XMP label metadata (exiftool)"),
        ("sign", "C2PA sign"),
        ("read", "C2PA read + validate"),
        ("gate", "delivery gate (read C2PA + XMP)"),
    ):
        print(f"  {label:34s} median {median[step] * 1000:7.1f} ms  (n={args.repeats})")
    print(
        f"  provenance per rendition (xmp + sign + gate): {total:.2f} s = {100 * total / encode_s:.0f}% of the encode"
    )


if __name__ == "__main__":
    main()
