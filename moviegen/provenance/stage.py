"""The two provenance calls of the render-and-publish stage: label and sign, then check before publishing.

render (visible label drawn) -> watermark -> encode -> add_provenance -> delivery checks
    (preset, watermark, provenance_violations) -> publish
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviegen.config import ProvenanceSettings
from moviegen.provenance.common import TRAINED_ALGORITHMIC_MEDIA
from moviegen.provenance.credentials import (
    ACCEPTED_STATES,
    NO_CREDENTIALS,
    TRAINING_MINING_USES,
    TRUSTED,
    ProvenanceFacts,
    read_credentials,
    sign_credentials,
)
from moviegen.provenance.metadata import read_label_metadata, write_label_metadata
from moviegen.provenance.signer import SigningIdentity


def add_provenance(
    path: Path,
    facts: ProvenanceFacts,
    settings: ProvenanceSettings | None = None,
    identity: SigningIdentity | None = None,
) -> Path:
    """Write the IPTC label metadata, then sign the C2PA manifest: the last two writes to a finished rendition.

    ``identity``: the signer loaded once for the run (``load_signing_identity``); default: load it now.
    Each step is atomic; nothing may change the file afterwards (the signature covers every byte).
    """
    write_label_metadata(path, facts, settings)
    return sign_credentials(path, facts, settings, identity)


@dataclass(frozen=True)
class ProvenanceCheck:
    """What a finished rendition carries (C2PA credentials, XMP label) and what keeps it from being published."""

    credentials: dict[str, Any]
    label: dict[str, Any]
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def check_provenance(path: Path, settings: ProvenanceSettings | None = None) -> ProvenanceCheck:
    """Read a rendition's credentials and label metadata and judge them (the delivery gate's provenance part).

    Refuses a file without valid Content Credentials (Trusted ones when ``provenance.require_trusted``),
    whose manifest does not declare ``trainedAlgorithmicMedia`` or forbid training, or whose XMP lacks
    the IPTC digital source type.
    """
    settings = settings or ProvenanceSettings()
    problems = []
    credentials = read_credentials(path, settings)
    state = credentials["state"]
    if state == NO_CREDENTIALS:
        problems.append("no C2PA Content Credentials: sign the rendition (add_provenance) before publishing")
    elif state not in ACCEPTED_STATES:
        codes = ", ".join(credentials["failures"]) or "no detail"
        problems.append(f"C2PA Content Credentials are {state} ({codes}): the file changed after signing")
    else:
        if settings.require_trusted and state != TRUSTED:
            problems.append(
                "C2PA Content Credentials are Valid but not Trusted: the signing certificate does not chain to "
                "any of provenance.trust_anchors"
            )
        if credentials["digital_source_type"] != TRAINED_ALGORITHMIC_MEDIA:
            problems.append(
                f"the C2PA manifest declares digital source type {credentials['digital_source_type']}, "
                f"not {TRAINED_ALGORITHMIC_MEDIA}"
            )
        training = credentials["training_mining"] or {}
        allowed = [use for use in TRAINING_MINING_USES if training.get(use) != "notAllowed"]
        if allowed:
            problems.append(f"the C2PA manifest does not forbid {', '.join(allowed)}")
    label = read_label_metadata(path)
    if label["digital_source_type"] != TRAINED_ALGORITHMIC_MEDIA:
        problems.append(
            "the XMP metadata lacks the IPTC digital source type trainedAlgorithmicMedia: write it "
            "(add_provenance) before signing"
        )
    return ProvenanceCheck(credentials, label, problems)


def provenance_violations(path: Path, settings: ProvenanceSettings | None = None) -> list[str]:
    """What keeps a rendition from being published on provenance grounds (empty when it may go)."""
    return check_provenance(path, settings).violations
