"""Provenance on real MP4s: IPTC XMP through exiftool, C2PA credentials signed and validated by c2pa-python.

Every test encodes or copies a real H.264 + AAC file and reads it back with the same readers a
platform or ``moviegen verify`` uses; tampering is done on the bytes of the signed file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import c2pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moviegen.config import ConfigError, ProvenanceSettings, load_settings
from moviegen.media import probe, run_ffmpeg
from moviegen.models.registry import resolve_model
from moviegen.provenance import (
    INVALID,
    NO_CREDENTIALS,
    TRAINED_ALGORITHMIC_MEDIA,
    TRUSTED,
    VALID,
    ProvenanceError,
    ProvenanceFacts,
    add_provenance,
    ensure_dev_signer,
    load_signing_identity,
    prompt_sha256,
    provenance_facts,
    provenance_violations,
    read_credentials,
    read_label_metadata,
    sign_credentials,
    write_label_metadata,
)
from moviegen.spec import ClipPlan, ClipSpec, GenerationRequest

PROMPT = "confidential launch teaser: the Aurora X5 phone rising over a glacier at dawn"
NEGATIVE = "competitor logos, blurry"


@pytest.fixture(scope="session")
def plain_mp4(tmp_path_factory) -> Path:
    """A 1 s 320x180 H.264 + AAC MP4 (faststart), like a rendition before provenance."""
    path = tmp_path_factory.mktemp("media") / "plain.mp4"
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "testsrc=size=320x180:rate=15"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart"),
            str(path),
        ]
    )
    return path


@pytest.fixture(scope="session")
def dev_settings(tmp_path_factory) -> ProvenanceSettings:
    """Provenance settings with a development signer shared by the session."""
    return ProvenanceSettings(dev_signer_dir=tmp_path_factory.mktemp("config") / "dev-signer")


@pytest.fixture
def video(plain_mp4: Path, tmp_path: Path) -> Path:
    path = tmp_path / "clip-1.mp4"
    shutil.copy(plain_mp4, path)
    return path


@pytest.fixture(scope="session")
def clip() -> ClipPlan:
    spec = ClipSpec(
        row=0, campaign_id="spring", clip_id="clip-1", prompt=PROMPT, negative_prompt=NEGATIVE, channels=("youtube",)
    )
    request = GenerationRequest(PROMPT, NEGATIVE, seed=1, width=480, height=272, num_frames=17, steps=2, guidance=5.0)
    return ClipPlan(spec=spec, model=resolve_model("tiny-wan"), model_revision="rev-1", request=request, fps=16)


@pytest.fixture(scope="session")
def facts(clip: ClipPlan) -> ProvenanceFacts:
    return provenance_facts(clip, "youtube", watermark_payload="deadbeef")


def signed(video: Path, facts: ProvenanceFacts, settings: ProvenanceSettings) -> Path:
    add_provenance(video, facts, settings)
    return video


def test_label_metadata_is_written_into_xmp_and_read_back(video: Path, facts, dev_settings):
    before = probe(video)
    assert read_label_metadata(video)["digital_source_type"] is None

    write_label_metadata(video, facts, dev_settings)

    label = read_label_metadata(video)
    assert label == {
        "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
        "description": "AI-generated video made with moviegen 0.1.0 from the model moviegen/tiny-wan.",
        "creator_tool": "moviegen 0.1.0",
        "ai_generated": True,
    }
    after = probe(video)
    assert (after.frames, after.width, after.video_codec, after.audio_codec) == (
        before.frames,
        before.width,
        before.video_codec,
        before.audio_codec,
    )
    assert [p.name for p in video.parent.iterdir()] == [video.name]  # no temporary file left behind


def test_metadata_write_failure_leaves_the_file_untouched(tmp_path: Path, facts, dev_settings):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not an MP4 file at all")
    with pytest.raises(ProvenanceError, match=r"writing XMP into broken\.mp4 failed"):
        write_label_metadata(broken, facts, dev_settings)
    assert broken.read_bytes() == b"this is not an MP4 file at all"
    assert [p.name for p in tmp_path.iterdir()] == ["broken.mp4"]


def test_signed_rendition_reads_valid_and_trusted_with_the_dev_anchor(video: Path, facts, dev_settings):
    signed(video, facts, dev_settings)

    credentials = read_credentials(video, dev_settings)
    assert credentials["state"] == VALID
    assert credentials["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert credentials["generator"] == "moviegen 0.1.0"
    assert credentials["model"] == "moviegen/tiny-wan"
    assert credentials["model_revision"] == "rev-1"
    assert credentials["clip_key"] == facts.clip_key
    assert set(credentials["training_mining"].values()) == {"notAllowed"}
    assert len(credentials["training_mining"]) == 4
    assert "NOT FOR PRODUCTION" in credentials["signer"]["common_name"]
    assert provenance_violations(video, dev_settings) == []

    anchored = dev_settings.model_copy(update={"trust_anchors": [dev_settings.dev_signer_dir / "cert.pem"]})
    assert read_credentials(video, anchored)["state"] == TRUSTED
    assert provenance_violations(video, anchored.model_copy(update={"require_trusted": True})) == []
    assert provenance_violations(video, dev_settings.model_copy(update={"require_trusted": True})) == [
        "C2PA Content Credentials are Valid but not Trusted: the signing certificate does not chain to any of "
        "provenance.trust_anchors"
    ]
    # The XMP written before signing is still there and did not break the signature.
    assert read_label_metadata(video)["ai_generated"] is True


def _mdat_payload(data: bytes) -> tuple[int, int]:
    """Offset and size of the top-level mdat box's payload."""
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - offset
        if kind == b"mdat":
            return offset + header, size - header
        offset += size
    raise AssertionError("no mdat box")


