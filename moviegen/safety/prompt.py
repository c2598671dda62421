"""The prompt gate: policy rules plus a shipped classifier over a row's text, before any generation.

A blocked row never reaches the model. Each reason becomes a Problem with stage ``prompt``, the
field as its column, a rule (``denied_term``, ``combination_<name>``, ``protected_name``,
``pii_<kind>``, ``too_long``, ``too_short``, ``classifier``; with a moderator, ``moderator`` and
``moderator_unavailable``) and a message that says what to change and quotes the words that
triggered it. Every row's classifier scores are kept, blocked or not, so a reviewer can see why a
row passed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from moviegen.catalog.check import CatalogValidation
from moviegen.safety.moderator import Moderation
from moviegen.safety.policy import CombinationRule, Policy, PolicySet, video_texts, zero_tolerance
from moviegen.safety.text import Occurrence, TermHit, TermIndex, canonical, find_pii
from moviegen.safety.verdict import Finding, PromptVerdict
from moviegen.spec import ClipSpec

CLASSIFIER = "alt-profanity-check"
# Denied-term categories no negation ("no", "without") or allowed phrase can excuse.
ZERO_TOLERANCE_CATEGORIES = frozenset({"minors_sexual"})
_PII_LABELS = {
    "email": "an e-mail address",
    "phone": "a phone number",
    "street_address": "a street address",
    "url": "a URL",
}


_classifier_lock = threading.Lock()


def classifier_scores(texts: Sequence[str]) -> list[float]:
    """alt-profanity-check's probability that each text is offensive (one batched call)."""
    if not texts:
        return []
    with _classifier_lock:  # the first import loads the model; scikit-learn is not re-entrant here
        from profanity_check import predict_prob

        return [float(p) for p in predict_prob(list(texts))]


