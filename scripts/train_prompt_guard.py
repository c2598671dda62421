"""Refit the built-in prompt guard's head: ``.venv/bin/python scripts/train_prompt_guard.py``.

Reads the dev split of ``tests/data/prompt_eval.csv`` (never the held-out split), embeds each text
as the moderator reads it (less the exclusions the rules found: "..., no gore") with the packaged
all-MiniLM-L6-v2 encoder, fits a logistic-regression head over the categories (reading the
mean-pooled states of ``--layers``, the encoder's six layers by default), and writes
``moviegen/data/prompt_guard_head.safetensors``. The operating point (a score
threshold and the reach, ``min_similarity``) is chosen on the dev split's out-of-fold scores (five
folds, so no text is scored by a head that saw it), together with the default policy's rules as a
run applies them: of the points that block at most ``--max-false-positives`` of the safe dev
texts, the one with the best lowest recall over the unsafe categories. The threshold is folded
into the safe classes' bias, so that the moderator's default threshold of 0.5 is that point.
Prints the out-of-fold figures per category.

    .venv/bin/python scripts/train_prompt_guard.py [--strength 16] [--layers 1,2,3,4,5,6]
        [--max-false-positives 0.002] [--check]

The head records a fingerprint of what it was fitted from (the dev rows, the default policy's
rules, which screen the texts and share the operating point, and the options): the tests check
that the shipped head's is today's, so a change to the eval set or the rules without a refit fails
there. ``--check`` fits and reports without writing, and says whether the fit is the shipped head.
``--eval-set`` and ``--out`` fit on another labelled CSV and write elsewhere (the tests do, on a
small one).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
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
    pooled_states,
    save_head,
)
from moviegen.safety.moderator import MINILM_GUARD, load_encoder, moderator_folder  # noqa: E402

EVAL_SET = ROOT / "tests" / "data" / "prompt_eval.csv"
# The default policy's files: their rules screen the texts and share the operating point.
POLICY_FILES = (ROOT / "moviegen" / "data" / "policy.yaml", ROOT / "moviegen" / "data" / "zero_tolerance.yaml")
FOLDS = 5
DEFAULTS = {"strength": 16.0, "layers": (1, 2, 3, 4, 5, 6), "max_false_positives": 0.002}


def dev_rows(eval_set: Path = EVAL_SET) -> list[dict[str, str]]:
    with eval_set.open(encoding="utf-8", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "dev"]


def fingerprint(
    rows: list[dict[str, str]], strength: float, layers: tuple[int, ...], max_false_positives: float
) -> str:
    """What a head is fitted from: the dev rows, the default policy's files, the options."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(f"{r['text']}\t{r['category']}\n".encode())
    for path in POLICY_FILES:
        digest.update(path.read_bytes())
    digest.update(f"{strength!r} {list(layers)!r} {max_false_positives!r}".encode())
    return digest.hexdigest()[:16]


def embed(texts: list[str], batch: int = 64) -> np.ndarray:
    """The texts' pooled hidden states on the CPU in float32, the encoder loaded as the moderator loads it."""
    device = pick_device("cpu", "float32")
    model, tokenizer = load_encoder("minilm-prompt-guard", moderator_folder(MINILM_GUARD, ROOT / ".cache"), device)
    return np.concatenate(
        [pooled_states(model, tokenizer, texts[i : i + batch], "cpu") for i in range(0, len(texts), batch)]
    )


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
REACHES = (0.3, 0.35, 0.4, 0.45, 0.5)


def out_of_fold(
    x: np.ndarray, labels: np.ndarray, strength: float, layers: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Each dev text's score and nearness from a head fitted on the other folds (no reach limit)."""
    from sklearn.model_selection import StratifiedKFold

    scores, nearness = np.zeros(len(labels)), np.zeros(len(labels))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, labels):
        head = fit_head(x[train], labels[train], encoder="fold", strength=strength, layers=layers)
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
    parser.add_argument("--strength", type=float, default=DEFAULTS["strength"], help="inverse L2 penalty (C)")
    parser.add_argument(
        "--layers",
        default=",".join(map(str, DEFAULTS["layers"])),
        help="hidden states the head reads (0: embeddings, 6 or -1: the last)",
    )
    parser.add_argument(
        "--max-false-positives", type=float, default=DEFAULTS["max_false_positives"], help="share of safe dev texts"
    )
    parser.add_argument("--eval-set", type=Path, default=EVAL_SET, help="labelled CSV (text, category, split)")
    parser.add_argument("--out", type=Path, default=BUILTIN_HEAD, help="where the head is written")
    parser.add_argument("--check", action="store_true", help="fit and report; compare with the shipped head")
    args = parser.parse_args()

    rows = dev_rows(args.eval_set)
    labels = np.array([r["category"] for r in rows])
    ruled, texts = screened([r["text"] for r in rows])
    layers = tuple(int(k) for k in args.layers.split(","))
    trained_on = fingerprint(rows, args.strength, layers, args.max_false_positives)
    x = embed(texts)
    scores, nearness = out_of_fold(x, labels, args.strength, layers)
    threshold, reach = operating_point(scores, nearness, ruled, labels, args.max_false_positives)
    moderated = (scores >= threshold) & (nearness >= reach)
    print(f"dev rows {len(rows)}: threshold {threshold:g}, reach {reach:g} (out of fold, {FOLDS} folds)")
    for category in sorted(set(labels)):
        what = "blocked" if category in SAFE_CLASSES else "recall"
        rule, both = ruled[labels == category], (ruled | moderated)[labels == category]
        print(f"  {category:20s} {what}: rules {rule.mean():.3f}, with the guard {both.mean():.3f} ({both.sum()})")
    fitted = fit_head(
        x, labels, "sentence-transformers/all-MiniLM-L6-v2", args.strength, min_similarity=reach, layers=layers
    )
    head = replace(calibrated(fitted, threshold), trained_on=trained_on)
    if args.check:
        shipped = load_head(BUILTIN_HEAD)
        same = shipped.classes == head.classes and np.allclose(shipped.weight, head.weight, atol=1e-3)
        same = same and np.allclose(shipped.bias, head.bias, atol=1e-3) and shipped.min_similarity == reach
        same = same and shipped.layers == head.layers and shipped.trained_on == trained_on
        print("shipped head matches" if same else "shipped head DIFFERS: rerun without --check")
        sys.exit(0 if same else 1)
    save_head(head, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
