"""C2PA Content Credentials: build the manifest, sign it into the MP4, read and validate it back.

Problem: platforms (Meta's "AI info", TikTok's AI-generated label, YouTube's synthetic-media
disclosure, LinkedIn's CR icon) read C2PA Content Credentials; a brand must publish AI video with a
signed manifest that says it was generated, by what, and that it may not be used for training,
without revealing the confidential prompt.

Solution: ``build_manifest`` makes a manifest with a ``c2pa.created`` action carrying the IPTC
digital source type ``trainedAlgorithmicMedia``, a ``cawg.training-mining`` assertion with every
use ``notAllowed``, moviegen as claim generator and an ``org.moviegen.generation`` assertion with
the model id and SHA-256 hashes of the prompts (never the text). ``sign_credentials`` signs it into
the file with c2pa-python, as the last write before publishing. ``read_credentials`` reports the
validation state: ``Trusted`` (chains to a configured trust anchor), ``Valid``, ``Invalid``, or
``no credentials``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import c2pa

from moviegen.config import ProvenanceSettings
from moviegen.provenance.common import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceError,
    replacing,
)
from moviegen.provenance.signer import SigningIdentity, load_signing_identity

if TYPE_CHECKING:
    from moviegen.spec import ClipPlan

GENERATION_LABEL = "org.moviegen.generation"
TRAINING_MINING_LABEL = "cawg.training-mining"
# The four uses the CAWG training and data mining assertion defines; moviegen forbids them all.
TRAINING_MINING_USES = ("cawg.ai_generative_training", "cawg.ai_training", "cawg.ai_inference", "cawg.data_mining")

TRUSTED, VALID, INVALID, NO_CREDENTIALS = "Trusted", "Valid", "Invalid", "no credentials"
ACCEPTED_STATES = (VALID, TRUSTED)

MP4 = "video/mp4"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvenanceFacts:
    """What the label and the manifest say about one rendition. Holds hashes of the prompts, never their text."""

    campaign_id: str
    clip_id: str
    channel: str
    model: str  # public model id: hub id, registry source, or a local folder's name
    model_revision: str | None
    prompt_sha256: str
    negative_prompt_sha256: str | None
    clip_key: str
    watermark_payload: str | None = None  # hex, when the invisible watermark is embedded
    loras: tuple[dict[str, Any], ...] = ()  # LoRA adapters: file name, content hash, scale


def prompt_sha256(prompt: str) -> str:
    """SHA-256 (hex) of a prompt's UTF-8 text: proves which prompt made a video without revealing it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def provenance_facts(clip: ClipPlan, channel: str, watermark_payload: str | None = None) -> ProvenanceFacts:
    """The facts for one rendition of a planned clip."""
    spec = clip.spec
    return ProvenanceFacts(
        campaign_id=spec.campaign_id,
        clip_id=spec.clip_id,
        channel=channel,
        # info.source, not location: a local folder's full path would leak the machine's layout.
        model=clip.model.info.source,
        model_revision=clip.model_revision or None,
        prompt_sha256=prompt_sha256(spec.prompt),
        negative_prompt_sha256=prompt_sha256(spec.negative_prompt) if spec.negative_prompt else None,
        clip_key=clip.clip_key,
        watermark_payload=watermark_payload,
        loras=tuple(clip.loras_record()),
    )


def build_manifest(facts: ProvenanceFacts, title: str) -> dict[str, Any]:
    """The C2PA manifest definition for one rendition (what ``sign_credentials`` signs).

    Campaign and clip ids stay out: they can name unannounced products. ``clip_key`` links the
    file back to its manifest row.
    """
    generation = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "model": facts.model,
        "model_revision": facts.model_revision,
        "prompt_sha256": facts.prompt_sha256,
        "negative_prompt_sha256": facts.negative_prompt_sha256,
        "clip_key": facts.clip_key,
        "watermark_payload": facts.watermark_payload,
    }
    if facts.loras:  # next to the model: the adapters changed what it made
        generation["loras"] = list(facts.loras)
    return {
        "claim_generator_info": [{"name": GENERATOR_NAME, "version": GENERATOR_VERSION}],
        "title": title,
        "format": MP4,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
                            "description": f"Generated by the text-to-video model {facts.model}",
                        }
                    ]
                },
            },
            {
                "label": TRAINING_MINING_LABEL,
                "data": {"entries": {use: {"use": "notAllowed"} for use in TRAINING_MINING_USES}},
            },
            {"label": GENERATION_LABEL, "data": {k: v for k, v in generation.items() if v is not None}},
        ],
    }