class PromptGate:
    """A policy's prompt rules compiled once: term and name indexes, PII kinds, limits, classifier."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        rules = policy.prompt
        self.terms = TermIndex(rules.denied_terms)
        self.names = TermIndex(rules.protected_names)
        self.allowed = TermIndex({"allowed": rules.allowed_phrases})
        builtin = zero_tolerance()
        groups = {**rules.denied_terms, **rules.term_groups}
        for name, terms in builtin.term_groups.items():  # built-in groups only grow
            groups[name] = [*terms, *rules.term_groups.get(name, [])]
        # name -> (rule, zero tolerance?): the built-in rules first, then the policy's own.
        self.combinations: dict[str, tuple[CombinationRule, bool]] = {
            **{name: (rule, True) for name, rule in builtin.combinations.items()},
            **{name: (rule, False) for name, rule in rules.combinations.items()},
        }
        wanted = {g for rule, _ in self.combinations.values() for g in rule.all_of}
        self.groups = TermIndex({g: groups[g] for g in sorted(wanted)})

    def fields_for(self, spec: ClipSpec) -> dict[str, tuple[str, list[str]]]:
        """The fields to check for a row: name -> (text, checks).

        The negative prompt is checked like the prompt when guidance is below 1: there
        classifier-free guidance moves towards the negative prompt instead of away from it.
        """
        checks = dict(self.policy.prompt.fields)
        if spec.guidance is not None and spec.guidance < 1 and "prompt" in checks:
            checks.setdefault("negative_prompt", checks["prompt"])
        texts = {
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
            "caption": spec.caption,
            "hashtags": " ".join(spec.hashtags),
            "audio_prompt": spec.audio_prompt,
            "title": spec.title,
            "cta": spec.cta,
        }
        for k, shot in enumerate(spec.shots):  # each shot's text is checked as the prompt is
            for name in ("prompt", "negative_prompt"):
                if name in checks:
                    checks[f"shots[{k}].{name}"] = checks[name]
                    texts[f"shots[{k}].{name}"] = getattr(shot, name)
        return {name: (texts[name], list(c)) for name, c in checks.items() if texts[name].strip()}

    def check(self, specs: Sequence[ClipSpec]) -> list[PromptVerdict]:
        """Check rows (the classifier runs once for all of them)."""
        fields = [self.fields_for(spec) for spec in specs]
        # The classifier reads each text as written and as normalized ("f u c k" -> "fuck").
        wanted = [(i, name, text) for i, f in enumerate(fields) for name, (text, c) in f.items() if "classifier" in c]
        raw = classifier_scores([t for _, _, t in wanted] + [canonical(t) for _, _, t in wanted])
        classifier: list[dict[str, float]] = [{} for _ in specs]
        for k, (i, name, _) in enumerate(wanted):
            classifier[i][name] = round(max(raw[k], raw[k + len(wanted)]), 4)
        return [self._verdict(spec, f, scores) for spec, f, scores in zip(specs, fields, classifier, strict=True)]

    def _verdict(
        self, spec: ClipSpec, fields: dict[str, tuple[str, list[str]]], classifier: dict[str, float]
    ) -> PromptVerdict:
        findings: list[Finding] = []
        rules = self.policy.prompt
        for name, (text, checks) in fields.items():
            if "length" in checks and name in rules.limits:
                findings += _length(name, text, rules.limits[name])
            if "terms" in checks:
                for hit in self.denied(text):
                    read = "" if canonical(hit.matched) == canonical(hit.term) else f", read as {hit.term!r}"
                    findings.append(
                        Finding(
                            name,
                            "denied_term",
                            f"{name} contains {hit.matched!r}{read}, a denied term (category {hit.group}): "
                            "remove it or rephrase",
                            {"category": hit.group, "term": hit.term, "matched": hit.matched},
                        )
                    )
            if "names" in checks:
                for hit in self.names.find(text):
                    findings.append(
                        Finding(
                            name,
                            "protected_name",
                            f"{name} names {hit.term!r} ({hit.group.replace('_', ' ')}): videos must not show "
                            "real people or other brands; remove the name",
                            {"list": hit.group, "name": hit.term, "matched": hit.matched},
                        )
                    )
            if "pii" in checks:
                for pii in find_pii(text, rules.pii, rules.allowed_domains):
                    findings.append(
                        Finding(
                            name,
                            f"pii_{pii.kind}",
                            f"{name} contains {_PII_LABELS[pii.kind]} ({pii.matched!r}): remove personal data"
                            + (" or add the domain to allowed_domains" if pii.kind in ("url", "email") else ""),
                            {"kind": pii.kind, "matched": pii.matched},
                        )
                    )
            if "classifier" in checks and classifier.get(name, 0.0) >= rules.classifier.threshold:
                findings.append(
                    Finding(
                        name,
                        "classifier",
                        f"{name} reads as offensive ({CLASSIFIER} scored {classifier[name]:.2f}, "
                        f"policy limit {rules.classifier.threshold:g}): rephrase it",
                        {"classifier": CLASSIFIER, "score": classifier[name], "threshold": rules.classifier.threshold},
                    )
                )
        findings = self.combination_findings(spec) + findings
        scores = {"classifier": classifier, "excluded": self.excluded(spec)}
        return PromptVerdict(spec, self.policy, _first_per_rule(findings), scores)

    def excluded(self, spec: ClipSpec) -> list[str]:
        """The denied terms the row's video text names only to exclude them ("..., no gore"), which
        the moderator is not shown (a bag-of-meaning encoder reads "no nudity" as nudity)."""
        found = {
            occ.hit.matched
            for text in video_texts(spec).values()
            for occ in self.terms.occurrences(text)
            if occ.hit.negated and occ.hit.group not in ZERO_TOLERANCE_CATEGORIES
        }
        return sorted(found)

    def allowed_phrases(self, text: str) -> list[Occurrence]:
        """Where the policy's allowed phrases occur in a text ("nude lipstick")."""
        return self.allowed.occurrences(text) if len(self.allowed) else []

    def denied(self, text: str) -> list[TermHit]:
        """The denied terms a text uses, each once: not those it only excludes ("no gore") or that
        stand inside an allowed phrase ("nude lipstick"), except in zero-tolerance categories."""
        allowed = self.allowed_phrases(text)
        hits: dict[tuple[str, str], TermHit] = {}
        for occ in self.terms.occurrences(text):
            hit = occ.hit
            strict = hit.group in ZERO_TOLERANCE_CATEGORIES
            if not strict and (hit.negated or _inside_any(occ, allowed)):
                continue
            hits.setdefault((hit.group, hit.term), hit)
        return list(hits.values())

    def combination_findings(self, spec: ClipSpec) -> list[Finding]:
        """Findings of the combination rules over the row's text that reaches the video."""
        texts = video_texts(spec)
        found = {name: self.groups.occurrences(text) for name, text in texts.items()}
        # A policy's own rules skip terms inside an allowed phrase ("killed it on stage" is no
        # attack); the zero-tolerance rules never do.
        allowed = {name: self.allowed_phrases(text) for name, text in texts.items()}
        ordinary = {name: [o for o in occs if not _inside_any(o, allowed[name])] for name, occs in found.items()}
        findings = []
        for name, (rule, strict) in self.combinations.items():
            match = _combination(rule, found if strict else ordinary)
            if match is None:
                continue
            words = " with ".join(f"{occ.hit.matched!r} ({occ.hit.group}, {where})" for where, occ in match)
            kind = "zero tolerance: no policy can allow it" if strict else f"policy {self.policy.name}"
            findings.append(
                Finding(
                    match[0][0],
                    f"combination_{name}",
                    f"the row's text combines {words}: {rule.why or name} (rule {name}, {kind}); remove or rephrase it",
                    {
                        "combination": name,
                        "zero_tolerance": strict,
                        "terms": [{"field": w, "group": o.hit.group, "matched": o.hit.matched} for w, o in match],
                        "matched": " + ".join(o.hit.matched for _, o in match),
                    },
                )
            )
        return findings


