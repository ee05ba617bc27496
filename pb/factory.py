"""
Client and server factories, and the shortcuts for connecting.

L{PBServerFactory} serves a root object, a portal (login), or a bare realm
(anonymous login only); L{PBClientFactory} gets the server's root object and
logs in.  L{connect} and L{getObjectAt} are the one-call ways to reach a
server.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.credentials import IAnonymous
from twisted.cred.portal import IRealm, Portal
from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .broker import Broker, BrokerOptions, RemoteReference
from .flavors import IPBRoot
from .jelly import TypeRegistry
from .login import respond

__all__ = ["PBClientFactory", "PBServerFactory", "connect", "getObjectAt"]


def _options(options: BrokerOptions | None, unsafeTracebacks: bool) -> BrokerOptions:
    options = options if options is not None else BrokerOptions()
    if unsafeTracebacks and not options.unsafeTracebacks:
        options = BrokerOptions(**{**_asdict(options), "unsafeTracebacks": True})
    return options


def _asdict(options: BrokerOptions) -> dict[str, Any]:
    import attrs

    return attrs.asdict(options)


class PBClientFactory(protocol.ClientFactory):
    """
    Connect with me, then ask for the root object or log in; both can be
    asked before the connection is made.
    """

    protocol = Broker

    def __init__(
        self,
        unsafeTracebacks: bool = False,
        security: TypeRegistry | None = None,
        *,
        options: BrokerOptions | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.unsafeTracebacks = unsafeTracebacks
        self.security = security
        self.options = _options(options, unsafeTracebacks)
        self.clock = clock
        self.deferred: Deferred[Broker] = Deferred()
        self._connecting: Broker | None = None
        self._reset()

    def buildProtocol(self, addr: Any) -> Broker:
        broker = self.protocol(True, self.security, self.options, self.clock)
        broker.factory = self
        self._connecting = broker
        broker.notifyOnDisconnect(lambda: self._lostBeforeReady(broker))
        return broker

    def _reset(self) -> None:
        self.rootObjectRequests: list[Deferred[RemoteReference]] = []
        self._broker: Broker | None = None
        self._root: RemoteReference | None = None

    def _failAll(self, reason: Failure) -> None:
        requests = self.rootObjectRequests
        self._reset()
        for d in requests:
            d.errback(reason)
        if not self.deferred.called:
            self.deferred.errback(reason)
            self.deferred.addErrback(lambda _: None)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self._failAll(reason)

    def clientConnectionLost(self, connector: Any, reason: Failure, reconnecting: bool = False) -> None:
        if reconnecting:
            self._broker = None
            self._root = None
        else:
            self._failAll(reason)

    def clientConnectionMade(self, broker: Broker) -> None:
        self._broker = broker
        self._root = broker.remoteForName("root")
        broker.notifyOnDisconnect(lambda: self._brokerLost(broker))
        requests, self.rootObjectRequests = self.rootObjectRequests, []
        for d in requests:
            d.callback(self._root)
        if not self.deferred.called:
            self.deferred.callback(broker)

    def _brokerLost(self, broker: Broker) -> None:
        if self._broker is broker:
            from twisted.internet.error import ConnectionLost

            self._failAll(Failure(ConnectionLost("PB connection lost")))

    def _lostBeforeReady(self, broker: Broker) -> None:
        # Lost during negotiation (a TLS certificate refused, a peer that
        # closed at once): connected through an endpoint, nobody calls
        # clientConnectionLost, and the root object requests would wait
        # forever.
        if self._broker is None and self._connecting is broker:
            from twisted.internet.error import ConnectionLost

            self._failAll(Failure(ConnectionLost("PB connection lost before it was ready")))

    def getRootObject(self) -> Deferred[RemoteReference]:
        """
        The server's root object, once connected.
        """
        if self._broker is not None and not self._broker.disconnected:
            assert self._root is not None
            return succeed(self._root)
        d: Deferred[RemoteReference] = Deferred()
        self.rootObjectRequests.append(d)
        return d

    def disconnect(self) -> None:
        """
        Close the connection, if any, also one still negotiating (a peer
        that accepted the connection but never answers).
        """
        broker = self._broker if self._broker is not None else self._connecting
        if broker is not None and broker.transport is not None:
            broker.transport.loseConnection()

    def login(self, credentials: Any, client: Any = None) -> Deferred[RemoteReference]:
        """
        Log in with C{twisted.cred} credentials (a username and password, as
        str or bytes, or C{Anonymous()}); the Deferred fires with a
        reference to the avatar.  C{client} is the mind the server's realm
        receives.
        """
        d = self.getRootObject()
        if IAnonymous.providedBy(credentials):
            return d.addCallback(lambda root: root.callRemote("loginAnonymous", client))
        username = credentials.username
        password = credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")

        def sendUsername(root: RemoteReference) -> Deferred[Any]:
            return root.callRemote("login", username).addCallback(sendResponse)

        def sendResponse(challenges: Any) -> Deferred[Any]:
            challenge, challenger = challenges
            return challenger.callRemote("respond", respond(challenge, password), client)

        return d.addCallback(sendUsername)


class PBServerFactory(protocol.ServerFactory):
    """
    Serve PB: every connection's root object comes from C{root} (an
    L{IPBRoot} such as L{pb.Root}), or is the login object of C{portal}.

    A C{twisted.cred} L{Portal} may also be given as C{root} (as Twisted
    does), and a bare realm is served with anonymous login only.

    @param security: the L{TypeRegistry} of the types connections accept.
    """

    protocol = Broker

    def __init__(
        self,
        root: Any = None,
        security: TypeRegistry | None = None,
        portal: Portal | None = None,
        *,
        unsafeTracebacks: bool = False,
        options: BrokerOptions | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if portal is not None and root is not None:
            raise TypeError("give PBServerFactory a root or a portal, not both")
        if portal is None and root is None:
            raise TypeError("PBServerFactory needs a root object, a realm or a portal")
        if portal is None and isinstance(root, Portal):
            portal = root
        if portal is None and IRealm.providedBy(root) and not IPBRoot.providedBy(root):
            portal = Portal(root, [AllowAnonymousAccess()])
        self.root = IPBRoot(portal if portal is not None else root)
        self.security = security
        self.portal = portal
        self.unsafeTracebacks = unsafeTracebacks
        self.options = _options(options, unsafeTracebacks)
        self.clock = clock

    def buildProtocol(self, addr: Any) -> Broker:
        broker = self.protocol(False, self.security, self.options, self.clock)
        broker.factory = self
        broker.setNameForLocal("root", self.root.rootObject(broker))
        return broker

    def clientConnectionMade(self, protocol: Broker) -> None:
        pass


def connect(
    host: str,
    port: int,
    factory: protocol.ClientFactory,
    contextFactory: Any = None,
    bindAddress: Any = None,
    *,
    timeout: float = 30,
    reactor: Any = None,
) -> Deferred[Broker]:
    """
    Connect C{factory} to a PB server (over TLS when C{contextFactory} is
    given); the Deferred fires with the connected L{Broker}.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint

    endpoint: Any
    if contextFactory is not None:
        endpoint = SSL4ClientEndpoint(
            reactor, host, port, contextFactory, timeout=timeout, bindAddress=bindAddress
        )
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout, bindAddress=bindAddress)
    d: Deferred[Broker] = endpoint.connect(factory)

    def failed(reason: Failure) -> Failure:
        if isinstance(factory, PBClientFactory):
            factory._failAll(reason)
        return reason

    return d.addErrback(failed)


def getObjectAt(
    host: str, port: int, timeout: float = 30, *, reactor: Any = None
) -> Deferred[RemoteReference]:
    """
    Connect to a PB server and get its root object, within C{timeout}
    seconds (connection and PB negotiation together).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    factory = PBClientFactory(clock=reactor)
    connected = connect(host, port, factory, timeout=timeout, reactor=reactor)
    connected.addErrback(lambda _: None)
    root = factory.getRootObject()

    return root.addTimeout(timeout, reactor, onTimeoutCancel=_timeoutError(factory))


def _timeoutError(factory: PBClientFactory) -> Any:
    def onTimeoutCancel(result: Any, timeout: float) -> Any:
        from .errors import CallTimeout

        factory.disconnect()
        if isinstance(result, Failure):
            return Failure(CallTimeout(f"no PB root object within {timeout:g} seconds"))
        return result

    return onTimeoutCancel

