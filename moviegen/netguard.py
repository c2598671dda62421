"""Which network hosts a catalog row may make moviegen fetch from, and an HTTP fetch pinned to them.

Problem: a row's input URI may be any http(s) URL, and whoever writes a catalog could make every
GPU worker send requests inside its network: the cloud metadata address (169.254.169.254), the
Prefect API on 127.0.0.1, a database on a private address. A check of the name alone is not
enough: a name can resolve to a private address, answer differently on a second lookup (DNS
rebinding), or redirect there.
Solution: a host is resolved first and every address it resolves to must be a public one unless
``inputs.allowed_hosts`` lists the name or a network holding the address. The fetch connects to
the address that was checked (no second lookup), checks each redirect the same way, and bounds
redirects, size and time. Proxies from the environment are not used: a proxy would make the
connection somewhere else than the address checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
FETCH_SECONDS = 300.0  # the whole fetch, redirects and body included (a 500 MiB source clip at ~2 MB/s)
CONNECT_SECONDS = 15.0
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 1 << 20


class HostRefused(ValueError):
    """A URL's host is not a place moviegen fetches row inputs from; the message says why and what to do."""


class FetchFailed(OSError):
    """An allowed URL could not be fetched; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HostPolicy:
    """Hosts a row may name although they are not public: names (any case) and address ranges."""

    names: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostPolicy:
        """``inputs.allowed_hosts``: host names, addresses and CIDR ranges; raises ValueError on a bad entry."""
        names, networks = set(), []
        for entry in entries:
            text = entry.strip().lower().strip("[]")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            label_chars = text.replace("-", "").replace(".", "").replace("_", "")
            if not text or not text.isascii() or not label_chars.isalnum() or "/" in text:
                raise ValueError(f"not a host name, address or CIDR range: {entry!r} (write e.g. 10.0.0.0/8)")
            names.add(text.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: IpAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


NO_EXTRA_HOSTS = HostPolicy()  # public hosts only


def refused_kind(address: IpAddress) -> str | None:
    """Why an address is no public one ("loopback", "private", ...), or None when it is public.

    An IPv4 address written as IPv6 (``::ffff:127.0.0.1``, ``64:ff9b::7f00:1``) is judged as the
    IPv4 address it carries: Python 3.11's ``is_global`` does not look inside.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in ipaddress.ip_network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return refused_kind(inner)
        if address in ipaddress.ip_network("fc00::/7"):
            return "unique-local"
    for kind, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local (the cloud metadata address is one)", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            return kind
    return None if address.is_global else "not globally routable"


_resolved: dict[tuple[str, int, int], list[IpAddress] | str] = {}  # addresses, or why the name did not resolve
_resolved_lock = threading.Lock()


