"""
Client addresses behind reverse proxies.

Behind nginx every connection comes from the proxy's address; the client's
is in C{X-Forwarded-For}, which anyone can also send.  The gateway reads it
only from the proxies it is told to trust (the C{trusted_proxies} setting):
walking the header from the right, the first address that is not a trusted
proxy is the client.  The login lockout per address, the anonymous sessions
per address and the access log then see the real client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["TrustedProxies", "parseNetworks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parseNetworks(values: Iterable[str]) -> tuple[Network, ...]:
    """
    Addresses or networks (C{10.0.0.5}, C{10.0.0.0/8}, C{::1}).

    @raise ValueError: one of them is neither.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or a network like 10.0.0.0/8") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        # [2001:db8::1]:443
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """
    The proxies whose C{X-Forwarded-For} the gateway believes.
    """

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = parseNetworks(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str | None) -> bool:
        """
        Whether C{host} (a connection's peer address) is a trusted proxy.
        """
        if not self.networks or host is None:
            return False
        address = _address(host)
        return address is not None and self._trusted(address)

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def clientAddress(self, peerHost: str | None,
                      forwardedFor: Sequence[bytes | str] | None) -> str | None:
        """
        The client's address for a connection from C{peerHost} carrying the
        C{X-Forwarded-For} header values C{forwardedFor}: the peer itself
        unless it is a trusted proxy; otherwise the rightmost forwarded
        address that is not a trusted proxy (the leftmost, if all are).  A
        header that cannot be read is ignored: the peer's address is used.
        """
        if not forwardedFor or not self.trusts(peerHost):
            return peerHost
        hops: list[str] = []
        for value in forwardedFor:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            hops.extend(text.split(","))
        client = peerHost
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # Garbage, or an obfuscated "unknown": trust nothing further
                # left, and go no further than the last proxy we trust.
                return client
            client = str(address)
            if not self._trusted(address):
                return client
        return client
