"""Safety gates' speed, and the frame gate's cost next to generating the demo campaign, in one run.

Problem: the gates sit on every clip's path, so they must stay cheap: the goal is a frame gate
that costs under 5% of the demo campaign's generation time on this machine.
Solution: measure side by side in one process (the machine is noisy, so ratios come from one run):
  0. prompt gate accuracy: precision and recall per category on tests/data/prompt_eval.csv, for
     its dev split and its held-out split, and the safe texts' false-positive rate, for the rules
     alone and for the default configuration (rules, then the minilm-prompt-guard moderator);
  1. prompt gate: the 1003 Movie Gen Bench prompts (every block is a false positive), in one batch
     and row by row (prompts/s), and the moderator's blocks and speed on them;
  2. frame gate: a real photograph panned into a 3 s clip at the tiny model's master size
     (480x272, 49 frames), from memory (fresh clips) and from the master file (reused masters);
  3. the demo catalog generated with the tiny model at its default steps, each clip then passing
     the frame gate exactly as in a run: generation seconds against frame-gate seconds.

    .venv/bin/python benchmarks/bench_safety.py [--catalog catalogs/demo.parquet] [--rows N] [--json]
    .venv/bin/python benchmarks/bench_safety.py --prompt-only     # 0 and 1 only (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import find_moviegenbench  # benchmarks/common.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = find_moviegenbench()
BENCH_PROMPTS = BENCH_DIR / "MovieGenVideoBench.txt" if BENCH_DIR else None
EVAL_SET = ROOT / "tests" / "data" / "prompt_eval.csv"
# The gate's categories and rules -> the evaluation set's categories (for precision).
CATEGORY_OF = {
    "sexual": "nudity",
    "nudity": "nudity",
    "minors_sexual": "sexual_minors",
    "sexual_minors": "sexual_minors",
    "violence_gore": "graphic_violence",
    "graphic_violence": "graphic_violence",
    "bodily_harm": "graphic_violence",
    "body_injured": "graphic_violence",
    "mass_violence": "mass_violence",
    "mass_violence_scene": "mass_violence",
    "lined_up_and_shot": "mass_violence",
    "killed_by_hand": "mass_violence",
    "armed_in_public": "mass_violence",
    "self_harm": "self_harm",
    "self_injury": "self_harm",
    "self_injury_cutting": "self_harm",
    "self_injury_burning": "self_harm",
    "hate": "hate",
    "hate_dehumanising": "hate",
    "hate_exclusion": "hate",
    "extremism_glorified": "hate",
    "drugs": "drugs",
    "drug_sale": "drugs",
}


SAFE = ("safe_hard_negative", "safe_generic")
GATES = ("rules", "rules + moderator")  # the policy alone; the default configuration (its moderator too)


def predicted_categories(verdict) -> set[str]:
    """The evaluation categories a verdict's findings point to (denied-term category, combination
    name, or the moderator's category)."""
    found = set()
    for f in verdict.findings:
        if f.rule == "moderator":
            found.update(f.details.get("categories") or ["other"])
            continue
        key = f.details.get("category") or f.details.get("combination") or f.rule
        found.add(CATEGORY_OF.get(key, "other"))
    return found


def gate_verdicts(texts: list[str], gate_name: str) -> list:
    """Each text's verdict from the default policy's rules, and with ``rules + moderator`` also from
    the default configuration's moderator (every text the rules pass), as a run screens them."""
    from moviegen.config import ModeratorSettings
    from moviegen.safety import load_policy, prompt_gate
    from moviegen.safety.moderator import Moderation
    from moviegen.spec import ClipSpec

    verdicts = prompt_gate(load_policy()).check(
        [ClipSpec(i, "eval", f"e{i}", t, ("youtube",)) for i, t in enumerate(texts)]
    )
    if gate_name == "rules":
        return verdicts
    moderation = Moderation(ModeratorSettings(), Path(tempfile.gettempdir()))
    verdicts = moderation.review(verdicts)
    if not moderation.ran:
        sys.exit(f"the default moderator did not run: {moderation.error}")
    return verdicts


def bench_prompt_eval() -> dict[str, dict]:
    """Precision and recall per category, and the safe texts' false-positive rate, per gate and split."""
    import csv

    with EVAL_SET.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    figures: dict[str, dict] = {}
    for gate_name in GATES:
        for split in ("dev", "heldout"):
            part = [r for r in rows if r["split"] == split]
            if part:  # no held-out split until a fresh one is written
                verdicts = gate_verdicts([r["text"] for r in part], gate_name)
                figures[f"{gate_name}, {split}"] = split_figures(part, verdicts)
    return figures


