"""Notifications to people through Prefect: deployments/notifications.py's block and automations on a real
local Prefect server, triggered by a real campaign flow run that leaves a clip waiting for review and fails."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import FAST_CONFIG, row

from moviegen.catalog.schema import write_catalog

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "deployments" / "notifications.py"


def load_script():
    spec = importlib.util.spec_from_file_location("moviegen_notifications", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Inbox:
    """A real HTTP endpoint standing in for a chat's incoming webhook: keeps each JSON message it gets."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                inbox.messages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/chat"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, seconds: float = 90) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.messages


def test_reviewers_and_the_team_are_told_through_prefect_automations(prefect_api, tiny_model, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.campaign import campaign

    script = load_script()
    inbox = Inbox()
    try:
        block_id = script.webhook_block(inbox.url, allow_private_urls=True)
        script.install(block_id)
        script.install(block_id)  # idempotent: run again after changing a value
        with get_client(sync_client=True) as client:
            names = [a.name for a in client.read_automations()]
        assert sorted(n for n in names if n.startswith("moviegen: c")) == [
            script.FAILED_AUTOMATION,
            script.REVIEW_AUTOMATION,
        ]

        catalog = tmp_path / "catalog.parquet"
        write_catalog([row("hero", campaign_id="spring"), row("bad", campaign_id="spring", channels=["fax"])],
                      str(catalog))  # fmt: skip
        config = tmp_path / "review.yaml"
        config.write_text(FAST_CONFIG + "review: {required: true}\n")
        out = tmp_path / "out"
        state = campaign(
            catalog=str(catalog), out=str(out), config=str(config), fail_on_problems=True, return_state=True
        )
        assert state.is_failed()  # the bad row fails the run, after hero went to review
        assert (out / "review" / "youtube" / "spring" / "hero.mp4").is_file()

        messages = inbox.wait_for(2)
        by_subject = {m["subject"].split(" ")[1]: m for m in messages}
        assert len(messages) == 2, messages
        waiting = by_subject["1"]
        assert waiting["subject"] == "moviegen: 1 clip(s) of spring wait for review"
        assert (
            "clips hero" in waiting["text"]
            and f"moviegen review approve spring --by NAME --out {out}" in (waiting["text"])
        )
        [failed] = [m for m in messages if m is not waiting]
        assert failed["subject"].startswith("moviegen: campaign run ") and failed["subject"].endswith(" Failed")
        assert "1 row(s) or clip(s) were rejected or failed" in failed["text"]
    finally:
        inbox.httpd.shutdown()
        inbox.httpd.server_close()
