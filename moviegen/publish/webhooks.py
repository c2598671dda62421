"""Webhooks: each rendition event (pending_review, published, rejected, retired) POSTed to the tools teams use.

Problem: approved files have to reach the next tool (a DAM, a social scheduler, a chat channel)
without anyone copying them by hand, and a receiver must be able to trust each call and see each
event once, although networks fail and a sender can be killed between a send and its record.
Solution: the events are the manifest's rows (a run's, a review decision's, a prune's). For each
configured webhook that wants the event and channel, a ``queued`` row goes to the ``webhooks/``
dataset before the first send, then one row per attempt: ``delivered`` (2xx), ``failed`` (a
connection error, a timeout or a 5xx: tried again with backoff, bounded in count and time) or
``refused`` (a 4xx: not tried again automatically). Every call carries ``Idempotency-Key:
<webhook>:<event>:<rendition_key>`` and an HMAC-SHA256 signature over its timestamp and body.
An event with a ``delivered`` row is never sent again; one that is only queued or failed (the
sender died, the receiver was down) is sent again with the same key by the next run's pass or by
``moviegen webhooks retry``, so delivery is at least once and a receiver that honours the key
sees each event once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from moviegen.config import WebhookSettings
from moviegen.redact import redact_text, register_secret
from moviegen.reliability import retry
from moviegen.store import (
    PENDING_REVIEW,
    PUBLISHED,
    RETIRED,
    REVIEW_REJECTED,
    WITHDRAWN,
    OutputRoot,
    new_run_id,
    utc_now,
)

log = logging.getLogger(__name__)

WEBHOOKS_SCHEMA = pa.schema(
    [
        ("webhook", pa.string()),
        ("event", pa.string()),
        ("idempotency_key", pa.string()),
        ("rendition_key", pa.string()),
        ("campaign_id", pa.string()),
        ("clip_id", pa.string()),
        ("channel", pa.string()),
        ("event_run_id", pa.string()),  # the run or review decision whose manifest row this event reports
        ("run_id", pa.string()),  # the pass that wrote this row (a run, a decision, `webhooks retry`)
        ("attempt", pa.int32()),  # 0 for the queued row
        ("outcome", pa.string()),  # queued | delivered | failed | refused
        ("status_code", pa.int32()),
        ("error", pa.string()),
        ("payload", pa.string()),  # the event's JSON without sent_at (queued rows): what a retry sends
        ("attempted_at", pa.timestamp("us", tz="UTC")),
    ]
)
QUEUED, DELIVERED, FAILED, REFUSED = "queued", "delivered", "failed", "refused"

# Manifest status -> event name.
EVENTS = {PENDING_REVIEW: "pending_review", PUBLISHED: "published", REVIEW_REJECTED: "rejected", RETIRED: "retired",
          WITHDRAWN: "retired"}  # fmt: skip
SIGNED_URL_S = 7 * 24 * 3600  # the longest an S3 presigned URL may live
SIGNATURE_HEADER = "X-Moviegen-Signature"
RECORD_BATCH, RECORD_EVERY_S = 100, 2.0  # outcome rows per webhooks/ part, and the longest they wait


class TransientDelivery(OSError):
    """A connection error, a timeout or a 5xx: the same call may succeed later."""


class OutOfTime(TransientDelivery):
    """An event's tries have taken their whole time budget: it stays failed for a later pass."""


class RefusedDelivery(Exception):
    """A 4xx: the receiver said no; trying again unchanged cannot help."""


@dataclass
class DeliveryReport:
    """What one pass sent: events acknowledged, failed (they wait for a retry) and refused (4xx)."""

    run_id: str
    delivered: list[str] = field(default_factory=list)  # idempotency keys
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, int]:
        return {"delivered": len(self.delivered), "failed": len(self.failed), "refused": len(self.refused)}


def delivery_line(counts: dict[str, int]) -> str:
    """A pass's counts (``DeliveryReport.to_json``) in words, with what to do about what did not arrive."""
    line = f"webhooks: {counts['delivered']} event(s) delivered"
    if counts["failed"] or counts["refused"]:
        line += (f", {counts['failed']} failed (sent again on the next run), {counts['refused']} refused (4xx):"
                 " `moviegen webhooks retry` sends them now; `webhooks/` has every attempt")  # fmt: skip
    return line


