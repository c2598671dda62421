"""Safety gates: a prompt gate before generation, a frame gate after it, and quarantine.

    catalog row -> [prompt gate: policy terms, protected names, PII, length, classifier]
      -> generate -> [frame gate: QC (NaN, black, constant, frozen, flicker) + detector]
      -> render and publish, or quarantine/<campaign_id>/<clip_id>/ with the rule and scores

Policies are YAML files (``load_policy``); the detector sits behind ``FrameDetector`` so another
one can replace NudeNet's (whose model is AGPL-3.0). Every decision's scores go to ``scores/``.
"""

from moviegen.safety.detector import (
    DetectorError,
    FrameDetector,
    NudeNetDetector,
    get_detector,
    register_detector,
)
from moviegen.safety.frames import GateResult, check_clip, check_master, prepare_detector, sample_indices
from moviegen.safety.policy import (
    Policy,
    PolicyError,
    PolicySet,
    default_policy_path,
    load_policies,
    load_policy,
)
from moviegen.safety.prompt import PromptGate, PromptScreening, prompt_gate, screen_catalog
from moviegen.safety.quarantine import SCORES_SCHEMA, quarantine_clip, record_scores, score_row
from moviegen.safety.verdict import PromptVerdict

__all__ = [
    "SCORES_SCHEMA",
    "DetectorError",
    "FrameDetector",
    "GateResult",
    "NudeNetDetector",
    "Policy",
    "PolicyError",
    "PolicySet",
    "PromptGate",
    "PromptScreening",
    "PromptVerdict",
    "check_clip",
    "check_master",
    "default_policy_path",
    "get_detector",
    "load_policies",
    "load_policy",
    "prepare_detector",
    "prompt_gate",
    "quarantine_clip",
    "record_scores",
    "register_detector",
    "sample_indices",
    "score_row",
    "screen_catalog",
]
