"""Webhooks against a real receiver on 127.0.0.1: every event of real campaigns (published, pending_review,
rejected, retired) acknowledged once through 500s and timeouts, signatures that verify, 4xx not retried,
`moviegen webhooks retry`, and a sender killed between a send and its record."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import fast_settings, row

from moviegen.catalog.schema import write_catalog
from moviegen.config import ReviewSettings, WebhookSettings
from moviegen.publish.manifest import manifest_history
from moviegen.publish.review import approve, reject
from moviegen.publish.webhooks import (
    WEBHOOKS_SCHEMA,
    deliver_manifest_rows,
    delivery_states,
    retry_failed,
    verify_signature,
)
from moviegen.run.plain import run_campaign_plain
from moviegen.store import OutputRoot

pytestmark = pytest.mark.slow

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))
SECRET_ENV, SECRET = "DAM_WEBHOOK_SECRET", "whsec-test-0123456789abcdef"


class Receiver:
    """A real HTTP receiver that honours Idempotency-Key: ``answer(key, n)`` says what the n-th call of a key gets.

    An answer is a status code, ("sleep", seconds) to outlast the sender's timeout, or "kill" to
    SIGKILL the process in ``victim`` before answering (a sender dying between send and record).
    """

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.answer = lambda key, n: 200
        self.victim: int | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                n = sum(c["key"] == key for c in receiver.calls)
                action = receiver.answer(key, n)
                receiver.calls.append(
                    {"key": key, "body": body, "signature": self.headers.get("X-Moviegen-Signature"), "answer": action}
                )
                if action == "kill":
                    os.kill(receiver.victim, signal.SIGKILL)
                    time.sleep(0.5)
                    return  # no answer: the sender is gone
                if isinstance(action, tuple):
                    time.sleep(action[1])
                    action = 200
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender timed out and left
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/moviegen"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def acknowledged(self) -> Counter:
        """Keys the receiver answered 2xx, with how often: a receiver that honours the key keeps the first."""
        return Counter(c["key"] for c in self.calls if c["answer"] == 200 or isinstance(c["answer"], tuple))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hook(receiver: Receiver, name: str = "dam", **fields) -> WebhookSettings:
    return WebhookSettings(
        **{"name": name, "url": receiver.url, "secret_env": SECRET_ENV, "retry_delay_s": 0.05, "timeout_s": 2.0,
           **fields}
    )  # fmt: skip


@pytest.fixture(scope="module")
def receiver():
    os.environ[SECRET_ENV] = SECRET
    server = Receiver()
    yield server
    server.close()
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, receiver, tiny_model):
    """One run: campaign "rev" waits for review, campaign "pub" publishes; the receiver answers 500 first."""
    base = tmp_path_factory.mktemp("webhooks")
    rows = [row("a", campaign_id="rev"), row("b", campaign_id="rev"), row("c", campaign_id="pub"),
            row("d", campaign_id="pub", caption="Spring is here", hashtags=["spring", "launch"])]  # fmt: skip
    catalog = base / "catalog.parquet"
    write_catalog(rows, str(catalog))
    hooks = [hook(receiver), hook(receiver, "tiktok-only", channels=["tiktok"])]
    settings = fast_settings(base / "out", review=ReviewSettings(campaigns={"rev": True}), webhooks=hooks)
    receiver.answer = lambda key, n: 500 if n == 0 else 200
    summary = run_campaign_plain(str(catalog), settings)
    receiver.answer = lambda key, n: 200
    return base, catalog, rows, settings, summary


def bodies(receiver: Receiver, event: str) -> dict[str, dict]:
    """The last body the receiver acknowledged per key, for one event."""
    return {
        c["key"]: json.loads(c["body"])
        for c in receiver.calls
        if c["answer"] == 200 and json.loads(c["body"])["event"] == event
    }


def test_every_event_of_a_run_is_acknowledged_once_through_500s(campaign, receiver):
    base, _, _, settings, summary = campaign
    out = OutputRoot(settings.out)
    manifest = manifest_history(out)
    keys = {f"dam:{'published' if r['status'] == 'published' else 'pending_review'}:{r['rendition_key']}"
            for r in manifest}  # fmt: skip
    assert len(keys) == 4
    assert summary.webhooks == {"delivered": 4, "failed": 0, "refused": 0}
    acked = receiver.acknowledged()
    assert {k for k in acked if k.startswith("dam:")} == keys and set(acked.values()) == {1}
    assert Counter(c["key"] for c in receiver.calls if c["key"] in keys) == dict.fromkeys(keys, 2)  # 500, then 200
    assert not [c for c in receiver.calls if c["key"].startswith("tiktok-only:")]  # its channel filter
    run = json.loads((base / "out" / "runs" / summary.run_id / "run.json").read_text())
    assert run["webhooks"] == {"delivered": 4, "failed": 0, "refused": 0}
    report = (base / "out" / "runs" / summary.run_id / "report.html").read_text()
    assert "webhooks: 4 event(s) delivered" in report and "retry" not in report  # the people's view too

    # webhooks/ holds every attempt: queued, the 500, the delivery.
    table = out.read_rows("webhooks", WEBHOOKS_SCHEMA).to_pylist()
    for key in keys:
        attempts = sorted((r["attempt"], r["outcome"], r["status_code"]) for r in table if r["idempotency_key"] == key)
        assert attempts == [(0, "queued", None), (1, "failed", 500), (2, "delivered", 200)], key
    assert len([p for p in (base / "out" / "webhooks").iterdir()]) == 1  # compacted into one part per pass


def test_bodies_are_flat_json_and_signatures_verify(campaign, receiver):
    base, *_ = campaign
    [d] = [b for b in bodies(receiver, "published").values() if b["clip_id"] == "d"]
    assert set(d) == {
        "event", "run_id", "campaign_id", "clip_id", "channel", "rendition_key", "clip_key", "sha256", "bytes",
        "path", "url", "caption", "hashtags", "disclosure", "c2pa_state", "reviewed_by", "review_note", "sent_at",
    }  # fmt: skip
    assert (d["path"], d["caption"], d["hashtags"]) == (
        "published/youtube/pub/d.mp4",
        "Spring is here",
        ["spring", "launch"],
    )
    video = base / "out" / d["path"]
    assert d["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest() and d["bytes"] == video.stat().st_size
    assert d["url"] == video.as_uri() and d["disclosure"]["ai_generated"] is True
    assert d["reviewed_by"] is None and d["c2pa_state"]
    for call in receiver.calls:
        assert verify_signature(SECRET, call["signature"], call["body"])
        stamp, digest = (part.split("=", 1)[1] for part in call["signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + call["body"], hashlib.sha256).hexdigest()
        assert digest == expected  # the documented scheme, computed independently
    first = receiver.calls[0]
    assert not verify_signature(SECRET, first["signature"], first["body"] + b" ")  # a changed body fails
    assert not verify_signature("other-secret", first["signature"], first["body"])
    stale = f"t={int(time.time()) - 3600},sha256=" + hmac.new(SECRET.encode(), b"x", hashlib.sha256).hexdigest()
    assert not verify_signature(SECRET, stale, first["body"])  # an old timestamp: a replay


def test_a_rerun_sends_nothing_and_review_decisions_send_their_events(campaign, receiver):
    _, catalog, _, settings, _ = campaign
    before = len(receiver.calls)
    again = run_campaign_plain(str(catalog), settings)
    assert again.published == [] and again.webhooks == {"delivered": 0, "failed": 0, "refused": 0}
    assert len(receiver.calls) == before

    out = OutputRoot(settings.out)
    approved = approve(out, "rev", ["a"], "Dana (brand)", "ok for launch", webhooks=settings.webhooks)
    rejected = reject(out, "rev", ["b"], "Lee (legal)", "logo too small", webhooks=settings.webhooks)
    assert approved.webhooks.to_json() == rejected.webhooks.to_json() == {"delivered": 1, "failed": 0, "refused": 0}
    [published] = [b for b in bodies(receiver, "published").values() if b["clip_id"] == "a"]
    assert (published["reviewed_by"], published["review_note"]) == ("Dana (brand)", "ok for launch")
    assert published["path"] == "published/youtube/rev/a.mp4" and published["run_id"] == approved.run_id
    [refused] = bodies(receiver, "rejected").values()
    assert (refused["clip_id"], refused["reviewed_by"], refused["review_note"]) == (
        "b",
        "Lee (legal)",
        "logo too small",
    )
    assert refused["path"].startswith("retired/youtube/rev/b/")


def test_prune_sends_retired(campaign, receiver, tmp_path):
    _, _, rows, settings, _ = campaign
    smaller = tmp_path / "without-d.parquet"
    write_catalog([r for r in rows if r["clip_id"] != "d"], str(smaller))
    summary = run_campaign_plain(str(smaller), settings, prune=True)
    assert [r["clip_id"] for r in summary.retired] == ["d"]
    [retired] = bodies(receiver, "retired").values()
    assert retired["clip_id"] == "d" and retired["path"].startswith("retired/youtube/pub/d/")
    assert summary.webhooks["delivered"] == 1


def test_timeouts_are_retried_and_4xx_is_recorded_not_retried(campaign, receiver):
    _, _, _, settings, _ = campaign
    out = OutputRoot(settings.out)
    published = [r for r in manifest_history(out) if r["status"] == "published"][:2]
    slow = hook(receiver, "slow", timeout_s=0.3)
    receiver.answer = lambda key, n: ("sleep", 1.0) if n == 0 else 200
    report = deliver_manifest_rows(out, [slow], published[:1], "test-timeouts")
    assert report.to_json() == {"delivered": 1, "failed": 0, "refused": 0}
    states = out.read_rows("webhooks", WEBHOOKS_SCHEMA).to_pylist()
    [timed_out] = [r for r in states if r["webhook"] == "slow" and r["outcome"] == "failed"]
    assert "timed out" in timed_out["error"]

    strict = hook(receiver, "strict")
    receiver.answer = lambda key, n: 422
    report = deliver_manifest_rows(out, [strict], published, "test-4xx")
    assert report.to_json() == {"delivered": 0, "failed": 0, "refused": 2}
    assert sum(c["key"].startswith("strict:") for c in receiver.calls) == 2  # one call each: no retry
    again = deliver_manifest_rows(out, [strict], published, "test-4xx-again")  # a rerun leaves refused ones alone
    assert again.to_json() == {"delivered": 0, "failed": 0, "refused": 0}

    receiver.answer = lambda key, n: 200
    config = out.root + "/strict.yaml"
    Path(config).write_text(
        f"out: {out.root}\nwebhooks:\n  - {{name: strict, url: '{receiver.url}', secret_env: {SECRET_ENV}}}\n"
    )
    done = subprocess.run([MOVIEGEN, "webhooks", "retry", "--config", config, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"delivered": 2, "failed": 0, "refused": 0}
    states = delivery_states(out)
    assert all(v == "delivered" for k, v in states.items() if k.startswith("strict:"))
    assert retry_failed(out, [strict]).to_json() == {"delivered": 0, "failed": 0, "refused": 0}  # nothing left


def test_a_receiver_that_is_down_holds_its_events_for_the_next_pass(campaign, receiver):
    _, _, _, settings, _ = campaign
    out = OutputRoot(settings.out)
    published = [r for r in manifest_history(out) if r["status"] == "published"][:3]
    down = WebhookSettings(name="down", url="http://127.0.0.1:9/nothing-listens", attempts=3, retry_delay_s=0.01)
    started = time.monotonic()
    report = deliver_manifest_rows(out, [down], published, "test-down")
    assert report.to_json() == {"delivered": 0, "failed": 3, "refused": 0}
    assert time.monotonic() - started < 10
    rows = [r for r in out.read_rows("webhooks", WEBHOOKS_SCHEMA).to_pylist() if r["webhook"] == "down"]
    assert sorted(r["outcome"] for r in rows) == ["failed"] * 3 + ["queued"] * 3  # 3 tries of the first, then waits
    # The receiver comes back: the next pass (any run) sends what waits, with the same keys.
    up = hook(receiver, "down")
    report = deliver_manifest_rows(out, [up], [], "test-up")
    assert report.to_json() == {"delivered": 3, "failed": 0, "refused": 0}
    assert sorted(k for k in receiver.acknowledged() if k.startswith("down:")) == sorted(
        f"down:published:{r['rendition_key']}" for r in published
    )


def test_a_sender_killed_between_send_and_record_resends_with_the_same_key(campaign, receiver, tmp_path):
    _, _, _, settings, _ = campaign
    out = OutputRoot(settings.out)
    config = tmp_path / "crash.yaml"
    config.write_text(
        f"out: {out.root}\nwebhooks:\n  - {{name: crash, url: '{receiver.url}', secret_env: {SECRET_ENV}}}\n"
    )
    sender = textwrap.dedent(
        f"""
        from moviegen.config import load_settings
        from moviegen.publish.manifest import manifest_history
        from moviegen.publish.webhooks import deliver_manifest_rows
        from moviegen.store import OutputRoot
        settings = load_settings({str(config)!r})
        out = OutputRoot(settings.out)
        rows = [r for r in manifest_history(out) if r["status"] == "published"]
        deliver_manifest_rows(out, settings.webhooks, rows, "crash-pass")
        """
    )
    killed: list[str] = []

    def kill_the_first_sender(key: str, n: int):  # the first call is received, then its sender dies unanswered
        if killed:
            return 200
        killed.append(key)
        return "kill"

    receiver.answer = kill_the_first_sender
    proc = subprocess.Popen([sys.executable, "-c", sender], env=os.environ.copy())
    receiver.victim = proc.pid
    assert proc.wait(timeout=120) == -signal.SIGKILL
    [first] = [c for c in receiver.calls if c["key"].startswith("crash:")]
    assert delivery_states(out)[first["key"]] == "queued"  # queued before the send, nothing after it

    done = subprocess.run([MOVIEGEN, "webhooks", "retry", "--config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    crash_calls = [c for c in receiver.calls if c["key"].startswith("crash:")]
    assert crash_calls[1]["key"] == first["key"]  # sent again, same key
    assert json.loads(crash_calls[1]["body"])["rendition_key"] == json.loads(first["body"])["rendition_key"]
    acked = {k: n for k, n in receiver.acknowledged().items() if k.startswith("crash:")}
    assert acked and set(acked.values()) == {1}  # each event acknowledged once
    assert all(state == "delivered" for key, state in delivery_states(out).items() if key.startswith("crash:"))
