"""Safety policies: what the prompt gate blocks and what the frame gate holds back, from YAML files.

The built-in default is ``moviegen/data/policy.yaml`` (also at ``catalogs/policy.yaml``). A brand
or campaign policy says ``extends: default`` (or names another policy file) and overrides only
what it changes: mappings merge key by key, lists and plain values replace.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moviegen.config import ConfigError
from moviegen.safety.text import PII_KINDS

DEFAULT_POLICY = "default"
PROMPT_FIELDS = ("prompt", "negative_prompt", "caption", "hashtags", "audio_prompt", "title", "cta")
# The text of a row that reaches the video (generated, or burned in): combination rules read it as one.
COMBINED_FIELDS = ("prompt", "title", "caption", "cta")


def video_texts(spec: Any) -> dict[str, str]:
    """A row's text that reaches the video, by field: the combined fields, then every shot's prompt
    (``shots[2].prompt``); empty ones left out."""
    texts = {name: getattr(spec, name) for name in COMBINED_FIELDS}
    texts |= {f"shots[{k}].prompt": shot.prompt for k, shot in enumerate(spec.shots)}
    return {name: text for name, text in texts.items() if text.strip()}


Check = Literal["terms", "names", "pii", "classifier", "length"]


class PolicyError(ConfigError):
    """A policy file cannot be used; the message names the file, the key and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LengthLimit(_Strict):
    """Bounds on one field's text."""

    min_words: int = Field(0, ge=0)
    max_chars: int | None = Field(None, ge=1)


class ClassifierPolicy(_Strict):
    """The shipped text classifier (alt-profanity-check) and the score at which it blocks."""

    threshold: float = Field(0.9, gt=0.0, le=1.0)


class CombinationRule(_Strict):
    """A term of each named group, together in a row's text, blocks it (no term need be denied alone).

    Groups are ``term_groups`` or ``denied_terms`` categories. ``within`` bounds how many words may
    separate the terms (within one field); without it, the terms may be anywhere in the row's text
    that reaches the video (prompt, title, caption, call to action), never the negative prompt.
    """

    all_of: list[str] = Field(min_length=2)
    within: int | None = Field(None, ge=0)
    why: str = ""


class PromptPolicy(_Strict):
    """What the prompt gate checks in each catalog text field."""

    fields: dict[str, list[Check]] = Field(
        default_factory=lambda: {"prompt": ["terms", "names", "pii", "classifier", "length"]}
    )
    denied_terms: dict[str, list[str]] = Field(default_factory=dict)
    # Vocabulary that blocks only in a combination rule. The built-in groups (zero_tolerance.yaml)
    # only grow: a policy's list for one of them is added to the built-in one.
    term_groups: dict[str, list[str]] = Field(default_factory=dict)
    combinations: dict[str, CombinationRule] = Field(default_factory=dict)
    protected_names: dict[str, list[str]] = Field(default_factory=dict)
    # Phrases in which a denied term is ordinary copy ("nude lipstick"): a denied term or a term of
    # the policy's combination rules inside one does not count (never for the zero-tolerance rules).
    allowed_phrases: list[str] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=lambda: list(PII_KINDS))
    allowed_domains: list[str] = Field(default_factory=list)
    limits: dict[str, LengthLimit] = Field(default_factory=dict)
    classifier: ClassifierPolicy = Field(default_factory=ClassifierPolicy)

    @field_validator("fields", "limits")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(PROMPT_FIELDS))
        if unknown:
            raise ValueError(f"unknown catalog field(s) {unknown}: use {', '.join(PROMPT_FIELDS)}")
        return value

    @model_validator(mode="after")
    def _known_groups(self) -> PromptPolicy:
        builtin = zero_tolerance()
        for name, rule in self.combinations.items():
            if name in builtin.combinations:
                raise ValueError(
                    f"combinations.{name} is built in and cannot be replaced or removed: add terms to its groups "
                    f"({', '.join(builtin.combinations[name].all_of)}) under term_groups instead"
                )
            known = {*self.term_groups, *self.denied_terms, *builtin.term_groups}
            unknown = [g for g in rule.all_of if g not in known]
            if unknown:
                raise ValueError(
                    f"combinations.{name} names unknown group(s) {unknown}: define them under term_groups "
                    "or denied_terms"
                )
        return self

    @field_validator("pii")
    @classmethod
    def _known_pii(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PII_KINDS))
        if unknown:
            raise ValueError(f"unknown PII kind(s) {unknown}: use {', '.join(PII_KINDS)}")
        return value


class SamplePolicy(_Strict):
    """Which frames the detector sees: every ``stride``-th, at most ``max_frames`` spread evenly."""

    stride: int = Field(8, ge=1)
    max_frames: int = Field(8, ge=1, le=1000)


