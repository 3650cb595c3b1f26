"""What a function may not reach over the network: the `--deny-net` list its Deno process starts with.

Functions call out (calling APIs is most of what they are for), so the network is allowed; but a function's
code is written by whoever deploys it, an agent key included, and some addresses are never its business:

- **The services Kilnbase itself stands on**: its Postgres and its Redis (rate limits, quotas, realtime). A
  function reaches the project's data through the API, as its caller (`createClient`), where RLS and the
  guardrails apply. Straight to Redis it could reset rate limits and quotas; the machine's Postgres often
  trusts local connections. Each is denied on every address of this machine where its port could answer
  (`127.0.0.0/8:<port>`, `[::1]:<port>`, each interface's address), and on the addresses its host names
  resolve to when the server starts.
- **The cloud's metadata service** (`169.254.0.0/16`, AWS's `[fd00:ec2::254]`): the machine's own cloud
  credentials, which no function should hold.
- Whatever the operator adds with `KILNBASE_FUNCTIONS_DENY_NET` (another local service's port, `10.0.0.0/8`).

Deno checks a connection's resolved address against the list when it connects, not only the name in the
URL, so a name that resolves to a denied address (DNS rebinding included) is refused too, and an IPv4-mapped
IPv6 address is judged as its IPv4 address. Deno takes IPv4 CIDR ranges, single IPv6 addresses in brackets
and names, each with an optional port; it does not take IPv6 ranges, so those cannot be listed.

The rest of loopback stays open: the functions host listens on it, functions call this project's API at its
local address, and Deno cannot deny a range but for one port. `docs/functions.md` says what that leaves.

**A function an agent key deployed** (or changed last: `deployed_by_agent`) gets `private_networks` besides:
loopback, RFC 1918, CGNAT, link-local and `0.0.0.0/8` (which reaches this machine), all but the address
functions call this API at (`Settings.local_host`), and `[::1]` unless that is it. An agent key is narrower
than an admin, as for schedules (`schedules/reach.py`): its code could map and reach the internal network,
and answer what it finds to its caller. IPv6 ULA and link-local ranges stay open: Deno takes no IPv6 range.
Such functions run in workers of their own, never in the shared functions host, whose one process has one
list. An admin deploying the function again lifts it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import psutil
from psycopg.conninfo import conninfo_to_dict

from kilnbase.config import Settings

#: Link-local (the metadata service of most clouds, at 169.254.169.254) and AWS's IPv6 metadata address.
ALWAYS_DENIED = ("169.254.0.0/16", "[fd00:ec2::254]")
_REDIS_PORT = 6379
_POSTGRES_PORT = 5432


def denied_hosts(settings: Settings, database_conninfo: str) -> tuple[str, ...]:
    """The `--deny-net` entries for this server: the metadata service, the addresses where the database and
    each configured Redis answer, and the operator's own. Resolves names (it blocks: call it in a thread)."""
    entries: dict[str, None] = dict.fromkeys(ALWAYS_DENIED)
    for host, port in _backing_services(settings, database_conninfo):
        entries.update(dict.fromkeys(_entries_for(host, port)))
    entries.update(dict.fromkeys(settings.functions.deny_net))
    return tuple(entries)


#: The IPv4 networks that are not the public internet and reach hosts (this machine included): "this
#: network" (0.0.0.0 connects to this machine), RFC 1918, CGNAT (RFC 6598), loopback, link-local.
PRIVATE_NETWORKS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")


def private_networks(settings: Settings) -> tuple[str, ...]:
    """The `--deny-net` entries added for functions an agent key deployed: `PRIVATE_NETWORKS` and `[::1]`,
    less the addresses of `Settings.local_host` (where functions call this project's API, as
    `INSFORGE_INTERNAL_URL`), each range cut around them. Resolves a name (it blocks: call it in a thread)."""
    kept = _addresses(settings.local_host, settings.port)
    entries: list[str] = []
    for cidr in PRIVATE_NETWORKS:
        pieces = [ipaddress.IPv4Network(cidr)]
        for address in kept:
            if isinstance(address, ipaddress.IPv4Address):
                pieces = [piece for network in pieces for piece in _without(network, address)]
        entries += [str(p.network_address) if p.prefixlen == 32 else str(p) for p in sorted(pieces)]
    if _IPV6_LOOPBACK not in kept:
        entries.append(f"[{_IPV6_LOOPBACK}]")
    return tuple(entries)


def _without(network: ipaddress.IPv4Network, address: ipaddress.IPv4Address) -> list[ipaddress.IPv4Network]:
    if address not in network:
        return [network]
    return list(network.address_exclude(ipaddress.IPv4Network(address)))


def _backing_services(settings: Settings, database_conninfo: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    params = conninfo_to_dict(database_conninfo)
    hosts = str(params.get("hostaddr") or params.get("host") or "").split(",")
    ports = str(params.get("port") or _POSTGRES_PORT).split(",")
    for index, host in enumerate(hosts):
        port = ports[index] if index < len(ports) else ports[-1]
        host = host.strip()
        if port.strip().isdigit():
            # A path (or, to libpq, `@name`: the abstract namespace) is a Unix socket, which no `--deny-net`
            # entry can name; its server may listen on loopback too (the embedded one does).
            found.append(("127.0.0.1" if not host or host.startswith(("/", "@")) else host, int(port)))
    for url in (settings.rate_limit_redis_url, settings.ai_redis_url, settings.realtime.redis_url):
        if url:
            parts = urlsplit(url)
            if parts.scheme in ("redis", "rediss") and parts.hostname:
                found.append((parts.hostname, parts.port or _REDIS_PORT))
    return found


def _entries_for(host: str, port: int) -> list[str]:
    """`host:port` as Deno writes it, for every address a connection to it could use."""
    addresses = _addresses(host, port)
    entries = [] if _literal(host) else [f"{host}:{port}"]
    local = _local_addresses()
    if any(address.is_loopback or address.is_unspecified or address in local for address in addresses):
        addresses += [*local, ipaddress.ip_address("::1")]
        entries += [f"127.0.0.0/8:{port}", f"0.0.0.0/8:{port}"]
    entries += [f"{_deno_host(address)}:{port}" for address in addresses if not address.is_loopback]
    entries += [f"[::1]:{port}"] if any(a.is_loopback for a in addresses) else []
    return entries


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []  # (it does not resolve now: its name is denied all the same)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _local_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This machine's addresses (a service bound to every interface answers on each), link-local aside."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                address = _literal(entry.address.split("%", 1)[0])
                if address is not None and not address.is_link_local:
                    found.append(address)
    return found


def _deno_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)
