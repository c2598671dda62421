"""Who signs the Content Credentials: a configured certificate chain and key, or a development signer.

Problem: a C2PA manifest must be signed with an X.509 certificate and its private key. Production
needs a certificate from a CA that viewers trust; a laptop or CI run has none and must still
produce files that read back Valid.

Solution: ``load_signing_identity`` uses ``provenance.cert_chain`` + ``provenance.private_key``
(or ``private_key_pem``) when they are configured. Otherwise it generates, once, a self-signed
EC P-256 development certificate in the user's configuration folder and warns that it is for
development only. The key is held in memory only as long as a signature needs it, never logged,
never put in an error message or a repr.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moviegen.config import ProvenanceSettings
from moviegen.provenance.common import ProvenanceError

log = logging.getLogger(__name__)

DEV_CERT_FILE = "cert.pem"
DEV_KEY_FILE = "key.pem"
DEV_VALIDITY = dt.timedelta(days=730)
DEV_COMMON_NAME = "moviegen development signer (NOT FOR PRODUCTION)"
DEV_WARNING = (
    "Signing Content Credentials with the moviegen DEVELOPMENT certificate in {folder}. It is for "
    "development only: platforms and viewers will not trust it. For production set provenance.cert_chain "
    "and provenance.private_key (MOVIEGEN_PROVENANCE__CERT_CHAIN, MOVIEGEN_PROVENANCE__PRIVATE_KEY) to a "
    "certificate from a C2PA-conforming CA, and provenance.allow_dev_signer to false."
)

_warned: set[Path] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain with its private key, ready to sign (the key never shows in repr)."""

    cert_chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    algorithm: str  # c2pa name: es256 | es384 | es512 | ps256 | ed25519
    subject: str
    not_after: dt.datetime
    development: bool
    source: str  # where the certificate came from, for messages
    timestamp_url: str | None = None


def load_signing_identity(settings: ProvenanceSettings) -> SigningIdentity:
    """The configured signing certificate and key, or the development signer (created on first use).

    Raises ProvenanceError when the configuration is incomplete, a file is unreadable, the key does
    not match the certificate, or the certificate has expired. Call it once at the start of a run
    to fail before anything is generated.
    """
    configured = settings.cert_chain or settings.private_key or settings.private_key_pem
    if configured:
        return _configured_identity(settings)
    if not settings.allow_dev_signer:
        raise ProvenanceError(
            "no signing certificate is configured and provenance.allow_dev_signer is false: set "
            "provenance.cert_chain and provenance.private_key (MOVIEGEN_PROVENANCE__CERT_CHAIN, "
            "MOVIEGEN_PROVENANCE__PRIVATE_KEY)"
        )
    folder = ensure_dev_signer(settings.dev_signer_dir)
    with _lock:
        if folder not in _warned:
            _warned.add(folder)
            log.warning(DEV_WARNING.format(folder=folder))
    identity = _identity_from_files(folder / DEV_CERT_FILE, (folder / DEV_KEY_FILE).read_bytes(), None, "dev signer")
    return SigningIdentity(**{**identity.__dict__, "development": True, "timestamp_url": settings.timestamp_url})


def ensure_dev_signer(folder: Path) -> Path:
    """Create the development certificate and key in ``folder`` unless a usable pair is there; return ``folder``.

    The pair is made in a temporary folder and renamed into place, so concurrent first runs end up
    sharing one pair. The folder is 0700 and the key 0600. An expired pair is moved aside and replaced.
    """
    cert_path = folder / DEV_CERT_FILE
    if cert_path.is_file() and (folder / DEV_KEY_FILE).is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc > _now() + dt.timedelta(days=1):
            return folder
        expired = folder.with_name(f"{folder.name}.expired-{_now():%Y%m%dT%H%M%S}")
        folder.rename(expired)
        log.warning("the development signing certificate expired; moved it to %s and made a new one", expired)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o700)
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _dev_certificate(key)
        _write_private(tmp / DEV_KEY_FILE, _pkcs8(key))
        (tmp / DEV_CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "README.txt").write_text(DEV_WARNING.format(folder=folder) + "\n", encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / DEV_CERT_FILE).is_file():
                raise
            # Another process created the signer first: use theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("created a development signing certificate in %s", folder)
    return folder


