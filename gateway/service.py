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
from .rest import GatewayAPI, makeSite
from .sessions import GatewayOptions, SessionTable

__all__ = ["GatewayService"]


class GatewayService(MultiService):
    """
    Serve the gateway's HTTP API (and, later, WebSocket and dashboard) on
    C{httpEndpoint}, in front of the broker named in C{options.broker}.
    """

    def __init__(self, reactor: Any, httpEndpoint: str, options: GatewayOptions) -> None:
        super().__init__()
        self.reactor = reactor
        self.options = options
        self.table = SessionTable(reactor, options)
        self.api = GatewayAPI(self.table, options)
        self.site = makeSite(self.api.app.resource(), options)
        self.connections = ConnectionLimit(self.site, options.maxConnections, reactor)
        self.api.metrics.gauge("pbgw_connections", "Open client connections (HTTP, WebSocket).",
                               self.connections.openConnections)
        self.listener = EndpointService(reactor, httpEndpoint, self.connections, "Gateway (HTTP)")
        self.listener.setServiceParent(self)

    def whenListening(self) -> Deferred[IListeningPort]:
        return self.listener.whenListening()

    def stopService(self) -> Deferred[Any]:
        self.table.closeAll()
        return super().stopService()
