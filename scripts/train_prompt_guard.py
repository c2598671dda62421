"""Refit the built-in prompt guard's head: ``.venv/bin/python scripts/train_prompt_guard.py``.

Reads the dev split of ``tests/data/prompt_eval.csv`` (never the held-out split), embeds each text
as the moderator reads it (less the exclusions the rules found: "..., no gore")
with the packaged all-MiniLM-L6-v2 encoder, fits a logistic-regression head over the categories,
and writes ``moviegen/data/prompt_guard_head.safetensors``. The operating point (a score
threshold and the reach, ``min_similarity``) is chosen on the dev split's out-of-fold scores (five
folds, so no text is scored by a head that saw it), together with the default policy's rules as a
run applies them: of the points that block at most ``--max-false-positives`` of the safe dev
texts, the one with the best lowest recall over the unsafe categories. The threshold is folded
into the safe classes' bias, so that the moderator's default threshold of 0.5 is that point.
Prints the out-of-fold figures per category.

    .venv/bin/python scripts/train_prompt_guard.py [--strength 16] [--max-false-positives 0.005] [--check]

``--check`` fits and reports without writing (the tests run it to see the shipped head is the one
this script makes).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moviegen.generation.device import pick_device  # noqa: E402
from moviegen.safety.guard_head import (  # noqa: E402  (the checkout's package, not an installed one)
    BUILTIN_HEAD,
    SAFE_CLASSES,
    GuardHead,
    fit_head,
    load_head,
    mean_pooled_embeddings,
    save_head,
)
from moviegen.safety.moderator import MINILM_GUARD, load_encoder, moderator_folder  # noqa: E402

EVAL_SET = ROOT / "tests" / "data" / "prompt_eval.csv"
FOLDS = 5


def dev_rows() -> list[dict[str, str]]:
    with EVAL_SET.open(encoding="utf-8", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "dev"]


def embed(texts: list[str], batch: int = 64) -> np.ndarray:
    """The texts' embeddings on the CPU in float32, the encoder loaded as the moderator loads it."""
    device = pick_device("cpu", "float32")
    model, tokenizer = load_encoder("minilm-prompt-guard", moderator_folder(MINILM_GUARD, ROOT / ".cache"), device)
    return np.concatenate(
        [mean_pooled_embeddings(model, tokenizer, texts[i : i + batch], "cpu") for i in range(0, len(texts), batch)]
    )


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
REACHES = (0.3, 0.35, 0.4, 0.45, 0.5)


def out_of_fold(x: np.ndarray, labels: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Each dev text's score and nearness from a head fitted on the other folds (no reach limit)."""
    from sklearn.model_selection import StratifiedKFold

    scores, nearness = np.zeros(len(labels)), np.zeros(len(labels))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, labels):
        head = fit_head(x[train], labels[train], encoder="fold", strength=strength)
        judged = head.unsafe_scores(x[test])
        scores[test], nearness[test] = [j[0] for j in judged], [j[2] for j in judged]
    return scores, nearness


def screened(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Whether the default policy's rules block each text, and the text the moderator reads (less
    the clause-final exclusions the rules found: "..., no gore")."""
    from moviegen.safety import load_policy, prompt_gate
    from moviegen.safety.moderator import moderated_text
    from moviegen.spec import ClipSpec

    specs = [ClipSpec(i, "dev", f"d{i}", text, ("youtube",)) for i, text in enumerate(texts)]
    verdicts = prompt_gate(load_policy()).check(specs)
    return np.array([not v.passed for v in verdicts]), [moderated_text(v) for v in verdicts]


def operating_point(
    scores: np.ndarray, nearness: np.ndarray, ruled: np.ndarray, labels: np.ndarray, max_false_positives: float
) -> tuple[float, float]:
    """(threshold, reach) blocking at most that share of the safe texts with the rules, with the
    best lowest recall over the unsafe categories (then the fewest safe texts blocked)."""
    safe = np.isin(labels, SAFE_CLASSES)
    unsafe = sorted(set(labels[~safe]))
    best: tuple[float, int, float, float] | None = None
    for threshold in THRESHOLDS:
        for reach in REACHES:
            blocked = ruled | ((scores >= threshold) & (nearness >= reach))
            if blocked[safe].mean() > max_false_positives:
                continue
            point = (min(blocked[labels == c].mean() for c in unsafe), -int(blocked[safe].sum()), threshold, reach)
            best = max(best, point) if best else point
    if best is None:
        sys.exit(f"no operating point blocks at most {max_false_positives:.1%} of the safe dev texts")
    return best[2], best[3]


def calibrated(head: GuardHead, threshold: float) -> GuardHead:
    """The head with ``threshold`` moved to 0.5: the safe classes' logits raised by log(t / (1 - t))."""
    shift = np.log(threshold / (1.0 - threshold))
    bias = head.bias + np.array([shift if c in head.safe else 0.0 for c in head.classes], dtype=np.float32)
    return replace(head, bias=bias.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strength", type=float, default=16.0, help="inverse L2 penalty (scikit-learn's C)")
    parser.add_argument("--max-false-positives", type=float, default=0.005, help="share of safe dev texts")
    parser.add_argument("--check", action="store_true", help="fit and report; compare with the shipped head")
    args = parser.parse_args()

    rows = dev_rows()
    labels = np.array([r["category"] for r in rows])
    ruled, texts = screened([r["text"] for r in rows])
    x = embed(texts)
    scores, nearness = out_of_fold(x, labels, args.strength)
    threshold, reach = operating_point(scores, nearness, ruled, labels, args.max_false_positives)
    moderated = (scores >= threshold) & (nearness >= reach)
    print(f"dev rows {len(rows)}: threshold {threshold:g}, reach {reach:g} (out of fold, {FOLDS} folds)")
    for category in sorted(set(labels)):
        what = "blocked" if category in SAFE_CLASSES else "recall"
        rule, both = ruled[labels == category], (ruled | moderated)[labels == category]
        print(f"  {category:20s} {what}: rules {rule.mean():.3f}, with the guard {both.mean():.3f} ({both.sum()})")
    fitted = fit_head(x, labels, "sentence-transformers/all-MiniLM-L6-v2", args.strength, min_similarity=reach)
    head = calibrated(fitted, threshold)
    if args.check:
        shipped = load_head(BUILTIN_HEAD)
        same = shipped.classes == head.classes and np.allclose(shipped.weight, head.weight, atol=1e-3)
        same = same and np.allclose(shipped.bias, head.bias, atol=1e-3) and shipped.min_similarity == reach
        print("shipped head matches" if same else "shipped head DIFFERS: rerun without --check")
        sys.exit(0 if same else 1)
    save_head(head, BUILTIN_HEAD)
    print(f"wrote {BUILTIN_HEAD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
