"""Safe fetching of row inputs: real HTTP servers on loopback addresses are refused by validate, plan and
run (and never see a request) unless inputs.allowed_hosts lists them; redirects, sizes and the
connection's address are checked at fetch time."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import fast_settings, row
from PIL import Image

from moviegen import netguard
from moviegen.assets import MAX_BYTES, AssetError, UriPolicy, check_uri, fetch_asset
from moviegen.catalog.schema import write_catalog
from moviegen.config import ConfigError, InputSettings, load_settings
from moviegen.netguard import HostPolicy, refused_kind
from moviegen.run.plain import run_campaign_plain

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "orange").save(buffer, "PNG")
    return buffer.getvalue()


class ImageServer:
    """A real HTTP server on one loopback address that serves a logo and counts every request it sees."""

    def __init__(self, address: str) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {"/logo.png": (200, {}, _png())}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Host", "")))
                status, headers, body = server.routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((address, 0), Handler)
        self.address, self.port = address, self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/logo.png", host: str | None = None) -> str:
        return f"http://{host or self.address}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    """Two servers: 127.0.0.1 (the one a test may allow) and 127.0.0.2 (another loopback address, never allowed)."""
    first, second = ImageServer("127.0.0.1"), ImageServer("127.0.0.2")
    netguard._resolved.clear()
    yield first, second
    first.close()
    second.close()


ALLOW_FIRST = UriPolicy(hosts=HostPolicy.parse(["127.0.0.1"]))


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.0.0.7", "private"),
        ("192.168.1.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("0x7f000001", "loopback"),  # 127.0.0.1 as inet_aton reads it
        ("2130706433", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped: judged as the IPv4 address inside
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[fd00::1]", "unique-local"),
        ("[fe80::1]", "link-local"),
        ("[ff02::1]", "multicast"),
        ("localhost", "loopback"),
    ],
)
def test_non_public_hosts_are_refused_by_the_check(host, kind):
    problem = check_uri(f"http://{host}/brand/logo.png", "logo")
    assert problem is not None and kind in problem and "inputs.allowed_hosts" in problem, problem


def test_public_and_unresolvable_hosts_pass_the_check():
    assert check_uri("https://8.8.8.8/logo.png", "logo") is None  # a public address: no lookup needed
    assert check_uri("https://cdn.example.invalid/logo.png", "logo") is None  # the fetch resolves it again
    assert refused_kind(netguard.resolve("1.1.1.1", 443)[0]) is None


def test_allowed_hosts_take_names_addresses_and_ranges():
    policy = HostPolicy.parse(["Assets.Internal", "10.0.0.0/8", "127.0.0.1", "[::1]"])
    assert policy.allows_name("assets.internal.")
    for entry in ("10.0.0.7", "127.0.0.1", "[::1]"):
        assert check_uri(f"http://{entry}/logo.png", "logo", UriPolicy(hosts=policy)) is None
    assert "loopback" in check_uri("http://127.0.0.2/logo.png", "logo", UriPolicy(hosts=policy))
    settings = load_settings(None, inputs={"allowed_hosts": ["10.1.0.0/16", "dam.corp"]})
    assert UriPolicy.from_settings(settings.inputs).hosts.allows_name("DAM.corp")
    with pytest.raises(ConfigError, match=r"inputs.allowed_hosts.*not a host name"):
        load_settings(None, inputs={"allowed_hosts": ["http://dam.corp/path"]})


def test_a_listed_host_is_fetched_and_a_refused_one_never_sees_a_request(servers, tmp_path):
    first, second = servers
    with pytest.raises(AssetError, match="loopback"):
        fetch_asset(first.url(), "logo", tmp_path / "cache")
    assert first.requests == []
    asset = fetch_asset(first.url(), "logo", tmp_path / "cache", ALLOW_FIRST)
    assert asset.path.read_bytes() == first.routes["/logo.png"][2]
    assert first.requests == [("/logo.png", f"127.0.0.1:{first.port}")]
    assert second.requests == []


def test_each_redirect_is_checked_again(servers, tmp_path):
    first, second = servers
    first.routes["/moved.png"] = (302, {"Location": second.url()}, b"")
    with pytest.raises(AssetError, match=r"127\.0\.0\.2.*loopback"):
        fetch_asset(first.url("/moved.png"), "logo", tmp_path / "cache", ALLOW_FIRST)
    assert second.requests == []  # the redirect target was refused before any connection
    first.routes["/here.png"] = (301, {"Location": "/logo.png"}, b"")
    assert fetch_asset(first.url("/here.png"), "logo", tmp_path / "c2", ALLOW_FIRST).sha256
    first.routes["/loop.png"] = (302, {"Location": "/loop.png"}, b"")
    with pytest.raises(AssetError, match="redirects more than 5 times"):
        fetch_asset(first.url("/loop.png"), "logo", tmp_path / "c3", ALLOW_FIRST)
    assert sum(path == "/loop.png" for path, _ in first.requests) == 6
    first.routes["/ftp.png"] = (302, {"Location": "ftp://example.com/logo.png"}, b"")
    with pytest.raises(AssetError, match="scheme"):
        fetch_asset(first.url("/ftp.png"), "logo", tmp_path / "c4", ALLOW_FIRST)


def test_sizes_are_bounded_before_and_while_reading(servers, tmp_path, monkeypatch):
    first, _ = servers
    monkeypatch.setattr(netguard, "_CHUNK", 1024)
    monkeypatch.setitem(MAX_BYTES, "logo", 4096)
    first.routes["/big.png"] = (200, {}, b"\x89PNG" + b"0" * 10_000)
    with pytest.raises(AssetError, match=r"larger than .*Content-Length 10004"):
        fetch_asset(first.url("/big.png"), "logo", tmp_path / "cache", ALLOW_FIRST)

    class Streaming(BaseHTTPRequestHandler):  # no Content-Length: chunked, 16 KiB in all
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(16):
                self.wfile.write(b"400\r\n" + b"1" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args) -> None:
            pass

    stream = ThreadingHTTPServer(("127.0.0.1", 0), Streaming)
    threading.Thread(target=stream.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(AssetError, match="larger than"):
            fetch_asset(f"http://127.0.0.1:{stream.server_address[1]}/s.png", "logo", tmp_path / "c2", ALLOW_FIRST)
    finally:
        stream.shutdown()
        stream.server_close()
    with pytest.raises(AssetError, match=r"does not exist \(HTTP 404\)"):
        fetch_asset(first.url("/gone.png"), "logo", tmp_path / "c3", ALLOW_FIRST)


def test_the_connection_goes_to_the_address_that_was_checked(servers, tmp_path, monkeypatch):
    """A name that answers 127.0.0.1 (allowed) when checked and 127.0.0.2 afterwards (DNS rebinding)."""
    first, second = servers
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host, port, *args, **kwargs):
        if host == "brand-cdn.test":
            return real(next(answers, "127.0.0.2"), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    data = netguard.fetch_http(first.url(host="brand-cdn.test"), limit=2**20, hosts=ALLOW_FIRST.hosts)
    assert data == first.routes["/logo.png"][2]
    assert first.requests == [("/logo.png", f"brand-cdn.test:{first.port}")]  # the URL's name, the checked address
    assert second.requests == []


# --- validate, plan and run: one row-level error, and the server sees nothing -------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MOVIEGEN, *args], capture_output=True, text=True, env=os.environ.copy())


@pytest.fixture
def hostile_catalog(servers, tmp_path):
    first, _ = servers
    rows = [
        row("local", logo_uri=first.url()),
        row("metadata", reference_image="http://169.254.169.254/latest/meta-data/shot.png"),
        row("fine"),
    ]
    path = tmp_path / "catalog.parquet"
    write_catalog(rows, str(path))
    return path


def test_validate_and_plan_refuse_the_rows_and_name_them(hostile_catalog, servers):
    first, _ = servers
    for command in ("validate", "plan"):
        result = cli(command, str(hostile_catalog), "--json")
        assert result.returncode == (1 if command == "validate" else 0), (command, result.stderr)  # plan estimates
        problems = json.loads(result.stdout)["problems"]
        assert [(p["row"], p["clip_id"], p["column"], p["rule"]) for p in problems] == [
            (0, "local", "logo_uri", "uri"),
            (1, "metadata", "reference_image", "uri"),
        ], command
        assert "loopback" in problems[0]["message"] and "link-local" in problems[1]["message"]
    human = " ".join(cli("validate", str(hostile_catalog)).stderr.split())
    assert (
        "row 1, clip_id metadata, column reference_image: reference_image "
        "'http://169.254.169.254/latest/meta-data/shot.png': host '169.254.169.254' is a link-local" in human
    )
    assert first.requests == []


@pytest.mark.slow
def test_run_refuses_by_default_and_fetches_a_listed_host(hostile_catalog, servers, tmp_path, tiny_model):
    first, _ = servers
    refused = run_campaign_plain(str(hostile_catalog), fast_settings(tmp_path / "out"))
    assert [(p.clip_id, p.column) for p in refused.problems] == [("local", "logo_uri"), ("metadata", "reference_image")]
    assert [r["clip_id"] for r in refused.published] == ["fine"]
    assert first.requests == []

    allowed = fast_settings(tmp_path / "out", inputs=InputSettings(allowed_hosts=["127.0.0.0/8"]))
    summary = run_campaign_plain(str(hostile_catalog), allowed)
    assert [r["clip_id"] for r in summary.published] == ["local"]  # "fine" was published by the first run
    assert [p.clip_id for p in summary.problems] == ["metadata"]  # link-local stays refused: not in 127/8
    assert [path for path, _ in first.requests] == ["/logo.png"]
