"""Where a webhook may go: only public addresses, checked once and pinned.

Guarantees: `forbidden_kind` names why an address is no place for a webhook (loopback,
private, link-local, multicast, reserved, site-local, non-public), judging an IPv6 address that
carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4 `2002::/16`, Teredo `2001::/32`, NAT64
`64:ff9b::/96` and `64:ff9b:1::/48`) by that IPv4 address too, whatever the running Python's
address tables say of the IPv6 prefix; `resolve_checked` resolves a host once and refuses the
lot if any address is not public, unless the operator allows private networks, or the address
lies in one of the networks the operator names (`allowed_networks`, from
YMERA_WEBHOOK_ALLOWED_NETWORKS: on-premises receivers pass while every other private address is
still refused); `PinnedResolver` makes the connection use exactly those addresses, so a second
DNS answer cannot rebind it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from actors.errors import InvalidTaskInput, RetryableAgentError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AddressLookup = Callable[..., Awaitable[list[tuple[Any, ...]]]]
"""`getaddrinfo`-like: called as `lookup(host, port, type=socket.SOCK_STREAM)`, answering
`(family, type, proto, canonname, sockaddr)` tuples (tests inject stubs)."""
NAT64_NETWORKS = (ipaddress.IPv6Network("64:ff9b::/96"),  # well-known prefix (RFC 6052)
                  ipaddress.IPv6Network("64:ff9b:1::/48"))  # local-use prefix (RFC 8215)


def embedded_ipv4(address: Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 transition address leads to, with the form's name: 6to4
    (2002::/16), Teredo (2001::/32, its client), NAT64 (64:ff9b::/96 and 64:ff9b:1::/48, the
    last 32 bits) or IPv4-compatible (::a.b.c.d); None for any other address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]
    if any(address in network for network in NAT64_NETWORKS):
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(address))
    return None


def forbidden_kind(address: Address) -> str | None:
    """Why `address` is no place for a webhook (loopback, private, …), or None if it is public.
    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64, IPv4-compatible) is
    judged by that IPv4 address too, whatever this Python's tables say of the IPv6 prefix."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return forbidden_kind(mapped)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        kind = forbidden_kind(ipv4)
        if kind is not None:
            return f"{form}-embedded {kind}"
        if form == "NAT64" and address not in NAT64_NETWORKS[0]:
            return "NAT64-local"  # 64:ff9b:1::/48 is a local-use prefix: never public
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if not address.is_global:
        return "non-public"
    return None


def parse_networks(entries: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks in CIDR form (a bare address is its own /32 or /128), from a comma-separated
    string or a list; `ValueError` names the entry that is not one."""
    items = entries.split(",") if isinstance(entries, str) else list(entries)
    networks: list[Network] = []
    for item in (entry.strip() for entry in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network in CIDR form (like 10.1.2.0/24 or "
                             f"127.0.0.1/32): {exc}") from exc
    return tuple(networks)


def in_networks(address: Address, networks: Iterable[Network]) -> bool:
    """Whether `address` (or the IPv4 address an IPv4-mapped one carries) lies in one of
    `networks`."""
    mapped = getattr(address, "ipv4_mapped", None)
    candidates = [address] if mapped is None else [address, mapped]
    return any(candidate.version == network.version and candidate in network
               for candidate in candidates for network in networks)


class PinnedResolver(AbstractResolver):
    """Answers every lookup with addresses checked beforehand, so the connection goes where the
    SSRF check looked and a second DNS answer cannot rebind it elsewhere."""

    def __init__(self, addresses: list[ResolveResult]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{**address, "hostname": host, "port": port} for address in self.addresses]

    async def close(self) -> None:
        pass


async def resolve_checked(host: str, port: int, allow_private: bool,
                          allowed_networks: Iterable[Network] = (),
                          lookup: AddressLookup | None = None) -> list[ResolveResult]:
    """Every address `host` resolves to (through `lookup`, default the event loop's
    getaddrinfo), refusing the lot if any one is not public, unless `allow_private` or the
    address lies in one of `allowed_networks`."""
    allowed = tuple(allowed_networks)
    try:
        infos = await (lookup or asyncio.get_running_loop().getaddrinfo)(
            host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        unknown = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        error = InvalidTaskInput if exc.errno in unknown else RetryableAgentError
        raise error(f"webhook host {host!r} does not resolve: {exc.strerror}",
                    {"field": "url", "host": host}) from exc
    addresses: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        kind = forbidden_kind(address)
        if kind and not allow_private and not in_networks(address, allowed):
            raise InvalidTaskInput(
                f"refusing to send a webhook to {host!r}: it resolves to {address}, a {kind} "
                "address; only public addresses are allowed unless the operator sets "
                "YMERA_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true or lists its network in "
                "YMERA_WEBHOOK_ALLOWED_NETWORKS",
                {"field": "url", "host": host, "address": str(address), "kind": kind})
        addresses.append({"hostname": host, "host": str(sockaddr[0]), "port": port,
                          "family": family, "proto": proto,
                          "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
    if not addresses:
        raise RetryableAgentError(f"webhook host {host!r} resolved to no address",
                                  {"host": host})
    return addresses
