"""Image URLs fetched without becoming a proxy into the caller's network: used by `inputs.load_image`
(an in-process encode with ``allow_image_urls=True``) and by ``tte-hf serve --allow-image-urls``.

The host is resolved once; every address must be global (`ipaddress` ``is_global``: no loopback,
link-local such as 169.254.169.254, private, ULA, ...) unless it is in the allow-list (the module
setting ``image_url_allow_hosts``, the server's ``--image-url-allow-hosts``). The connection goes to
the address that was checked (no second DNS lookup between the check and the connect), redirects are
refused rather than followed, and one deadline covers the whole fetch: a watchdog shuts the socket
when it passes, however slowly the other side drips bytes. `FetchError`'s message says why (for the
caller or the log); `FetchError.public` is all a server shows its clients, so that it cannot be used
as a port scanner.

Written on `http.client` rather than urllib/httpx because both resolve and connect by name
themselves: pinning the checked address needs the connect step in our hands.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(Exception):
    """A URL that was not fetched. The message says why (for the caller, or a server's log); ``public``
    is what a server's remote client may see."""

    public = "the image URL could not be fetched."


class FetchRefused(FetchError):
    """Refused before any connection (scheme, host, non-global address, too many fetches)."""

    public = "the image URL was refused: only public http(s) hosts are fetched."


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class AllowRule:
    """One allow-list entry: a host name or an IP network, optionally one port."""

    name: str | None
    network: Network | None
    port: int | None

    def matches(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host.lower() == self.name if self.name is not None else address in self.network


def parse_allow_list(entries: Iterable[str]) -> tuple[AllowRule, ...]:
    """Entries like ``images.internal``, ``10.1.2.0/24``, ``127.0.0.1:8081`` or ``[::1]:8081``: names
    match the URL's host exactly (case-insensitive), networks the resolved address."""
    rules = []
    for entry in entries:
        entry, port = entry.strip(), None
        if entry.startswith("[") and "]" in entry:
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif entry.count(":") == 1:
            host, _, digits = entry.partition(":")
            port = int(digits)
        else:
            host = entry
        if not host:
            continue
        try:
            rules.append(AllowRule(None, ipaddress.ip_network(host, strict=False), port))
        except ValueError:
            rules.append(AllowRule(host.lower(), None, port))
    return tuple(rules)


class SafeFetcher:
    """Fetches ``http(s)`` URLs under the rules above; at most ``max_concurrent`` at once (more wait
    for a slot only until their own deadline)."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_bytes: int = 10 * 2**20,
        allow_hosts: Iterable[str] = (),
        max_concurrent: int = 16,
        ssl_context: ssl.SSLContext | None = None,
    ):
        """``ssl_context``: how https certificates are checked (default: the system's trust store)."""
        self.timeout, self.max_bytes = timeout, max_bytes
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.allow_rules = parse_allow_list(allow_hosts)
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def fetch(self, url: str, deadline: float | None = None) -> FetchedImage:
        """The body of ``url`` (status 200 only); ``deadline`` (``time.monotonic()``) caps ``timeout``."""
        deadline = min(deadline or float("inf"), time.monotonic() + self.timeout)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(f"not an http(s) URL with a host: {url!r}")
        if parts.username or parts.password:
            raise FetchRefused(f"credentials in the URL: {parts.hostname}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as err:
            raise FetchRefused(f"bad port in {url!r}") from err
        addresses = self.checked_addresses(parts.hostname, port)
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise FetchRefused(f"no fetch slot free before the deadline for {parts.hostname}")
        try:
            return self._get(parts, addresses, port, deadline)
        finally:
            self._slots.release()

    def checked_addresses(self, host: str, port: int) -> list[str]:
        """The resolved addresses of ``host``; every one must pass `allowed` (a name that resolves to
        one public and one private address is refused)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise FetchError(f"cannot resolve {host!r}: {err}") from err
        addresses = [info[4][0] for info in infos]
        for address in addresses:
            if not self.allowed(host, address, port):
                raise FetchRefused(f"{host!r} resolves to {address}, which is not a global address")
        return list(dict.fromkeys(addresses))

    def allowed(self, host: str, address: str, port: int) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
        if any(rule.matches(host.strip("[]"), ip, port) for rule in self.allow_rules):
            return True
        return ip.is_global and not ip.is_multicast

    def _connect(self, addresses: list[str], port: int, deadline: float) -> socket.socket:
        """A connection to the first checked address that answers (never to a name: no second lookup)."""
        error: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=max(0.01, deadline - time.monotonic()))
            except OSError as err:
                error = err
        raise FetchError(f"cannot connect to {addresses} port {port}: {error}")

    def _get(self, parts: urllib.parse.SplitResult, addresses: list[str], port: int, deadline: float) -> FetchedImage:
        sock = self._connect(addresses, port, deadline)
        # One deadline for everything after the connect: closing the socket wakes a blocked recv.
        current = [sock]  # the TLS wrapper takes over the descriptor: the watchdog shuts whichever is live
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), lambda: _shut(current[0]))
        watchdog.daemon = True
        watchdog.start()
        try:
            if parts.scheme == "https":
                sock = current[0] = self.ssl_context.wrap_socket(sock, server_hostname=parts.hostname)
            connection = http.client.HTTPConnection(parts.hostname, port)
            connection.sock = sock
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            connection.request("GET", path, headers={"Host": parts.netloc, "Accept": "image/*"})
            response = connection.getresponse()
            if response.status != 200:
                kind = "a redirect (not followed)" if 300 <= response.status < 400 else f"HTTP {response.status}"
                raise FetchError(f"{parts.hostname} answered {kind}")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise FetchError(f"{parts.hostname}: Content-Length {length} over {self.max_bytes} bytes")
            data = response.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise FetchError(f"{parts.hostname}: body over {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"{parts.hostname}: deadline passed")
            return FetchedImage(data, response.getheader("Content-Type"))
        except FetchError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as err:
            late = time.monotonic() >= deadline
            raise FetchError(f"{parts.hostname}: {'deadline passed' if late else type(err).__name__}: {err}") from err
        finally:
            watchdog.cancel()
            _shut(current[0])


@functools.lru_cache(maxsize=8)
def shared_fetcher(timeout: float, max_bytes: int, allow_hosts: tuple[str, ...] = ()) -> SafeFetcher:
    """One `SafeFetcher` per setting for in-process loads (building the TLS context reads the system's
    trust store, too slow to repeat for every image)."""
    return SafeFetcher(timeout=timeout, max_bytes=max_bytes, allow_hosts=allow_hosts)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
