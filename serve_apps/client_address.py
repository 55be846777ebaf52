"""Who is calling, on the network: the socket peer, or the caller that trusted proxies name.

The login limits, the failed-authentication limit and the audit log key on this address, so a
caller must not be able to choose it. `X-Forwarded-For` is a list of hops that each proxy
appends to; only the hops that proxies we trust appended can be believed.

Guarantees of `ClientAddresses.of`:
- with no trusted proxies (the default), the caller is the socket peer: `X-Forwarded-For` from
  anyone changes nothing;
- when the peer is a trusted proxy, the caller is the rightmost hop of `X-Forwarded-For` that is
  not itself a trusted proxy (every hop left of it was written by someone we do not trust);
  when every hop is trusted, the leftmost; a trusted peer that sends no hops is the caller;
- behind Ray Serve's HTTP proxy, whose uvicorn already replaced the peer by a hop of
  `X-Forwarded-For` when the peer was one of the hosts it trusts (`FORWARDED_ALLOW_IPS`,
  loopback by default), that replacement is undone first: a peer equal to the hop uvicorn
  picks is taken as a peer of uvicorn's trusted hosts (the first of them). The one caller this
  misjudges is one that names its own address as its last hop: it is counted as that trusted
  host, never as an address of its choosing;
- the address is at most `MAX_LENGTH` characters (the audit log's column).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_LENGTH: Final = 64
FORWARDED_FOR: Final = "x-forwarded-for"
UVICORN_DEFAULT_TRUST: Final = ("127.0.0.1", "::1")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True)
class TrustedProxies:
    """A set of addresses and networks; `parse` is the only way in."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Addresses ("10.0.0.7", "::1") and networks ("10.0.0.0/8"); "*" means every address.
        `ValueError` naming the first entry that is neither."""
        networks: list[Network] = []
        for entry in entries:
            text = str(entry).strip()
            if text == "*":
                networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {text!r} is not an IP address or network "
                                 "(CIDR)") from None
        return cls(tuple(networks))

    @property
    def networks_text(self) -> tuple[str, ...]:
        return tuple(str(network) for network in self.networks)

    def __contains__(self, host: object) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def first_host(self) -> str | None:
        """The first address these networks hold, standing for "one of them"."""
        return str(self.networks[0].network_address) if self.networks else None


def _address(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(host, str) or not host:
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_hops(values: Iterable[str]) -> list[str]:
    """The hosts of every `X-Forwarded-For` value, in order, ports removed."""
    return [_host_of(item.strip()) for value in values for item in value.split(",")
            if item.strip()]


def _host_of(hop: str) -> str:
    """A hop without its port, as uvicorn reads it: `[v6]:port`, `v4:port` or a bare host."""
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end != -1 else hop
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        return host if port.isdigit() else hop
    return hop


def rightmost_untrusted(hops: Sequence[str], trusted: TrustedProxies) -> str | None:
    """The hop the nearest untrusted party wrote; the leftmost when all are trusted."""
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else None


class ClientAddresses:
    """Resolves a request's caller address. `trusted`: our reverse proxies; `upstream`: the
    hosts an ASGI server in front of the app already trusted (Serve's proxy), or None when the
    app sees socket peers as they are."""

    def __init__(self, trusted: TrustedProxies,
                 upstream: TrustedProxies | None = None) -> None:
        self.trusted = trusted
        self.upstream = upstream

    def resolve(self, peer: str | None, hops: Sequence[str]) -> str | None:
        """The caller address of a request from `peer` with these forwarded `hops`."""
        if (self.upstream is not None and self.upstream.networks and hops and peer is not None
                and peer == rightmost_untrusted(hops, self.upstream)):
            peer = self.upstream.first_host()
        if peer is None:
            return None
        if hops and peer in self.trusted:
            return (rightmost_untrusted(hops, self.trusted) or peer)[:MAX_LENGTH]
        return peer[:MAX_LENGTH]

    def of(self, request: Request) -> str | None:
        """The caller address of `request` (computed once per request)."""
        known = getattr(request.state, "client_address", ...)
        if known is not ...:
            return known
        hops = forwarded_hops(request.headers.getlist(FORWARDED_FOR))
        address = self.resolve(request.client.host if request.client else None, hops)
        request.state.client_address = address
        return address
