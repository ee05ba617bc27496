"""
A bound on the gateway's open client connections (HTTP, WebSocket, SSE).

Every connection holds a file descriptor and buffers; past the limit a new
connection is answered with one HTTP 503 (C{too_many_connections}, with
C{Retry-After}) and closed, so the gateway keeps serving the clients it has
instead of running out of descriptors.

The site's protocols are not wrapped: autobahn takes a WebSocket's transport
over from the HTTP channel, and over TLS it needs that transport to be the
TLS protocol itself.  Instead the transport each connection starts with is
remembered, and a connection counts until that transport is no longer
connected, whichever protocol it ended with.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    ILoggingContext,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from .codec import dumps
from .errors import GatewayError

__all__ = ["ConnectionLimit"]


class TooManyConnections(GatewayError):
    """
    The gateway has as many connections as it may serve.
    """

    type = "unavailable"
    status = 503
    rpcCode = -32020


class _Refused(Protocol):
    """
    Answers a connection over the limit with a 503 and closes it: after the
    request's first bytes (closing with unread input would reset the
    connection and lose the answer), or after a few seconds of silence.
    """

    def __init__(self, clock: IReactorTime, limit: int) -> None:
        self.clock = clock
        self.limit = limit
        self.answered = False
        self.timer: Any = None

    def connectionMade(self) -> None:
        self.timer = self.clock.callLater(5, self._answer)

    def dataReceived(self, data: bytes) -> None:
        self._answer()

    def _answer(self) -> None:
        if self.answered:
            return
        self.answered = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        error = TooManyConnections(
            f"the gateway serves at most {self.limit} connections: try again soon",
            "too_many_connections",
        )
        body = dumps({"error": error.asJSON()})
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"retry-after: 1\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body) + body
        )
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


@implementer(IProtocolFactory, IProtocolNegotiationFactory, ILoggingContext)
class ConnectionLimit:
    """
    Serve C{site} on at most C{limit} connections at a time (0: no limit).
    """

    def __init__(self, site: Any, limit: int, clock: IReactorTime) -> None:
        self.site = site
        self.limit = limit
        self.clock = clock
        self._transports: set[Any] = set()
        self._pruneAt = self._MIN_PRUNE

    # The transports of closed connections are dropped when the set has
    # doubled since the last time (or reaches the limit): amortised O(1) per
    # connection, where a scan every time would make opening n connections
    # take O(n^2).
    _MIN_PRUNE = 64

    def openConnections(self) -> int:
        """
        The connections open now.
        """
        self._prune()
        return len(self._transports)

    def _prune(self) -> None:
        self._transports = {t for t in self._transports if getattr(t, "connected", False)}
        self._pruneAt = max(2 * len(self._transports), self._MIN_PRUNE)

    def buildProtocol(self, addr: Any) -> Any:
        held = len(self._transports)
        if held >= self._pruneAt or (self.limit and held >= self.limit):
            self._prune()
        if self.limit and len(self._transports) >= self.limit:
            return _Refused(self.clock, self.limit)
        protocol = self.site.buildProtocol(addr)
        if protocol is not None:
            makeConnection = protocol.makeConnection

            def tracked(transport: Any) -> None:
                self._transports.add(transport)
                makeConnection(transport)

            protocol.makeConnection = tracked
        return protocol

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def logPrefix(self) -> str:
        return str(self.site.logPrefix())

    def acceptableProtocols(self) -> list[bytes]:
        # TLS asks the factory it wraps (this one) which protocols ALPN may
        # pick; without the site's answer every TLS handshake fails.
        return list(self.site.acceptableProtocols())
