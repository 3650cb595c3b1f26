"""Where a schedule whose URL an agent key set may send its request: public addresses, and this project.

A schedule may call any http(s) URL, loopback and private networks included, as InsForge's may: the project
admin sets it, and can run owner SQL anyway. An agent key is a narrower credential, and a schedule's run log
shows each call's status: pointed at internal addresses (a cloud's metadata service at 169.254.169.254, the
database's host, 10.0.0.0/8), a schedule would let the agent map and reach the internal network. So a
schedule whose URL an agent key set last may call only public addresses (`is_public`), and this project's
own URL (`Settings.base_url`, its local address, or a path such as `/functions/report`): an agent can still
schedule its own functions.

The rule is checked twice:

- **When an agent sets the URL** (create, update): an IP literal that is not public, or a name any of whose
  addresses is not, is refused. A name that does not resolve now is taken: every run checks again.
- **At each run of such a schedule** (marked `url_set_by_agent` on its row): the name is resolved again,
  every address checked, and the request sent to a checked address itself, so that a name that resolved to
  a public address when it was set and resolves to 127.0.0.1 now (DNS rebinding, or a zero TTL between the
  check and the connect) is not called.

How the checked address is dialled (`dialled`): the request's URL names the address, its `Host` header the
name, and for https the `sni_hostname` extension hands TLS the name, so SNI and the certificate check are
against the name as for any call. Each such run has an HTTP client of its own (`trust_env` off: no proxy
that would resolve the name itself), so no pooled connection made for one name carries a request for
another name at the same address. Checking the name and then letting httpx resolve it again would leave a
window between the two lookups; a network backend that checks at connect time would close it as well, but
httpx's transport takes none through its public API, and the address rewrite is a few plain lines.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence

import httpx

from kilnbase.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 ranges that carry an IPv4 address in their last 32 bits: IPv4-compatible (deprecated) and NAT64's
#: well-known prefix. (IPv4-mapped and 6to4 have `ipaddress`'s own accessors.) A gateway translates them to
#: the IPv4 address, so they are judged as it is.
_CARRY_IPV4 = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b::/96"))
#: NAT64 for local use (RFC 8215): never public, whatever `is_global` says.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The longest host a message quotes (a DNS name has at most 253 characters).
_MAX_HOST_SHOWN = 253


class OutOfReach(Exception):
    """The URL's host is, or resolves to, an address that is not public."""

    def __init__(self, host: str, address: Address) -> None:
        super().__init__(f"{host[:_MAX_HOST_SHOWN]} is {address} ({kind(address)}), not a public address")
        self.host = host
        self.address = address


class Unresolved(Exception):
    """The URL's host has no address now (or none within the time limit)."""


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _CARRY_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def is_public(address: Address) -> bool:
    """Whether `address` is on the public internet (`is_global`, multicast excluded); an IPv6 address that
    carries an IPv4 one (`::ffff:127.0.0.1`, `2002:7f00:1::`, `64:ff9b::a9fe:a9fe`) is judged as that IPv4
    address, since that is where a connection to it ends up."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False  # (a scope is an interface of this machine: link-local)
        carried = _carried_ipv4(address)
        if carried is not None:
            return is_public(carried)
        if address in _LOCAL_NAT64:
            return False
    return address.is_global and not address.is_multicast


def kind(address: Address) -> str:
    """What kind of address it is, for a message: loopback, link-local, private, ..."""
    judged: Address = address
    if isinstance(address, ipaddress.IPv6Address):
        judged = _carried_ipv4(address) or address
    for label, yes in (
        ("unspecified", judged.is_unspecified),
        ("loopback", judged.is_loopback),
        ("link-local", judged.is_link_local),
        ("multicast", judged.is_multicast),
        ("private", judged.is_private),
    ):
        if yes:
            return label
    return "reserved" if not is_public(address) else "public"


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Reach:
    """The rule for one project: its own URLs (taken whatever their address), and how long a name may take
    to resolve."""

    def __init__(self, own_urls: Sequence[str], resolve_seconds: float) -> None:
        self._own = [httpx.URL(url) for url in own_urls]
        self._resolve_seconds = resolve_seconds

    @classmethod
    def of(cls, settings: Settings) -> Reach:
        """The project's public URL and its local address (where a path is called) are its own; a name
        resolves within the schedules' connect time limit."""
        own = (settings.base_url, settings.local_url)
        return cls(own, settings.schedules.connect_timeout_seconds)

    @property
    def own_url(self) -> str:
        """The project's URL, as messages name it."""
        return str(self._own[0]).rstrip("/")

    def is_own(self, url: str) -> bool:
        """A path on this server, or a URL at one of the project's own origins (under its path, when the
        project's URL has one)."""
        if url.startswith("/"):
            return True
        target = httpx.URL(url)
        for own in self._own:
            if (
                target.scheme == own.scheme
                and target.host == own.host
                and _port(target) == _port(own)
                and _under(target.path, own.path)
            ):
                return True
        return False

    async def checked(self, url: str) -> list[Address] | None:
        """None for the project's own URL (called as it is); else the addresses of the URL's host, every
        one of them public (an IP literal: itself). `OutOfReach` when one is not; `Unresolved` when the name
        has no address now."""
        if self.is_own(url):
            return None
        target = httpx.URL(url)
        literal = _literal(target.host)
        addresses = [literal] if literal is not None else await self._resolve(target.host, _port(target))
        for address in addresses:
            if not is_public(address):
                raise OutOfReach(target.host, address)
        return addresses

    async def _resolve(self, host: str, port: int | None) -> list[Address]:
        loop = asyncio.get_running_loop()
        shown = host[:_MAX_HOST_SHOWN]
        try:
            async with asyncio.timeout(self._resolve_seconds):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise Unresolved(f"{shown} did not resolve within {self._resolve_seconds:g} s") from None
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise Unresolved(f"{shown} does not resolve ({reason})") from None
        found: dict[Address, None] = {}
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                found[ipaddress.ip_address(sockaddr[0])] = None
        if not found:
            raise Unresolved(f"{shown} does not resolve (no IPv4 or IPv6 address)")
        return list(found)


def _port(url: httpx.URL) -> int | None:
    return url.port or _DEFAULT_PORTS.get(url.scheme)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def dialled(
    url: str, address: Address, headers: Mapping[str, str]
) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The request to `url` sent to `address` itself: the URL naming the address, the `Host` header naming
    the URL's host (unless the schedule sets its own), and for https the name TLS checks the certificate
    against (SNI). An IP literal's URL is already its address, and goes as it is."""
    target = httpx.URL(url)
    if _literal(target.host) is not None:
        return target, dict(headers), {}
    sent = dict(headers)
    if not any(name.lower() == "host" for name in sent):
        sent["Host"] = target.netloc.decode("ascii")
    extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
    return target.copy_with(host=str(address)), sent, extensions