def test_flipped_bytes_in_the_media_data_read_invalid(video: Path, facts, dev_settings):
    signed(video, facts, dev_settings)
    data = bytearray(video.read_bytes())
    start, size = _mdat_payload(bytes(data))
    for i in range(start + size // 2, start + size // 2 + 16):
        data[i] ^= 0xFF
    video.write_bytes(bytes(data))

    credentials = read_credentials(video, dev_settings)
    assert credentials["state"] == INVALID
    assert "assertion.bmffHash.mismatch" in credentials["failures"]
    problems = provenance_violations(video, dev_settings)
    assert len(problems) == 1
    assert problems[0].startswith("C2PA Content Credentials are Invalid (")


def test_metadata_edited_after_signing_reads_invalid(video: Path, facts, dev_settings):
    signed(video, facts, dev_settings)
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-dc:Description=not AI at all", str(video)], check=True
    )
    assert read_credentials(video, dev_settings)["state"] == INVALID
    assert provenance_violations(video, dev_settings) != []


def test_file_without_credentials_is_reported_and_refused(video: Path, dev_settings):
    credentials = read_credentials(video, dev_settings)
    assert credentials["state"] == NO_CREDENTIALS
    assert credentials["digital_source_type"] is None and credentials["generator"] is None
    assert provenance_violations(video, dev_settings) == [
        "no C2PA Content Credentials: sign the rendition (add_provenance) before publishing",
        "the XMP metadata lacks the IPTC digital source type trainedAlgorithmicMedia: write it (add_provenance) "
        "before signing",
    ]
    with pytest.raises(FileNotFoundError):
        read_credentials(video.with_name("missing.mp4"), dev_settings)


def test_a_matroska_master_carries_no_credentials(tmp_path: Path, dev_settings):
    """Not ISO BMFF, so no C2PA manifest can be in it: "no credentials", not Invalid (nothing was tampered)."""
    master = tmp_path / "master.mkv"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=128x72:rate=16", "-t", "1", "-c:v", "ffv1", str(master)])
    credentials = read_credentials(master, dev_settings)
    assert (credentials["state"], credentials["failures"]) == (NO_CREDENTIALS, [])


