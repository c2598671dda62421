"""What several benchmarks share: a small tiny-model catalog, and where Movie Gen Bench lives."""

from __future__ import annotations

import os
from pathlib import Path


def write_bench_inputs(folder: Path, clips: int, config_text: str, channel: str = "x") -> tuple[Path, Path]:
    """A catalog of ``clips`` alike 1 s rows for ``channel`` and a configuration file; returns both paths.

    The tiny model makes noise, which can lose watermark bits: the benchmarks' configurations record
    the mark (``watermark_gate: recorded``) so every clip counts.
    """
    from moviegen.catalog.schema import write_catalog

    rows = [
        {
            "campaign_id": "bench",
            "clip_id": f"clip-{i:03d}",
            "prompt": f"a product shot number {i}, studio light, slow turntable",
            "channels": [channel],
            "duration_s": 1.0,
            "seed": i,
        }
        for i in range(clips)
    ]
    catalog = folder / f"catalog-{clips}.parquet"
    write_catalog(rows, str(catalog))
    config = folder / "bench.yaml"
    config.write_text(config_text)
    return catalog, config


def find_moviegenbench() -> Path | None:
    """Movie Gen Bench, read where it lies (never copied): $MOVIEGENBENCH_DIR, else shared/ beside the checkout.

    The same discovery as tests/conftest.py.
    """
    explicit = os.environ.get("MOVIEGENBENCH_DIR")
    if explicit:
        return Path(explicit)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "benchmarks" / "moviegenbench"
        if candidate.is_dir():
            return candidate
    return None
