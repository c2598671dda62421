"""Keep secrets out of logs, reports, run.json, rejected rows and error messages.

Problem: URIs carry credentials (``https://user:pass@host/...``, presigned ``?X-Amz-Signature=``,
``?token=``, Azure SAS ``?sig=``), configuration carries signing keys and passwords, and every
error message that echoes a URI or a value would copy them into files many people read.
Solution: every place that echoes a URI passes it through ``redact_uri``; free text (error
messages, problems, log records) goes through ``redact_text``, which redacts every URI it finds,
PEM private-key blocks, and any value registered with ``register_secret`` (the configuration's
secret strings are registered when settings are loaded).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
# Query parameter names whose values are credentials (matched case-insensitively, anywhere in the name).
SECRET_PARAM = re.compile(
    r"token|key|secret|sig|signature|password|passwd|pwd|auth|credential|session|sas|code|ticket", re.IGNORECASE
)
# A URI with a scheme, up to whitespace, a quote or a closing bracket.
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>)\]}]+")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL)
# Secrets shorter than this are not registered: masking "a" everywhere would garble every message.
MIN_SECRET_CHARS = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever ``redact_text`` sees it from now on (a key, a password, a token)."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _secrets_lock:
            _secrets.add(value)


def redact_uri(uri: str) -> str:
    """``uri`` with its password or user info, and credential-like query values, replaced by ``***``.

    Text that is not a URL comes back unchanged.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:  # an unparsable URL (e.g. a bad IPv6 host): hide all but its scheme
        return uri.split("://", 1)[0] + f"://{MASK}" if "://" in uri else uri
    if not parts.scheme or (not parts.netloc and not parts.query):
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAM.search(k) for k, _ in pairs) or not pairs:
            query = "&".join(f"{k}={MASK}" if SECRET_PARAM.search(k) else f"{k}={v}" for k, v in pairs) or MASK
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with URIs redacted, PEM private keys removed and registered secrets masked."""
    if not text:
        return text
    text = _PEM.sub(f"[private key {MASK}]", text)
    text = _URI.sub(lambda m: redact_uri(m.group(0)), text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, tuples), keeping its shape."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (attach it to a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback's last line echoes the exception's message: format it now, redacted.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of ``logger`` (the root logger by default), once each."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