def test_gate_refuses_half_labelled_renditions(plain_mp4: Path, tmp_path: Path, facts, dev_settings):
    only_xmp, only_c2pa = tmp_path / "xmp.mp4", tmp_path / "c2pa.mp4"
    shutil.copy(plain_mp4, only_xmp)
    shutil.copy(plain_mp4, only_c2pa)
    write_label_metadata(only_xmp, facts, dev_settings)
    sign_credentials(only_c2pa, facts, dev_settings)

    assert provenance_violations(only_xmp, dev_settings) == [
        "no C2PA Content Credentials: sign the rendition (add_provenance) before publishing"
    ]
    [problem] = provenance_violations(only_c2pa, dev_settings)
    assert "lacks the IPTC digital source type" in problem


def _manifest_json(path: Path) -> str:
    with c2pa.Reader(str(path)) as reader:
        return reader.json()


def test_manifest_carries_prompt_hashes_never_prompt_text(video: Path, clip: ClipPlan, facts, dev_settings):
    assert PROMPT not in repr(facts) and NEGATIVE not in repr(facts)
    signed(video, facts, dev_settings)

    manifest = _manifest_json(video)
    assert prompt_sha256(PROMPT) in manifest
    assert prompt_sha256(NEGATIVE) in manifest
    assert read_credentials(video, dev_settings)["prompt_sha256"] == prompt_sha256(PROMPT)
    data = video.read_bytes()
    for secret in (PROMPT, NEGATIVE, "Aurora X5", clip.spec.campaign_id):
        assert secret not in manifest
        assert secret.encode() not in data


def test_dev_signer_is_created_once_private_and_c2pa_shaped(tmp_path: Path, caplog):
    settings = ProvenanceSettings(dev_signer_dir=tmp_path / "moviegen" / "dev-signer")
    with caplog.at_level(logging.WARNING, logger="moviegen.provenance"):
        identity = load_signing_identity(settings)
    folder = settings.dev_signer_dir
    assert identity.development and identity.algorithm == "es256"
    assert "DEVELOPMENT certificate" in caplog.text and str(folder) in caplog.text
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    assert "development only" in (folder / "README.txt").read_text()

    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature is True
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"

    first = (folder / "cert.pem").read_bytes()
    ensure_dev_signer(folder)
    assert (folder / "cert.pem").read_bytes() == first
    assert [p.name for p in folder.parent.iterdir()] == ["dev-signer"]


def test_dev_signer_can_be_forbidden(tmp_path: Path):
    settings = ProvenanceSettings(dev_signer_dir=tmp_path / "dev-signer", allow_dev_signer=False)
    with pytest.raises(ProvenanceError, match="allow_dev_signer is false"):
        load_signing_identity(settings)
    assert not settings.dev_signer_dir.exists()


# Production certificates ------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Brand")]
    )


def _usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.fixture(scope="session")
def brand_pki(tmp_path_factory) -> dict[str, Path]:
    """A brand CA (the trust anchor) and a signing certificate it issued, with an encrypted key."""
    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Brand Root CA"))
        .issuer_name(_name("Brand Root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign_certs=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("Brand video signer"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {name: folder / f"{name}.pem" for name in ("root", "chain", "key", "plain_key", "other_key")}
    paths["root"].write_bytes(ca.public_bytes(pem))
    paths["chain"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths["key"].write_bytes(
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"correct horse")
        )
    )
    plain = serialization.NoEncryption()
    paths["plain_key"].write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain))
    other = ec.generate_private_key(ec.SECP256R1())
    paths["other_key"].write_bytes(other.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain))
    for path in paths.values():
        path.chmod(0o600)
    return paths