def _inside_any(inner: Occurrence, outers: list[Occurrence]) -> bool:
    """Whether ``inner`` lies within one of ``outers`` (same evasion variant)."""
    return any(o.variant == inner.variant and o.start <= inner.start and inner.end <= o.end for o in outers)


def _combination(rule: CombinationRule, found: dict[str, list[Occurrence]]) -> list[tuple[str, Occurrence]] | None:
    """One occurrence of each of the rule's groups (field, occurrence), or None when the rule does not match.

    Without ``within`` the occurrences may be in any field; with it, all in one field and variant,
    each at most ``within`` words from the first group's.
    """
    if rule.within is None:
        picked = []
        for group in rule.all_of:
            first = next(((f, o) for f, occs in found.items() for o in occs if o.hit.group == group), None)
            if first is None:
                return None
            picked.append(first)
        return picked
    for field_name, occs in found.items():
        for anchor in (o for o in occs if o.hit.group == rule.all_of[0]):
            picked = [(field_name, anchor)]
            for group in rule.all_of[1:]:
                near = next((o for o in occs if o.hit.group == group and _gap(anchor, o) <= rule.within), None)
                if near is None:
                    break
                picked.append((field_name, near))
            else:
                return picked
    return None


def _gap(a: Occurrence, b: Occurrence) -> int:
    """Words between two occurrences of one variant (a large number across variants)."""
    if a.variant != b.variant:
        return 1 << 30
    return max(b.start - a.end, a.start - b.end, 0)


def _length(name: str, text: str, limit: Any) -> list[Finding]:
    words = len(text.split())
    if limit.max_chars is not None and len(text) > limit.max_chars:
        return [
            Finding(
                name,
                "too_long",
                f"{name} has {len(text)} characters; the policy allows {limit.max_chars}: shorten it",
                {"chars": len(text), "max_chars": limit.max_chars},
            )
        ]
    if words < limit.min_words:
        return [
            Finding(
                name,
                "too_short",
                f"{name} has {words} word(s); the policy wants at least {limit.min_words}: describe the scene",
                {"words": words, "min_words": limit.min_words},
            )
        ]
    return []


def _first_per_rule(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (field, rule), the rest listed in its details: one Problem per thing to fix."""
    kept: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.field, f.rule)
        if key not in kept:
            kept[key] = f
        else:
            first = kept[key]
            also = [*first.details.get("also", []), f.details.get("matched", "")]
            kept[key] = replace(first, details={**first.details, "also": also})
    return list(kept.values())


_gates: dict[str, PromptGate] = {}
_gates_lock = threading.Lock()


def prompt_gate(policy: Policy) -> PromptGate:
    """The compiled gate for a policy, built once per process."""
    key = f"{policy.digest}"
    with _gates_lock:
        if key not in _gates:
            _gates[key] = PromptGate(policy)
        return _gates[key]


@dataclass
class PromptScreening:
    """A catalog validation after the prompt gate, and every row's verdict."""

    validation: CatalogValidation
    verdicts: list[PromptVerdict]
    moderator: dict[str, Any] | None = None  # the moderator's summary (model, ran, error), when one is set


def screen_catalog(
    validation: CatalogValidation, policies: PolicySet, moderation: Moderation | None = None
) -> PromptScreening:
    """Run the prompt gate over a validation's rows; blocked rows move from ``specs`` to ``problems``.

    ``moderation`` (a ``moviegen.safety.moderator.Moderation``) adds the model's second opinion on
    every row the rules pass.
    """
    by_policy: dict[str, list[ClipSpec]] = {}
    for spec in validation.specs:
        by_policy.setdefault(policies.for_campaign(spec.campaign_id).digest, []).append(spec)
    verdicts: dict[int, PromptVerdict] = {}
    for specs in by_policy.values():
        gate = prompt_gate(policies.for_campaign(specs[0].campaign_id))
        for verdict in gate.check(specs):
            verdicts[verdict.spec.row] = verdict
    ordered = [verdicts[spec.row] for spec in validation.specs]
    if moderation is not None:
        ordered = moderation.review(ordered)
    problems = [*validation.problems, *(p for v in ordered for p in v.problems())]
    problems.sort(key=lambda p: (p.row if p.row is not None else -1, p.column or ""))
    screened = CatalogValidation(rows=validation.rows, specs=[v.spec for v in ordered if v.passed], problems=problems)
    return PromptScreening(screened, ordered, moderation.summary() if moderation is not None else None)