@dataclass(frozen=True)
class Event:
    webhook: WebhookSettings
    name: str
    payload: dict[str, Any]  # without sent_at

    @property
    def key(self) -> str:
        return f"{self.webhook.name}:{self.name}:{self.payload['rendition_key']}"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Moviegen-Signature`` value: ``t=<unix seconds>,sha256=<hex HMAC-SHA256 of "<t>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """What a receiver checks: the signature matches the raw body, and its timestamp is recent (no replay)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def deliver_manifest_rows(
    out: OutputRoot, webhooks: Sequence[WebhookSettings], rows: Iterable[dict[str, Any]], run_id: str
) -> DeliveryReport:
    """Send the events of these manifest rows, and the events earlier passes left unacknowledged.

    Events already queued, delivered or refused are not sent again here (``retry_failed`` sends
    the failed and refused ones). A webhook whose receiver stays down after an event's last
    attempt gets no more calls in this pass: its remaining events wait, queued, for the next one.
    """
    report = DeliveryReport(run_id)
    if not webhooks:
        return report
    history = _history(out)
    fresh = [e for e in _events(out, webhooks, rows) if e.key not in history]
    outstanding = [_event_from_row(webhooks, row) for key, row in history.items() if row["state"] in (QUEUED, FAILED)]
    _send_all(out, [*fresh, *(e for e in outstanding if e is not None)], fresh, report)
    return report


def retry_failed(out: OutputRoot, webhooks: Sequence[WebhookSettings]) -> DeliveryReport:
    """``moviegen webhooks retry``: send again every event not acknowledged (queued, failed or refused)."""
    report = DeliveryReport(new_run_id())
    history = _history(out)
    events = [_event_from_row(webhooks, row) for row in history.values() if row["state"] != DELIVERED]
    _send_all(out, [e for e in events if e is not None], [], report)
    return report


def delivery_states(out: OutputRoot) -> dict[str, str]:
    """Each event's state by idempotency key: delivered once any attempt was, else its latest outcome."""
    return {key: row["state"] for key, row in _history(out).items()}


def _send_all(out: OutputRoot, events: list[Event], fresh: list[Event], report: DeliveryReport) -> None:
    now = utc_now()
    out.append_rows("webhooks", WEBHOOKS_SCHEMA, [_row(e, report.run_id, 0, QUEUED, now) for e in fresh], report.run_id)
    down: set[str] = set()  # webhooks whose receiver failed an event's every attempt in this pass
    attempts: list[dict[str, Any]] = []
    flushed = time.monotonic()
    for event in events:
        if event.webhook.name in down:
            report.failed.append(event.key)
            continue
        try:
            _send(event, attempts, report.run_id)
            report.delivered.append(event.key)
        except RefusedDelivery:
            report.refused.append(event.key)
        except TransientDelivery:
            report.failed.append(event.key)
            down.add(event.webhook.name)
        # Outcomes are written in batches (a part file per event would cost more than the POST): a
        # crash loses at most the last batch's records, and those events are sent again, same key.
        if len(attempts) >= RECORD_BATCH or time.monotonic() - flushed > RECORD_EVERY_S:
            out.append_rows("webhooks", WEBHOOKS_SCHEMA, attempts, report.run_id)
            attempts, flushed = [], time.monotonic()
    out.append_rows("webhooks", WEBHOOKS_SCHEMA, attempts, report.run_id)
    out.compact_run("webhooks", WEBHOOKS_SCHEMA, report.run_id)
    if report.failed or report.refused:
        log.warning("webhooks: %d events failed and %d were refused: `moviegen webhooks retry` sends them again",
                    len(report.failed), len(report.refused))  # fmt: skip


def _send(event: Event, attempts: list[dict[str, Any]], run_id: str) -> None:
    """POST one event, retried with backoff on transient failures; each attempt's row is added to ``attempts``."""
    hook = event.webhook
    try:
        secret = _secret(hook)
    except RefusedDelivery as exc:
        attempts.append(_row(event, run_id, 1, REFUSED, utc_now(), None, str(exc)))
        raise
    url = hook.url.get_secret_value()
    # Bounded in time as well as in count: the tries' timeouts and waits, and not a second more.
    deadline = time.monotonic() + hook.attempts * hook.timeout_s + hook.retry_delay_s * (2**hook.attempts - 1)
    tries: list[dict[str, Any]] = []

    def attempt() -> None:
        body = json.dumps({**event.payload, "sent_at": utc_now().isoformat()}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": event.key, "User-Agent": "moviegen"}
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        status, error, outcome = None, None, DELIVERED
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_s) as response:
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            outcome = FAILED if exc.code >= 500 or exc.code in (408, 429) else REFUSED
        except (OSError, ValueError) as exc:  # refused connection, DNS, timeout, a broken URL
            error, outcome = f"{type(exc).__name__}: {exc}", FAILED
        tries.append(_row(event, run_id, len(tries) + 1, outcome, utc_now(), status, error))
        if outcome == REFUSED:
            raise RefusedDelivery(error)
        if outcome == FAILED:
            raise (OutOfTime if time.monotonic() > deadline else TransientDelivery)(error)

    what = f"webhook {hook.name} ({event.key})"
    try:
        retry(attempt, hook.attempts, (TransientDelivery,), what, hook.retry_delay_s, permanent=(OutOfTime,))
    finally:
        attempts.extend(tries)