def _key_body(path: Path) -> list[str]:
    """The base64 lines of a PEM key: what must never show up anywhere."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


def test_production_chain_from_environment_signs_and_is_trusted_by_its_root(
    video: Path, facts, brand_pki, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__CERT_CHAIN", str(brand_pki["chain"]))
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__PRIVATE_KEY", str(brand_pki["key"]))
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__PRIVATE_KEY_PASSWORD", "correct horse")
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__ALLOW_DEV_SIGNER", "false")
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__DEV_SIGNER_DIR", str(tmp_path / "unused"))
    settings = load_settings().provenance
    assert "correct horse" not in repr(settings)

    identity = load_signing_identity(settings)
    assert not identity.development and identity.subject == "O=Brand,CN=Brand video signer"
    signed(video, facts, settings)

    assert not (tmp_path / "unused").exists()
    credentials = read_credentials(video, settings)
    assert credentials["state"] == VALID
    assert credentials["signer"]["common_name"] == "Brand video signer"
    anchored = settings.model_copy(update={"trust_anchors": [brand_pki["root"]], "require_trusted": True})
    assert read_credentials(video, anchored)["state"] == TRUSTED
    assert provenance_violations(video, anchored) == []


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"cert_chain": None}, "provenance.cert_chain .* is not set"),
        ({"private_key": "other_key"}, "does not belong to the first certificate"),
        ({"private_key": "key", "private_key_password": None}, "cannot read the private key from .*key.pem"),
        ({"private_key": "key", "private_key_password": "wrong"}, "cannot read the private key"),
        ({"private_key_pem": "plain_key"}, "set exactly one of provenance.private_key"),
        ({"cert_chain": "missing"}, "cannot read provenance.cert_chain .*missing.pem"),
    ],
)
def test_signing_configuration_errors_name_the_setting_and_never_the_key(brand_pki, update, message):
    values = {"cert_chain": "chain", "private_key": "plain_key", **update}
    for name in ("cert_chain", "private_key"):
        if values[name] is not None:
            values[name] = brand_pki.get(values[name], brand_pki["root"].with_name(f"{values[name]}.pem"))
    if "private_key_pem" in values:
        values["private_key_pem"] = brand_pki[values["private_key_pem"]].read_text()
    with pytest.raises(ProvenanceError, match=message) as excinfo:
        load_signing_identity(ProvenanceSettings(**values))
    text = str(excinfo.value) + repr(excinfo.value)
    for key in ("key", "plain_key", "other_key"):
        assert not any(line in text for line in _key_body(brand_pki[key]))


def test_private_key_never_appears_in_logs_settings_errors_or_the_manifest(
    video: Path, facts, brand_pki, monkeypatch, caplog, tmp_path: Path
):
    key_pem = brand_pki["plain_key"].read_text()
    body = _key_body(brand_pki["plain_key"])
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__CERT_CHAIN", str(brand_pki["chain"]))
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__PRIVATE_KEY_PEM", key_pem)
    settings = load_settings()

    def leaks(text: str) -> bool:
        return any(line in text for line in body)

    assert not leaks(repr(settings)) and not leaks(str(settings)) and not leaks(settings.model_dump_json())
    assert not leaks(repr(load_signing_identity(settings.provenance)))

    with caplog.at_level(logging.DEBUG):
        signed(video, facts, settings.provenance)
        read_credentials(video, settings.provenance)
        provenance_violations(video, settings.provenance)
    assert any(r.name.startswith("moviegen.provenance") for r in caplog.records)
    assert not leaks(caplog.text)
    assert not leaks(_manifest_json(video))
    assert not any(line.encode() in video.read_bytes() for line in body)

    # A configuration error elsewhere must not echo the key either.
    config = tmp_path / "bad.yaml"
    config.write_text("provenance:\n  trust_anchors: 5\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(config)
    assert "provenance.trust_anchors" in str(excinfo.value) and not leaks(str(excinfo.value))


def test_signer_command_shows_the_certificate_or_why_there_is_none(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("MOVIEGEN_PROVENANCE__DEV_SIGNER_DIR", str(tmp_path / "dev-signer"))
    result = CliRunner().invoke(app, ["signer", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["development"] is True and info["algorithm"] == "es256"
    assert info["certificate"] == str(tmp_path / "dev-signer" / "cert.pem")
    assert Path(info["certificate"]).is_file()

    monkeypatch.setenv("MOVIEGEN_PROVENANCE__ALLOW_DEV_SIGNER", "false")
    monkeypatch.setenv("MOVIEGEN_PROVENANCE__DEV_SIGNER_DIR", str(tmp_path / "other"))
    result = CliRunner().invoke(app, ["signer"])
    assert result.exit_code == 2
    assert "allow_dev_signer is false" in " ".join(result.output.split())
