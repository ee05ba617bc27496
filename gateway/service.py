"""
Hosting the gateway: the HTTP site on an endpoint, as a Twisted service.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort

from pb.service import EndpointService

from ._connections import ConnectionLimit
from .accesslog import AccessLog
from .rest import GatewayAPI, GatewayResource, makeSite
from .sessions import GatewayOptions, SessionTable

__all__ = ["GatewayService"]


class GatewayService(MultiService):
    """
    Serve the gateway's HTTP API, WebSocket and dashboard on C{httpEndpoint},
    in front of the broker named in C{options.broker}, logging requests to
    C{accessLog} (none if L{None}).
    """

    def __init__(self, reactor: Any, httpEndpoint: str, options: GatewayOptions,
                 accessLog: AccessLog | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.options = options
        self.table = SessionTable(reactor, options)
        self.api = GatewayAPI(self.table, options)
        self.accessLog = accessLog
        self.site = makeSite(GatewayResource(self.api), options, accessLog,
                             self.table.proxies)
        self.connections = ConnectionLimit(self.site, options.maxConnections, reactor)
        self.api.metrics.gauge("pbgw_connections", "Open client connections (HTTP, WebSocket).",
                               self.connections.openConnections)
        self.listener = EndpointService(reactor, httpEndpoint, self.connections, "Gateway (HTTP)")
        self.listener.setServiceParent(self)

    def whenListening(self) -> Deferred[IListeningPort]:
        return self.listener.whenListening()

    def stopService(self) -> Deferred[Any]:
        self.table.closeAll()
        stopped = super().stopService()
        if self.accessLog is not None:
            stopped.addBoth(self._closeAccessLog)
        return stopped

    def _closeAccessLog(self, result: Any) -> Any:
        assert self.accessLog is not None
        self.accessLog.close()
        return result
