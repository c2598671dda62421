"""AI labels and provenance: IPTC label metadata, signed C2PA Content Credentials, disclosure flags.

Problem: a brand publishing AI video must say so three ways: a visible "AI-generated" mark, machine
readable metadata (IPTC digital source type ``trainedAlgorithmicMedia``) and signed Content
Credentials (C2PA) that platforms read to show their own AI labels, plus the per-platform flags an
uploader sets. The prompt is confidential; the signing key is secret.

Solution, per rendition, in this order:

    identity = load_signing_identity(settings.provenance)  # once per run: bad configuration fails early
    layer = label_layer(channel, (width, height), settings.provenance)  # render draws it last (None: no label)
    ... render, watermark, encode ...
    facts = provenance_facts(clip, channel, watermark_payload)
    add_provenance(video, facts, settings.provenance, identity)  # XMP, then the C2PA signature: last writes
    problems = provenance_violations(video, settings.provenance)  # delivery gate
    sidecar["disclosure"] = disclosure_flags(channel, settings.provenance)

``read_credentials`` and ``read_label_metadata`` report what a file carries (``moviegen verify``).
``load_signing_identity`` checks the signing configuration up front.
"""

from moviegen.provenance.common import TRAINED_ALGORITHMIC_MEDIA, ProvenanceError, generator
from moviegen.provenance.credentials import (
    INVALID,
    NO_CREDENTIALS,
    TRUSTED,
    VALID,
    ProvenanceFacts,
    build_manifest,
    check_trust_anchors,
    prompt_sha256,
    provenance_facts,
    read_credentials,
    sign_credentials,
)
from moviegen.provenance.disclosure import LabelSpec, disclosure_flags, label_for, label_layer, platforms
from moviegen.provenance.metadata import read_label_metadata, write_label_metadata
from moviegen.provenance.signer import SigningIdentity, ensure_dev_signer, load_signing_identity
from moviegen.provenance.stage import ProvenanceCheck, add_provenance, check_provenance, provenance_violations

__all__ = [
    "INVALID",
    "NO_CREDENTIALS",
    "TRAINED_ALGORITHMIC_MEDIA",
    "TRUSTED",
    "VALID",
    "LabelSpec",
    "ProvenanceCheck",
    "ProvenanceError",
    "ProvenanceFacts",
    "SigningIdentity",
    "add_provenance",
    "build_manifest",
    "check_provenance",
    "check_trust_anchors",
    "disclosure_flags",
    "ensure_dev_signer",
    "generator",
    "label_for",
    "label_layer",
    "load_signing_identity",
    "platforms",
    "prompt_sha256",
    "provenance_facts",
    "provenance_violations",
    "read_credentials",
    "read_label_metadata",
    "sign_credentials",
    "write_label_metadata",
]