def _dev_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed leaf that C2PA validators accept: not a CA, digitalSignature, emailProtection, SKI/AKI."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, DEV_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "moviegen development"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + DEV_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def _configured_identity(settings: ProvenanceSettings) -> SigningIdentity:
    if settings.cert_chain is None:
        raise ProvenanceError(
            "provenance.cert_chain (MOVIEGEN_PROVENANCE__CERT_CHAIN) is not set: a private key needs its "
            "certificate chain, a PEM file with the signing certificate first"
        )
    if (settings.private_key is None) == (settings.private_key_pem is None):
        raise ProvenanceError(
            "set exactly one of provenance.private_key (a PEM file, MOVIEGEN_PROVENANCE__PRIVATE_KEY) and "
            "provenance.private_key_pem (the PEM text, MOVIEGEN_PROVENANCE__PRIVATE_KEY_PEM)"
        )
    if settings.private_key is not None:
        key_source = str(settings.private_key)
        key_bytes = _read(settings.private_key, "provenance.private_key")
        _warn_if_readable_by_others(settings.private_key)
    else:
        key_source = "provenance.private_key_pem"
        key_bytes = settings.private_key_pem.get_secret_value().encode()  # type: ignore[union-attr]
    password = settings.private_key_password.get_secret_value().encode() if settings.private_key_password else None
    identity = _identity_from_files(settings.cert_chain, key_bytes, password, key_source)
    return SigningIdentity(**{**identity.__dict__, "timestamp_url": settings.timestamp_url})


def _identity_from_files(
    cert_chain: Path, key_bytes: bytes, password: bytes | None, key_source: str
) -> SigningIdentity:
    chain_bytes = _read(cert_chain, "provenance.cert_chain")
    try:
        certs = x509.load_pem_x509_certificates(chain_bytes)
    except ValueError:
        raise ProvenanceError(
            f"{cert_chain} holds no PEM certificate: provenance.cert_chain must be PEM, signing certificate first"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=password)
    except (ValueError, TypeError):
        # The library's message is not shown: it is not needed and must never carry key material.
        raise ProvenanceError(
            f"cannot read the private key from {key_source}: it must be an unencrypted PEM key, or an encrypted "
            "one with provenance.private_key_password set correctly"
        ) from None
    leaf = certs[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise ProvenanceError(
            f"the private key from {key_source} does not belong to the first certificate in {cert_chain}: "
            "the chain must start with the signing certificate of that key"
        )
    if leaf.not_valid_after_utc <= _now():
        raise ProvenanceError(
            f"the signing certificate in {cert_chain} expired on {leaf.not_valid_after_utc:%Y-%m-%d}: renew it"
        )
    return SigningIdentity(
        cert_chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
        private_key_pem=_pkcs8(key),
        algorithm=_algorithm(key, key_source),
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
        development=False,
        source=str(cert_chain),
    )


def _algorithm(key: object, key_source: str) -> str:
    """The C2PA signature algorithm for a key (C2PA allows ECDSA, RSA-PSS and Ed25519)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
        raise ProvenanceError(f"the EC key from {key_source} uses {key.curve.name}; C2PA needs P-256, P-384 or P-521")
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ProvenanceError(f"the key from {key_source} is a {type(key).__name__}; C2PA needs an EC, RSA or Ed25519 key")


def _read(path: Path, setting: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"cannot read {setting} {path}: {exc.strerror}") from None


def _warn_if_readable_by_others(path: Path) -> None:
    mode = Path(path).expanduser().stat().st_mode
    if mode & 0o077:
        log.warning("the private key %s is readable by other users (mode %o): chmod 600 it", path, mode & 0o777)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pkcs8(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