def split_figures(part: list[dict], verdicts: list) -> dict:
    """Recall and precision per unsafe category and the safe texts blocked, for one split."""
    labels = sorted({r["category"] for r in part} - set(SAFE))
    per: dict[str, dict] = {}
    for label in labels:
        rows_of = [v for r, v in zip(part, verdicts, strict=True) if r["category"] == label]
        claimed = [r["category"] for r, v in zip(part, verdicts, strict=True) if label in predicted_categories(v)]
        per[label] = {
            "rows": len(rows_of),
            "recall": sum(not v.passed for v in rows_of) / len(rows_of),
            "precision": claimed.count(label) / len(claimed) if claimed else float("nan"),
        }
    safe_figures = {}
    for kind in SAFE:
        negatives = [v for r, v in zip(part, verdicts, strict=True) if r["category"] == kind]
        if negatives:
            blocked = [v.spec.prompt for v in negatives if not v.passed]
            safe_figures[kind] = {"rows": len(negatives), "blocked": len(blocked), "texts": blocked}
    return {"categories": per, "safe": safe_figures}


def bench_prompt_gate(repeats: int = 3) -> dict[str, float]:
    from moviegen.safety import load_policy, prompt_gate
    from moviegen.spec import ClipSpec

    if BENCH_PROMPTS is None:
        sys.exit("shared/benchmarks/moviegenbench/ not found beside the repository")
    prompts = [p.strip() for p in BENCH_PROMPTS.read_text(encoding="utf-8").splitlines() if p.strip()]
    specs = [ClipSpec(i, "bench", f"p{i}", p, ("youtube",)) for i, p in enumerate(prompts)]
    started = time.perf_counter()
    gate = prompt_gate(load_policy())
    gate.check(specs[:1])  # the classifier loads on first use
    setup = time.perf_counter() - started
    started = time.perf_counter()
    gate.check(specs)  # the first pass: no text or n-gram remembered yet
    first = time.perf_counter() - started
    batch = []
    for _ in range(repeats):
        started = time.perf_counter()
        verdicts = gate.check(specs)
        batch.append(time.perf_counter() - started)
    started = time.perf_counter()
    for spec in specs[:200]:
        gate.check([spec])
    single = (time.perf_counter() - started) / 200
    started = time.perf_counter()
    moderated = gate_verdicts(prompts, "rules + moderator")  # the first call loads the encoder
    moderated_s = time.perf_counter() - started
    started = time.perf_counter()
    gate_verdicts(prompts, "rules + moderator")
    moderator_s = time.perf_counter() - started
    return {
        "prompts": len(specs),
        "blocked": sum(not v.passed for v in verdicts),
        "blocked_with_moderator": sum(not v.passed for v in moderated),
        "blocked_by_moderator": [v.spec.prompt for v in moderated if any(f.rule == "moderator" for f in v.findings)],
        "moderator_first_s": moderated_s,
        "moderator_prompts_per_s": len(prompts) / moderator_s,
        "setup_s": setup,
        "first_batch_prompts_per_s": len(specs) / first,
        "batch_prompts_per_s": len(specs) / statistics.median(batch),
        "single_prompts_per_s": 1 / single,
    }


def real_clip(frames: int = 49, width: int = 480, height: int = 272) -> np.ndarray:
    """scikit-image's astronaut photograph panned slowly: a real-footage clip at the master's size."""
    import cv2
    from skimage import data

    image = cv2.resize(data.astronaut(), (width + 2 * frames, round(512 * (width + 2 * frames) / 512)))
    return np.stack([image[:height, 2 * i : 2 * i + width] for i in range(frames)])


def bench_frame_gate(repeats: int = 5) -> dict[str, float]:
    from moviegen.media import write_master
    from moviegen.safety import check_clip, check_master, load_policy, prepare_detector

    policy = load_policy()
    started = time.perf_counter()
    prepare_detector(policy)
    setup = time.perf_counter() - started
    clip = real_clip()
    memory, sampled = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = check_clip(clip, 0.0, policy)
        memory.append(time.perf_counter() - started)
        sampled = len(result.scores["sampled"])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_master(clip, 16, Path(tmp) / "master.mkv")
        from_file = []
        for _ in range(repeats):
            started = time.perf_counter()
            check_master(path, 0.0, policy, size=(clip.shape[2], clip.shape[1]))
            from_file.append(time.perf_counter() - started)
    seconds = statistics.median(memory)
    return {
        "frames": len(clip),
        "size": f"{clip.shape[2]}x{clip.shape[1]}",
        "sampled": sampled,
        "setup_s": setup,
        "clip_s": seconds,
        "frames_per_s": len(clip) / seconds,
        "detector_frames_per_s": sampled / float(result.scores["detector_seconds"]),
        "from_file_clip_s": statistics.median(from_file),
        "from_file_frames_per_s": len(clip) / statistics.median(from_file),
    }


