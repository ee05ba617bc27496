"""
Hosting: run a PB service on a listening endpoint, as a Twisted service.

A service is what a C{MODULE:FACTORY} callable returns: a L{pb.Root}
(served as every connection's root object), a realm (served behind a portal
with password login from a credential file and, if allowed, anonymous
login), or a ready C{twisted.cred} portal.  If the object is also a Twisted
C{IService} (the demo's statistics clock, say), it starts and stops with the
broker.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from .broker import Broker, BrokerOptions
from .credentials import FilePasswordChecker, InMemoryMD5Checker, UserFile
from .factory import PBServerFactory
from .flavors import IPBRoot

__all__ = ["BrokerService", "EndpointService", "ServiceError", "TrackingServerFactory", "loadService", "makePortal"]


class ServiceError(Exception):
    """
    A service cannot be loaded or served; the message says why in one line.
    """


def loadService(spec: str) -> Any:
    """
    Import C{MODULE:FACTORY} and call the factory: the service object.
    """
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ServiceError(f"--service must look like MODULE:FACTORY, not {spec!r}")
    try:
        imported = importlib.import_module(module)
    except ImportError as e:
        raise ServiceError(f"cannot import {module!r}: {e}") from None
    factory: Any = imported
    for part in name.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ServiceError(f"{module!r} has no attribute {name!r}")
    if not callable(factory):
        raise ServiceError(f"{spec} is not callable")
    try:
        service = factory()
    except Exception as e:
        raise ServiceError(f"{spec}() failed: {type(e).__name__}: {e}") from None
    if not (
        IPBRoot.providedBy(service) or IRealm.providedBy(service) or isinstance(service, Portal)
    ):
        raise ServiceError(
            f"{spec} returned {type(service).__name__}: expected a pb.Root, a realm or a portal"
        )
    return service


def makePortal(service: Any, usersFile: str | None = None, anonymous: bool = False) -> Portal | None:
    """
    The portal to serve C{service} behind, or L{None} for a plain root.

    A realm gets a checker for C{usersFile} (or, without one, for the
    realm's own C{demoUsers} mapping, if it has one) and anonymous access
    when asked for or when the realm sets C{allowAnonymous}.

    @raise ServiceError: C{usersFile} is accessible to group or others.
    """
    if usersFile is not None:
        # The file's digests are enough to log in: a broker does not start
        # while group or others may read (or rewrite) it.
        problem = UserFile.checkPermissions(usersFile) if os.path.exists(usersFile) else None
        if problem is not None:
            raise ServiceError(problem)
    if isinstance(service, Portal):
        if usersFile is not None:
            service.registerChecker(FilePasswordChecker(usersFile))
        if anonymous:
            service.registerChecker(AllowAnonymousAccess())
        return service
    if not IRealm.providedBy(service):
        if usersFile is not None or anonymous:
            raise ServiceError("--users and --anonymous need a service with a realm or portal")
        return None
    checkers: list[ICredentialsChecker] = []
    if usersFile is not None:
        checkers.append(FilePasswordChecker(usersFile))
    elif getattr(service, "demoUsers", None):
        checker = InMemoryMD5Checker()
        demoUsers: dict[str, str] = getattr(service, "demoUsers")  # noqa: B009
        for username, password in demoUsers.items():
            checker.addUser(username, password)
        checkers.append(checker)
    if anonymous or getattr(service, "allowAnonymous", False):
        checkers.append(AllowAnonymousAccess())
    if not checkers:
        raise ServiceError("the service's realm has no way to log in: give --users or --anonymous")
    return Portal(service, checkers)


class TrackingServerFactory(PBServerFactory):
    """
    A server factory that knows its live connections and counts the calls
    they receive (for statistics and clean shutdown).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[Broker] = set()
        self._callsOfClosed = 0

    @property
    def callsReceived(self) -> int:
        """
        Calls received by all connections, past and present.
        """
        return self._callsOfClosed + sum(b.callsReceived for b in self.connections)

    def buildProtocol(self, addr: Any) -> Broker:
        broker = super().buildProtocol(addr)
        self.connections.add(broker)
        broker.notifyOnDisconnect(lambda: self._closed(broker))
        return broker

    def _closed(self, broker: Broker) -> None:
        self.connections.discard(broker)
        self._callsOfClosed += broker.callsReceived


class EndpointService(Service):
    """
    Listen with a factory on an endpoint string while running.

    @ivar port: the listening port once listening.
    """

    _log = Logger()

    def __init__(self, reactor: Any, endpoint: str, factory: Any, what: str) -> None:
        self.reactor = reactor
        self.endpointDescription = endpoint
        self.factory = factory
        self.what = what
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        Fires with the listening port (at once if listening already), or
        fails if listening failed.
        """
        d: Deferred[IListeningPort] = Deferred()
        if self.port is not None:
            d.callback(self.port)
        elif self._listening is not None:
            self._listening.addBoth(self._relay, d)
        return d

    @staticmethod
    def _relay(result: Any, d: Deferred[Any]) -> Any:
        if isinstance(result, Failure):
            d.errback(result)
            return None
        d.callback(result)
        return result

    def startService(self) -> None:
        super().startService()
        try:
            endpoint = serverFromString(self.reactor, self.endpointDescription)
        except (ValueError, TypeError, KeyError) as e:
            raise ServiceError(f"bad endpoint {self.endpointDescription!r}: {e}") from None
        self._listening = endpoint.listen(self.factory)
        self._listening.addCallback(self._listened)
        self._listening.addErrback(self._listenFailed)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address: Any = port.getHost()
        self._log.info(
            "{what} listening on {address}",
            what=self.what,
            address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
        )
        return port

    def _listenFailed(self, failure: Any) -> Any:
        self._log.error(
            "Cannot listen on {endpoint}: {reason}",
            endpoint=self.endpointDescription,
            reason=failure.getErrorMessage(),
        )
        return failure

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                return stopped
        return None


class BrokerService(MultiService):
    """
    Serve a PB service on an endpoint (a Twisted endpoint string such as
    C{tcp:8800} or C{ssl:8800:privateKey=key.pem:certKey=cert.pem}).
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: str,
        service: Any,
        usersFile: str | None = None,
        anonymous: bool = False,
        options: BrokerOptions | None = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.service = service
        portal = makePortal(service, usersFile, anonymous)
        if portal is not None:
            self.factory = TrackingServerFactory(portal=portal, options=options, clock=reactor)
        else:
            self.factory = TrackingServerFactory(service, options=options, clock=reactor)
        attach = getattr(service, "attachFactory", None)
        if callable(attach):
            attach(self.factory)
        if IService.providedBy(service):
            service.setServiceParent(self)
        self.listener = EndpointService(reactor, endpoint, self.factory, "PB broker")
        self.listener.setServiceParent(self)

    @property
    def port(self) -> IListeningPort | None:
        return self.listener.port

    def whenListening(self) -> Deferred[IListeningPort]:
        return self.listener.whenListening()

    def stopService(self) -> Deferred[Any]:
        for broker in list(self.factory.connections):
            if broker.transport is not None:
                broker.transport.loseConnection()
        return super().stopService()
