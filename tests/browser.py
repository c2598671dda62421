"""A tiny DevTools-protocol client for tests: open a page in headless Chromium, collect what went wrong.

Debian's ``chromium`` (scripts/setup.sh --test installs it) is started with a fresh profile and
without its background services (they would keep calling a network this machine does not have),
with ``--remote-debugging-port=0``; the port it picked is read from the profile's
``DevToolsActivePort`` file. Over one websocket the page's console messages, uncaught exceptions
and browser log entries (failed loads, Content-Security-Policy violations) are collected while it
loads, then a script inspects the page, and a full-page PNG screenshot is taken.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageResult:
    """What a page did while it loaded, what a script found in it, and its screenshot (PNG bytes)."""

    errors: list[str] = field(default_factory=list)
    evaluated: Any = None
    screenshot: bytes = b""


class DevTools:
    """One websocket to one page target: send commands, keep the events that arrive meanwhile."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        self.ws.close()


def page_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors and assertions, uncaught exceptions, and error-level browser log entries."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(f"exception: {details.get('text', '')} {details.get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return errors


def open_page(url: str, script: str, profile: Path, width: int = 1280, timeout: float = 90) -> PageResult:
    """Load ``url`` in headless Chromium, run ``script`` (an expression; its JSON value is returned),
    collect errors and take a full-page screenshot."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed: run scripts/setup.sh --test")
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile, proc, timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t.get("type") == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call("Page.navigate", url=url)
            tools.wait_for("Page.loadEventFired", timeout)
            value = tools.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
            result = PageResult(evaluated=value.get("result", {}).get("value"))
            size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=int(size["height"]) + 1,
                deviceScaleFactor=1,
                mobile=False,
            )
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            result.screenshot = base64.b64decode(shot["data"])
            result.errors = page_errors(tools.events)
        finally:
            tools.close()
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    """The port Chromium chose, from the first line of ``<profile>/DevToolsActivePort``."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode} before opening DevTools")
        if marker.is_file():
            first = marker.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not open DevTools within {timeout} s")