def _secret(hook: WebhookSettings) -> str | None:
    if not hook.secret_env:
        return None
    secret = os.environ.get(hook.secret_env)
    if not secret:
        raise RefusedDelivery(f"environment variable {hook.secret_env} (webhook {hook.name}'s secret) is not set")
    register_secret(secret)
    return secret


def _row(
    event: Event,
    run_id: str,
    attempt: int,
    outcome: str,
    at: datetime,
    status: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    p = event.payload
    return {
        "webhook": event.webhook.name,
        "event": event.name,
        "idempotency_key": event.key,
        "rendition_key": p["rendition_key"],
        "campaign_id": p["campaign_id"],
        "clip_id": p["clip_id"],
        "channel": p["channel"],
        "event_run_id": p["run_id"],
        "run_id": run_id,
        "attempt": attempt,
        "outcome": outcome,
        "status_code": status,
        "error": redact_text(error) if error else None,
        "payload": json.dumps(p, sort_keys=True, default=str) if attempt == 0 else None,
        "attempted_at": at,
    }


def _history(out: OutputRoot) -> dict[str, dict[str, Any]]:
    """Per idempotency key: its queued row (the payload) with ``state`` set from every attempt so far."""
    rows = sorted(
        out.read_rows("webhooks", WEBHOOKS_SCHEMA).to_pylist(), key=lambda r: (r["attempted_at"], r["attempt"])
    )
    history: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = history.setdefault(row["idempotency_key"], {**row, "state": QUEUED})
        if row["payload"]:
            entry["payload"] = row["payload"]
        if entry["state"] != DELIVERED and row["outcome"] != QUEUED:
            entry["state"] = row["outcome"]
    return history


def _event_from_row(webhooks: Sequence[WebhookSettings], row: dict[str, Any]) -> Event | None:
    hook = next((h for h in webhooks if h.name == row["webhook"]), None)
    if hook is None or not row.get("payload"):
        return None  # the webhook was removed from the configuration: nothing to send it to
    return Event(hook, row["event"], json.loads(row["payload"]))


def _events(out: OutputRoot, webhooks: Sequence[WebhookSettings], rows: Iterable[dict[str, Any]]) -> list[Event]:
    events = []
    for row in rows:
        name = EVENTS.get(row.get("status") or PUBLISHED)
        wanted = [h for h in webhooks if name in h.events and (h.channels is None or row["channel"] in h.channels)]
        if name is None or not wanted:
            continue
        payload = event_payload(out, row, name)
        events += [Event(hook, name, payload) for hook in wanted]
    return events


def event_payload(out: OutputRoot, row: dict[str, Any], event: str) -> dict[str, Any]:
    """The flat JSON of one event (without ``sent_at``): the manifest row's facts and its sidecar's caption."""
    sidecar_path = row["path"].rsplit(".", 1)[0] + ".json"
    try:
        sidecar = out.read_json(*sidecar_path.split("/")) or {}
    except (OSError, ValueError):
        sidecar = {}
    return {
        "event": event,
        "run_id": row["run_id"],
        "campaign_id": row["campaign_id"],
        "clip_id": row["clip_id"],
        "channel": row["channel"],
        "rendition_key": row["rendition_key"],
        "clip_key": row.get("clip_key"),
        "sha256": row.get("sha256"),
        "bytes": row.get("bytes"),
        "path": row["path"],
        "url": file_url(out, row["path"]),
        "caption": sidecar.get("caption"),
        "hashtags": sidecar.get("hashtags"),
        "disclosure": sidecar.get("disclosure"),
        "c2pa_state": row.get("c2pa_state"),
        "reviewed_by": row.get("reviewed_by"),
        "review_note": row.get("review_note"),
    }


def file_url(out: OutputRoot, relative: str) -> str:
    """A URL another tool can fetch the file from: signed where the filesystem can sign (S3, GCS), else its URL."""
    try:
        return out.fs.sign(out.path(*relative.split("/")), expiration=SIGNED_URL_S)
    except (NotImplementedError, AttributeError, TypeError, ValueError):
        return out.url_of(relative)
