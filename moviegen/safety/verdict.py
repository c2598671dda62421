"""The prompt gate's records: one finding (why a field blocks its row) and one row's verdict.

Their own module so that the gate (safety.prompt) and its moderator (safety.moderator) both import
them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moviegen.safety.policy import Policy
from moviegen.spec import ClipSpec, Problem


@dataclass(frozen=True)
class Finding:
    """One reason a field blocks its row."""

    field: str
    rule: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptVerdict:
    """The prompt gate's outcome for one row: why it is blocked (nothing when it passes) and its scores."""

    spec: ClipSpec
    policy: Policy
    findings: list[Finding]
    scores: dict[str, Any]

    @property
    def passed(self) -> bool:
        return not self.findings

    def problems(self) -> list[Problem]:
        """The findings as Problems of stage ``prompt`` (the contract of ``moviegen validate``)."""
        spec = self.spec
        return [
            Problem(
                spec.row,
                spec.clip_id,
                f.field,
                "prompt",
                f.rule,
                f.message,
                spec.campaign_id,
                {**f.details, "policy": self.policy.name, "policy_digest": self.policy.digest, "scores": self.scores},
            )
            for f in self.findings
        ]