def bench_demo(catalog: str, rows: int | None) -> dict[str, float]:
    """Generate the demo catalog's clips as a run does (prompt gate, plan, batches), each then frame-gated."""
    from moviegen.config import Settings
    from moviegen.run.context import start_run
    from moviegen.run.masters import generate_masters, make_batches
    from moviegen.run.planning import plan_campaign
    from moviegen.run.screening import load_and_validate, screen_prompts

    with tempfile.TemporaryDirectory() as tmp:
        ctx = start_run(Settings(out=tmp))
        validation = screen_prompts(load_and_validate(catalog, ctx), ctx)
        specs = validation.specs[:rows] if rows else validation.specs
        plan = plan_campaign(specs, ctx)
        masters = []
        for batch in make_batches([clip for clip, _ in plan.todo], ctx):
            masters += generate_masters(batch, ctx)
    generation = sum(m.seconds for m in masters)
    gate = sum(m.gate_seconds for m in masters)
    return {
        "clips": len(masters),
        "frames": sum(m.clip.request.num_frames for m in masters),
        "steps": masters[0].clip.request.steps if masters else 0,
        "held_back": sum(m.path is None for m in masters),
        "generation_s": generation,
        "frame_gate_s": gate,
        "frame_gate_share": gate / generation if generation else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(ROOT / "catalogs" / "demo.parquet"))
    parser.add_argument("--rows", type=int, default=None, help="only the first N valid rows of the catalog")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--prompt-only", action="store_true", help="only the prompt gate's accuracy and speed")
    args = parser.parse_args()

    figures = {"prompt_eval": bench_prompt_eval(), "prompt_gate": bench_prompt_gate()}
    if not args.prompt_only:
        figures["frame_gate"] = bench_frame_gate()
        figures["demo"] = bench_demo(args.catalog, args.rows)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for part, e in figures["prompt_eval"].items():
        print(f"prompt gate on the evaluation set ({part} split):")
        for label, c in e["categories"].items():
            print(f"  {label:18} {c['rows']:3} rows  recall {c['recall']:.3f}  precision {c['precision']:.3f}")
        for kind, n in e["safe"].items():
            print(
                f"  {kind:18} {n['rows']:3} rows  blocked {n['blocked']} ({n['blocked'] / n['rows']:.1%}) {n['texts']}"
            )
    p = figures["prompt_gate"]
    print(f"prompt gate: {p['prompts']} Movie Gen Bench prompts, {p['blocked']} blocked by the rules, "
          f"{p['blocked_with_moderator']} with the moderator {p['blocked_by_moderator']}")  # fmt: skip
    print(f"  moderator: {p['moderator_prompts_per_s']:.0f} prompts/s over the rules' passes "
          f"(first call, loading the encoder: {p['moderator_first_s']:.1f} s)")  # fmt: skip
    print(f"  {p['first_batch_prompts_per_s']:.0f} prompts/s in a first batch, {p['batch_prompts_per_s']:.0f} "
          f"prompts/s repeated (texts remembered), {p['single_prompts_per_s']:.0f} prompts/s row by row "
          f"(first use loads the classifier: {p['setup_s']:.1f} s)")  # fmt: skip
    if args.prompt_only:
        return
    f, d = figures["frame_gate"], figures["demo"]
    print(f"frame gate: {f['frames']} frames at {f['size']}, {f['sampled']} sampled for the detector")
    print(f"  from memory: {f['clip_s']:.2f} s per clip = {f['frames_per_s']:.0f} frames/s "
          f"(detector {f['detector_frames_per_s']:.1f} sampled frames/s)")  # fmt: skip
    print(f"  from the master file: {f['from_file_clip_s']:.2f} s per clip = "
          f"{f['from_file_frames_per_s']:.0f} frames/s")  # fmt: skip
    print(f"demo catalog: {d['clips']} clips, {d['frames']} frames, {d['steps']} steps, {d['held_back']} held back")
    print(f"  generation {d['generation_s']:.1f} s, frame gate {d['frame_gate_s']:.2f} s "
          f"= {d['frame_gate_share']:.1%} of generation (goal: under 5%)")  # fmt: skip


if __name__ == "__main__":
    main()
