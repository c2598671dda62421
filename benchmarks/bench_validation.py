"""Validation time of a 10,000-row catalog: reading, schema checks, and the prompt gate, separately.

Problem: ``moviegen validate`` and every run start by reading and checking the whole catalog; a
big campaign must not wait on it. Goal: read + validate 10,000 rows in under 5 s on this machine.
Solution: measure what ``moviegen validate`` does, stage by stage, in one process: read the
Parquet file, validate every row (schema, channels, styles, models, URIs), then the prompt gate
(policy terms and the text classifier), over the Movie Gen Bench prompts cycled to N rows with
varied channels, styles, aspects, captions, hashtags and https logo URIs on 20 hosts (each host
resolved and checked against the input policy). The prompts are read where they live
(``shared/benchmarks/moviegenbench`` beside the checkout, or ``$MOVIEGENBENCH_DIR``), never copied.

    .venv/bin/python benchmarks/bench_validation.py [--rows 10000] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import find_moviegenbench  # benchmarks/common.py (scripts run from this folder)

GOAL_S = 5.0


def build_rows(prompts: list[str], n: int, channels: list[str], styles: list[str]) -> list[dict]:
    """N catalog rows: the prompts cycled, with channels, styles, aspects and text varied row by row."""
    aspects = ["16:9", "9:16", "1:1"]
    rows = []
    for i in range(n):
        row = {
            "campaign_id": f"campaign-{i % 7}",
            "clip_id": f"clip-{i:05d}",
            "prompt": prompts[i % len(prompts)],
            "channels": [channels[(i + k) % len(channels)] for k in range(1 + i % 3)],
            "style": styles[i % len(styles)],
            "aspect": aspects[i % 3],
            "duration_s": 1.0 + (i % 5) * 0.5,
            "seed": i,
            "caption": f"Spring drop {i}: 20% off, today only" if i % 2 else "",
            "hashtags": ["spring", f"drop{i % 10}"],
        }
        if i % 4 == 0:
            row.update(title="New season", cta="Shop now", logo_position="bottom_left", saturation=1.2)
            # 20 CDN hosts: each row's http(s) host is resolved and checked (moviegen.netguard), once a minute per host
            row["logo_uri"] = f"https://cdn{i % 20}.brand.example/kit/logo.png?v={i % 3}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    from moviegen.assets import UriPolicy
    from moviegen.catalog.check import validate_catalog
    from moviegen.catalog.schema import read_catalog, write_catalog
    from moviegen.config import load_settings
    from moviegen.presets import channel_presets, styles
    from moviegen.safety import prompt as prompt_module
    from moviegen.safety.policy import load_policies
    from moviegen.safety.prompt import screen_catalog

    bench = find_moviegenbench()
    if bench is None:
        sys.exit("Movie Gen Bench not found: set MOVIEGENBENCH_DIR or place shared/ beside the checkout")
    prompts = [p.strip() for p in (bench / "MovieGenVideoBench.txt").read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    settings = load_settings(None)
    presets, looks = channel_presets(settings.channels), styles(settings.styles)
    # Channels every duration fits (the longest row is 3 s) and every named style.
    usable = sorted(name for name, p in presets.items() if p.max_duration_s >= 3.0)
    rows = build_rows(prompts, args.rows, usable, sorted(looks))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.parquet"
        write_catalog(rows, str(path))
        size = path.stat().st_size
        started = time.perf_counter()
        policies = load_policies(settings.safety.policy, settings.safety.campaign_policies)
        policy_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = validate_catalog(read_catalog(str(path)).slice(0, 2), channels=presets, styles=looks,
                                default_model=settings.generation.model)  # fmt: skip
        screen_catalog(warm, policies)  # loads the text classifier once, as any process does
        classifier_s = time.perf_counter() - started
        read_s, validate_s, gate_s, cpu_s, gate_cpu_s = [], [], [], [], []
        for _ in range(args.repeats):
            cpu = time.process_time()
            started = time.perf_counter()
            table = read_catalog(str(path))
            read_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = validate_catalog(
                table,
                channels=presets,
                styles=looks,
                default_model=settings.generation.model,
                uri_policy=UriPolicy.from_settings(settings.inputs),
            )
            validate_s.append(time.perf_counter() - started)
            cpu_s.append(time.process_time() - cpu)
            prompt_module._gates.clear()  # a cold gate each time: its lookup memos start empty, as in a new run
            cpu = time.process_time()
            started = time.perf_counter()
            screened = screen_catalog(result, policies).validation
            gate_s.append(time.perf_counter() - started)
            gate_cpu_s.append(time.process_time() - cpu)

    figures = {
        "rows": args.rows,
        "prompts": len(prompts),
        "parquet_bytes": size,
        "valid_rows": len(result.specs),
        "schema_problems": len(result.problems),
        "passed_prompt_gate": len(screened.specs),
        "read_s": statistics.median(read_s),
        "validate_s": statistics.median(validate_s),
        "read_validate_s": statistics.median(r + v for r, v in zip(read_s, validate_s, strict=True)),
        "read_validate_cpu_s": statistics.median(cpu_s),  # CPU seconds: steadier than wall time on a shared machine
        "policy_load_s": policy_s,
        "prompt_gate_s": statistics.median(gate_s),
        "prompt_gate_cpu_s": statistics.median(gate_cpu_s),
        "classifier_load_s": classifier_s,
        "repeats": args.repeats,
        "load_average": os.getloadavg()[0],
    }
    figures["goal_met"] = figures["read_validate_s"] < GOAL_S
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"catalog: {args.rows} rows ({len(prompts)} Movie Gen Bench prompts cycled), {size / 2**20:.1f} MiB Parquet")
    print(f"  read            {figures['read_s']:.3f} s")
    print(
        f"  validate        {figures['validate_s']:.3f} s  ({len(result.specs)} valid, {len(result.problems)} problems)"
    )
    print(
        f"  read+validate   {figures['read_validate_s']:.3f} s  (goal < {GOAL_S:g} s: "
        f"{'met' if figures['goal_met'] else 'NOT met'}; {figures['read_validate_cpu_s']:.3f} s of CPU)"
    )
    print(
        f"  prompt gate     {figures['prompt_gate_s']:.3f} s  ({figures['prompt_gate_cpu_s']:.3f} s of CPU; once per "
        f"process: classifier load {classifier_s:.3f} s, policy load "
        f"{policy_s:.3f} s; {len(screened.specs)} rows passed)"
    )
    print(f"  medians of {args.repeats}; load average {figures['load_average']:.1f}")


if __name__ == "__main__":
    main()
