"""Outgoing URLs: only public internet hosts, checked when saved and again when used.

Engage makes HTTP requests to URLs that its users supply (web push endpoints,
later webhooks). Without a check, such a URL is a way into the host's own network
(server-side request forgery): ``http://localhost:8080/admin``,
``https://169.254.169.254/`` (cloud metadata), a name whose DNS answer changes to
``10.0.0.5`` after it was saved...

:func:`check_url` refuses such URLs when they are saved. :func:`public_session`
is the HTTP client that sends to them: it resolves the host when it connects,
refuses the connection unless every address is public, connects to the address
it checked (a later DNS answer cannot swap it), follows no redirects and ignores
proxy settings from the environment.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from .errors import UnsafeAddress

__all__ = ["check_url", "is_public", "parse_url", "public_session", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longest URL accepted.
MAX_URL_LENGTH = 2048
#: NAT64's well-known prefix (RFC 6052): its last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to ``address`` really reaches (IPv4-mapped, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a 6to4 or Teredo address, if any."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public(address: str | IPAddress) -> bool:
    """True for a globally routable unicast address.

    Private, loopback, link-local, multicast, reserved, unspecified and shared
    (carrier-grade NAT) ranges are not public, in IPv4 and IPv6. An IPv6 address
    standing for an IPv4 one (``::ffff:127.0.0.1``, NAT64's ``64:ff9b::/96``) is
    judged by that IPv4 address; 6to4 and Teredo addresses must be public on both.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address):
        translated = _translated_ipv4(ip)
        if translated is not None:
            return is_public(translated)
        tunnelled = _tunnelled_ipv4(ip)
        if tunnelled is not None and not is_public(tunnelled):
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order.

    Raises ``socket.gaierror`` when it does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def parse_url(
    url: Any, field: str, *, allow_private: bool = False, https_only: bool = True
) -> SplitResult:
    """Check a URL's form without resolving it: http(s), a host, no credentials, and
    a public address when the host is written as one (unless ``allow_private``).

    ``http`` is refused when ``https_only`` unless ``allow_private`` (then
    :func:`check_url` accepts it only for hosts that are not public).
    """
    if not isinstance(url, str) or not url:
        raise UnsafeAddress(f"{field}: expected a URL", field=field)
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeAddress(f"{field}: URL is longer than {MAX_URL_LENGTH} characters", field=field)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise UnsafeAddress(f"{field}: not a valid URL", field=field) from None
    expected = "an https URL" if https_only else "an http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeAddress(f"{field}: expected {expected}", field=field)
    if parts.username is not None or parts.password is not None:
        raise UnsafeAddress(f"{field}: a URL must not carry credentials", field=field)
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise UnsafeAddress(
            f"{field}: URL must not contain spaces or control characters", field=field
        )
    if https_only and parts.scheme == "http" and not allow_private:
        raise UnsafeAddress(f"{field}: expected an https URL", field=field)
    if not allow_private and not _public_literal(parts.hostname):
        raise UnsafeAddress(
            f"{field}: host {parts.hostname!r} is not a public internet host", field=field
        )
    return parts


def _public_literal(host: str) -> bool:
    """False for a host written as an address that is not public; True otherwise."""
    try:
        return is_public(host)
    except ValueError:  # a name: checked once resolved
        return True


def check_url(url: Any, field: str, *, allow_private: bool = False, https_only: bool = True) -> str:
    """Return ``url`` if requests to it can only reach public hosts; else UnsafeAddress.

    The host is resolved now: every address must be public (see :func:`is_public`)
    unless ``allow_private``. With ``https_only``, plain ``http`` is accepted only
    when private hosts are allowed and the host is not public (a push service on
    the developer's machine). The messages never echo the addresses found.
    """
    parts = parse_url(url, field, allow_private=allow_private, https_only=https_only)
    insecure = https_only and parts.scheme == "http"
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        raise UnsafeAddress(f"{field}: host {host!r} does not resolve", field=field) from None
    public = [is_public(address) for address in addresses]
    if not allow_private and not all(public):
        raise UnsafeAddress(f"{field}: host {host!r} is not a public internet host", field=field)
    if insecure and any(public):
        raise UnsafeAddress(f"{field}: expected an https URL", field=field)
    return str(url)


def _connect_public(conn: HTTPConnection) -> socket.socket:
    """Open the connection's socket to a checked public address of its host."""
    try:
        addresses = resolve(conn.host, conn.port or 443)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    if not addresses or not all(is_public(address) for address in addresses):
        raise UnsafeAddress(f"host {conn.host!r} is not a public internet host", field="url")
    error: Exception | None = None
    for address in addresses:
        try:
            return create_connection(
                (address, conn.port or 443),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError:
            error = ConnectTimeoutError(conn, f"Connection to {conn.host} timed out")
        except OSError as exc:
            error = NewConnectionError(conn, f"Failed to establish a new connection: {exc}")
    assert error is not None
    raise error


class _PublicHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _PublicHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicAdapter(HTTPAdapter):
    """A transport whose connections reach public addresses only."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }


class _NoRedirects(requests.Session):
    """A session that answers a redirect as it is, never following it."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


def public_session(*, allow_private: bool = False) -> requests.Session:
    """An HTTP client for user-supplied URLs: no redirects, no proxies from the
    environment, and (unless ``allow_private``) connections to public addresses only.

    A refused connection raises :class:`~flask_engage.errors.UnsafeAddress`.
    """
    session = _NoRedirects()
    session.trust_env = False
    if not allow_private:
        adapter = _PublicAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