class QCPolicy(_Strict):
    """Technical quality checks over every frame (luma values on the 0-255 scale)."""

    max_nan_fraction: float = Field(0.0, ge=0.0, le=1.0)
    black_luma: float = Field(16.0, ge=0.0, le=255.0)
    max_black_fraction: float = Field(0.5, ge=0.0, le=1.0)
    constant_std: float = Field(1.0, ge=0.0)
    max_constant_fraction: float = Field(0.5, ge=0.0, le=1.0)
    frozen_diff: float = Field(0.3, ge=0.0)
    max_frozen_fraction: float = Field(0.9, ge=0.0, le=1.0)
    flicker_luma: float = Field(24.0, ge=0.0)
    max_flicker_fraction: float = Field(0.25, ge=0.0, le=1.0)


class FramePolicy(_Strict):
    """What the frame gate holds back: detector labels above their thresholds, and failed QC."""

    sample: SamplePolicy = Field(default_factory=SamplePolicy)
    detector: str = "nudenet-320n"
    thresholds: dict[str, float] = Field(default_factory=dict)
    qc: QCPolicy = Field(default_factory=QCPolicy)

    @field_validator("thresholds")
    @classmethod
    def _scores(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 < v <= 1.0}
        if bad:
            raise ValueError(f"thresholds must be scores in (0, 1]: {bad}")
        return value


class Policy(_Strict):
    """One safety policy: the prompt gate's rules and the frame gate's thresholds."""

    name: str
    source: str = ""  # the file it came from (the last one, for extended policies)
    prompt: PromptPolicy = Field(default_factory=PromptPolicy)
    frames: FramePolicy = Field(default_factory=FramePolicy)

    @property
    def digest(self) -> str:
        """Short hash of the effective rules, recorded with every score so a verdict can be traced."""
        # The built-in zero-tolerance rules are part of every policy's effective rules.
        data = {**self.model_dump(exclude={"source"}), "zero_tolerance": zero_tolerance().model_dump()}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class ZeroTolerance(_Strict):
    """The built-in combination rules no policy can replace or remove, and their vocabulary."""

    term_groups: dict[str, list[str]]
    combinations: dict[str, CombinationRule]


@functools.cache
def zero_tolerance() -> ZeroTolerance:
    """The shipped zero-tolerance rules (moviegen/data/zero_tolerance.yaml), read once."""
    path = Path(str(resources.files("moviegen") / "data" / "zero_tolerance.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups = {name: [str(t) for t in terms] for name, terms in data["term_groups"].items()}
    # Ages under 18, as digits and as words: "a 14 year old", "12yo", "a twelve-year-old".
    ages = [str(n) for n in range(1, 18)] + _AGE_WORDS
    for age in ages:
        groups["minors"] += [f"{age} year old", f"{age} years old", f"{age} yo", f"{age}yo", f"{age} yr old"]
    return ZeroTolerance(term_groups=groups, combinations=data["combinations"])


_AGE_WORDS = [
    *("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
    *("thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
]


def default_policy_path() -> Path:
    """The built-in default policy shipped inside the package."""
    return Path(str(resources.files("moviegen") / "data" / "policy.yaml"))


def load_policy(path: str | Path | None = None) -> Policy:
    """Read a policy file (``None`` or ``"default"``: the built-in one), resolving ``extends``.

    Raises PolicyError naming the file and the key when the policy is not valid.
    """
    location = default_policy_path() if path in (None, DEFAULT_POLICY) else Path(path)
    data = _resolve(location, seen=())
    try:
        return Policy(**{**data, "source": str(location)})
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise PolicyError(f"invalid safety policy {location}:\n" + "\n".join(lines)) from None


def _resolve(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise PolicyError(f"safety policy {path} does not exist: pass an existing YAML file or 'default'")
    if path.resolve() in seen:
        raise PolicyError(f"safety policy {path} extends itself (through {', '.join(map(str, seen))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"safety policy {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"safety policy {path} must hold a mapping, not {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = default_policy_path() if parent == DEFAULT_POLICY else (path.parent / str(parent))
    base = _resolve(parent_path, (*seen, path.resolve()))
    return _merge(base, data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; lists and values in ``override`` replace those in ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class PolicySet:
    """The policy for each campaign of a run: one default and optional per-campaign files."""

    def __init__(self, default: Policy, by_campaign: dict[str, Policy] | None = None) -> None:
        self.default = default
        self.by_campaign = dict(by_campaign or {})

    def for_campaign(self, campaign_id: str) -> Policy:
        return self.by_campaign.get(campaign_id, self.default)

    def all(self) -> list[Policy]:
        return [self.default, *self.by_campaign.values()]


def load_policies(policy: str | Path | None = None, campaign_policies: dict[str, str] | None = None) -> PolicySet:
    """Load the run's default policy and each campaign's own, failing early on any bad file."""
    cache: dict[str, Policy] = {}

    def load(path: str | Path | None) -> Policy:
        key = str(path)
        if key not in cache:
            cache[key] = load_policy(path)
        return cache[key]

    return PolicySet(load(policy), {cid: load(p) for cid, p in (campaign_policies or {}).items()})