def sign_credentials(
    path: Path,
    facts: ProvenanceFacts,
    settings: ProvenanceSettings | None = None,
    identity: SigningIdentity | None = None,
) -> Path:
    """Sign a C2PA manifest into the MP4 at ``path``; atomic (temporary copy, then rename).

    ``identity`` is the signer a run loaded once at its start; without it the configured one is
    loaded now. This must be the last write to the file: any later change, metadata included,
    makes the credentials Invalid.
    """
    settings = settings or ProvenanceSettings()
    path = Path(path)
    identity = identity or load_signing_identity(settings)
    manifest = build_manifest(facts, title=path.name)
    info = c2pa.C2paSignerInfo(
        identity.algorithm, identity.cert_chain_pem, identity.private_key_pem, identity.timestamp_url
    )
    try:
        with (
            replacing(path) as tmp,
            c2pa.Context(_c2pa_settings(settings)) as context,
            c2pa.Signer.from_info(info) as signer,
            c2pa.Builder(manifest, context) as builder,
            open(path, "rb") as source,
            open(tmp, "w+b") as dest,
        ):
            builder.sign(signer, MP4, source, dest)
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"signing Content Credentials into {path.name} failed: {exc}") from None
    log.debug("signed %s as %s (%s, from %s)", path.name, identity.subject, identity.algorithm, identity.source)
    return path


def read_credentials(path: Path, settings: ProvenanceSettings | None = None) -> dict[str, Any]:
    """Read and validate the C2PA manifest in ``path``.

    Returns ``state`` (``Trusted`` when the signer chains to one of ``provenance.trust_anchors``,
    ``Valid``, ``Invalid``, or ``no credentials``), ``digital_source_type``, ``generator``,
    ``model``, ``prompt_sha256``, ``training_mining`` (use -> choice), ``signer`` and ``failures``
    (the validator's failure codes). Fields the file does not carry are None.
    """
    settings = settings or ProvenanceSettings()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    result: dict[str, Any] = {
        "state": NO_CREDENTIALS,
        "digital_source_type": None,
        "generator": None,
        "model": None,
        "model_revision": None,
        "loras": None,
        "prompt_sha256": None,
        "clip_key": None,
        "training_mining": None,
        "signer": None,
        "failures": [],
    }
    try:
        with c2pa.Context(_c2pa_settings(settings)) as context, open(path, "rb") as stream:
            if stream.read(8)[4:] != b"ftyp":
                return result  # not ISO BMFF (a Matroska master, say): it cannot carry a C2PA manifest here
            stream.seek(0)
            reader = c2pa.Reader.try_create(MP4, stream, None, context)
            if reader is None:
                return result
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        return {**result, "state": INVALID, "failures": [f"unreadable manifest: {exc}"]}
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    result.update(_manifest_fields(manifest))
    failures = (store.get("validation_results") or {}).get("activeManifest", {}).get("failure", [])
    result["failures"] = [f["code"] for f in failures]
    result["state"] = state if state in (TRUSTED, VALID) else INVALID
    return result


def _manifest_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    info = (manifest.get("claim_generator_info") or [{}])[0]
    if info.get("name"):
        fields["generator"] = f"{info['name']} {info.get('version', '')}".strip()
    if manifest.get("signature_info"):
        sig = manifest["signature_info"]
        fields["signer"] = {"issuer": sig.get("issuer"), "common_name": sig.get("common_name"), "alg": sig.get("alg")}
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            created = [a for a in data.get("actions", []) if a.get("action") == "c2pa.created"]
            if created:
                fields["digital_source_type"] = created[0].get("digitalSourceType")
        elif label == TRAINING_MINING_LABEL:
            fields["training_mining"] = {use: entry.get("use") for use, entry in data.get("entries", {}).items()}
        elif label == GENERATION_LABEL:
            for key in ("model", "model_revision", "prompt_sha256", "clip_key", "loras"):
                fields[key] = data.get(key)
    return fields


def check_trust_anchors(settings: ProvenanceSettings) -> None:
    """Raise ProvenanceError when a ``provenance.trust_anchors`` file cannot be read: at start-up, not per rendition."""
    _c2pa_settings(settings)


def _c2pa_settings(settings: ProvenanceSettings) -> c2pa.Settings:
    """c2pa-rs settings: offline validation (no OCSP, no remote manifests), trust anchors when configured."""
    config: dict[str, Any] = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
    if settings.trust_anchors:
        anchors = []
        for anchor in settings.trust_anchors:
            try:
                anchors.append(Path(anchor).expanduser().read_text(encoding="ascii"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ProvenanceError(
                    f"cannot read provenance.trust_anchors entry {anchor}: {exc}; list PEM certificate files"
                ) from None
        config["verify"]["verify_trust"] = True
        config["trust"] = {"trust_anchors": "\n".join(anchors)}
    return c2pa.Settings.from_dict(config)