def resolve(host: str, port: int) -> list[IpAddress]:
    """The addresses ``host`` resolves to (a literal address is itself); raises OSError when it does not.

    Answers are kept for up to a minute, so validating a catalog of a thousand rows on one CDN
    asks the resolver once.
    """
    literal = _literal_address(host)
    if literal is not None:
        return [literal]
    key = (host.lower(), port, int(time.monotonic() // 60))
    with _resolved_lock:
        answer = _resolved.get(key)
    if answer is None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        except (OSError, UnicodeError) as exc:
            answer = f"{type(exc).__name__}: {exc}"  # a name that does not resolve is asked once a minute too
        with _resolved_lock:
            _resolved[key] = answer
    if isinstance(answer, str):
        raise OSError(answer)
    return answer


def check_host(host: str, port: int, policy: HostPolicy, *, must_resolve: bool) -> list[IpAddress]:
    """The addresses to connect to for ``host``, every one checked; raises HostRefused.

    A name that does not resolve passes when ``must_resolve`` is False (validation on a machine
    without the workers' DNS); the fetch resolves again and refuses it then.
    """
    if not host:
        raise HostRefused("the URL names no host")
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        if must_resolve:
            raise HostRefused(f"host {host!r} does not resolve ({exc}): check the URL") from None
        return []
    if policy.allows_name(host):  # listed by name: whatever it resolves to
        return addresses
    for address in addresses:
        kind = refused_kind(address)
        if kind and not policy.allows_address(address):
            seen = f"{host!r}" if str(address) == host.strip("[]") else f"{host!r} (it resolves to {address})"
            raise HostRefused(
                f"host {seen} is a {kind} address, and moviegen fetches row inputs only from public hosts: "
                f"serve the file from a public host, or list the host in inputs.allowed_hosts "
                f"(a name, an address or a CIDR range) if this network is meant to be reached"
            )
    return addresses


def check_url(url: str, policy: HostPolicy, *, must_resolve: bool = False) -> list[IpAddress]:
    """Check an http(s) URL's host (see ``check_host``); returns the checked addresses."""
    parts = urlsplit(url)
    return check_host(parts.hostname or "", _port(parts), policy, must_resolve=must_resolve)


def fetch_http(url: str, *, limit: int, hosts: HostPolicy, schemes: Iterable[str] = ("http", "https")) -> bytes:
    """GET ``url`` connected to checked addresses only, following at most MAX_REDIRECTS checked redirects.

    Reads at most ``limit`` bytes (a larger body raises FetchFailed before it is all read) within
    FETCH_SECONDS. Raises HostRefused for a refused host or redirect, FetchFailed otherwise.
    """
    allowed = set(schemes)
    deadline = time.monotonic() + FETCH_SECONDS
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.scheme not in allowed:
            raise HostRefused(f"a redirect leads to {parts.scheme or 'no'} scheme, which is not allowed here")
        addresses = check_url(url, hosts, must_resolve=True)
        response, conn = _get(parts, addresses, deadline)
        try:
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchFailed(f"HTTP {response.status} without a Location", response.status)
                url = urljoin(url, location)
                continue
            if response.status == 404 or response.status == 410:
                raise FetchFailed("does not exist (HTTP 404)", response.status)
            if not 200 <= response.status < 300:
                raise FetchFailed(f"cannot be read (HTTP {response.status} {response.reason})", response.status)
            return _read_body(response, limit, deadline)
        finally:
            conn.close()
    raise FetchFailed(f"redirects more than {MAX_REDIRECTS} times: link the file itself")


def _get(parts, addresses: list[IpAddress], deadline: float) -> tuple[http.client.HTTPResponse, Any]:
    host, port = parts.hostname or "", _port(parts)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last: Exception | None = None
    for address in addresses:  # each one was checked; try them in the resolver's order
        timeout = max(0.1, min(CONNECT_SECONDS, deadline - time.monotonic()))
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(host, port, timeout=timeout)  # the Host header and TLS name stay the URL's host
        conn._create_connection = _pinned(address)  # type: ignore[attr-defined]
        try:
            conn.request("GET", path, headers={"User-Agent": "moviegen", "Accept-Encoding": "identity"})
            return conn.getresponse(), conn
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            last = exc
    raise FetchFailed(f"cannot be read: {type(last).__name__}: {last}")


def _pinned(address: IpAddress):
    """A connection factory for http.client that dials ``address`` whatever host name it is given."""

    def connect(target: tuple[str, int], timeout: float | None = None, source: tuple[str, int] | None = None):
        return socket.create_connection((str(address), target[1]), timeout, source)

    return connect


def _read_body(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise FetchFailed(f"is larger than {limit // 2**20} MiB (Content-Length {int(length)}): use a smaller file")
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            raise FetchFailed(f"took longer than {FETCH_SECONDS:.0f} s to download: use a faster host or smaller file")
        chunk = response.read1(min(_CHUNK, limit + 1 - total))  # one socket read: a trickle cannot pass the deadline
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise FetchFailed(f"is larger than {limit // 2**20} MiB: use a smaller file")


def _port(parts) -> int:
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return 0


def _literal_address(host: str) -> IpAddress | None:
    text = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    # inet_aton's forms (0x7f000001, 2130706433, 127.1, 0177.0.0.1): libc resolves them as addresses
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text)) if text and text[0].isdigit() else None
    except OSError:
        return None
