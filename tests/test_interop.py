"""
Interop over real loopback TCP: our C{pb} on one end of a connection and
Twisted's C{twisted.spread.pb} on the other, in both directions.

Twisted is the oracle for the wire format.  Every check is written once, in
L{InteropChecks}, against an L{Implementation} for each end; the test cases
at the bottom run the checks with our server and Twisted's client, and with
Twisted's server and our client.  The server- and client-side classes share
their logic through mixins and differ only in the PB base classes they are
built on.

The network helpers (L{listen}, L{connect}, L{closeBroker}) work for brokers
of either implementation; C{test_examples} uses them too.
"""

from __future__ import annotations

import abc
import gc
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from twisted.cred.checkers import (
    AllowAnonymousAccess,
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import pb
from pb.credentials import InMemoryMD5Checker

TEST_TIMEOUT = 10
"""Seconds a test may run before trial fails it (each takes well under one)."""

POINT_TYPE = b"pb-gateway.interop.Point"
THERMOMETER_TYPE = b"pb-gateway.interop.Thermometer"


# -- the network ---------------------------------------------------------------


@attrs.frozen
class Served:
    """
    A PB server factory listening on 127.0.0.1.

    @ivar port: the TCP port number.
    @ivar brokers: the server-side broker of every connection accepted so far.
    """

    port: int
    brokers: list[Any]


def _fromCoroutine(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], Any]:
    return lambda: Deferred.fromCoroutine(coroutine())


async def listen(testCase: TestCase, factory: Any) -> Served:
    """
    Serve C{factory} on a free loopback port until C{testCase} ends; its
    cleanup stops listening and closes every accepted connection.
    """
    brokers: list[Any] = []
    buildProtocol = factory.buildProtocol

    def recordingBuildProtocol(addr: Any) -> Any:
        broker = buildProtocol(addr)
        brokers.append(broker)
        return broker

    factory.buildProtocol = recordingBuildProtocol
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(factory)

    async def close() -> None:
        await port.stopListening()
        for broker in brokers:
            await closeBroker(broker)

    testCase.addCleanup(_fromCoroutine(close))
    return Served(port.getHost().port, brokers)


async def connect(testCase: TestCase, factory: Any, port: int) -> Any:
    """
    Connect C{factory} to C{port} on 127.0.0.1, closing the connection when
    C{testCase} ends.

    @return: the client-side broker.
    """
    endpoint = endpoints.clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}:timeout=5")
    broker = await endpoint.connect(factory)
    testCase.addCleanup(_fromCoroutine(lambda: closeBroker(broker)))
    return broker


async def closeBroker(broker: Any) -> None:
    """
    Close a broker's connection (ours or Twisted's) and wait until it is lost.
    """
    if broker.disconnected:
        return
    lost: Deferred[None] = Deferred()
    broker.notifyOnDisconnect(lambda: lost.callback(None))
    broker.transport.loseConnection()
    await lost


async def failureOf(call: Callable[..., Any], *args: Any) -> Failure:
    """
    The failure of C{call(*args)}, as the caller's implementation delivers it
    to an errback (Twisted's raw C{CopiedFailure}, not the C{RemoteError} a
    coroutine would see).
    """
    caught: list[Failure] = []
    result = await maybeDeferred(call, *args).addErrback(caught.append)
    if not caught:
        raise AssertionError(f"expected a failure, got {result!r}")
    return caught[0]


# -- what happens on the server ------------------------------------------------


class EventLog:
    """
    Things that happened on the server, for tests to wait for.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self._waiting: dict[str, list[Deferred[None]]] = {}

    def record(self, event: str) -> None:
        self.events.append(event)
        for d in self._waiting.pop(event, []):
            d.callback(None)

    def when(self, event: str) -> Deferred[None]:
        """
        Fires once C{event} has happened (at once if it already has).
        """
        if event in self.events:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(event, []).append(d)
        return d


# -- the logic of the objects, shared by both implementations ------------------


class PointLogic:
    """
    A point in the plane, passed by copy: a Copyable that is also the
    RemoteCopy for its own type tag.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def getTypeToCopy(self) -> bytes:
        return POINT_TYPE


class ThermometerLogic:
    """
    A Cacheable temperature; every observer is told of every change.
    """

    def __init__(self, events: EventLog) -> None:
        self.temperature = 20
        self.events = events
        self.observers: dict[Any, Any] = {}

    def getTypeToCopy(self) -> bytes:
        return THERMOMETER_TYPE

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> dict[str, Any]:
        # Keyed by connection: Twisted's observers cannot be compared reliably.
        self.observers[observer.broker] = observer
        return {"temperature": self.temperature}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        del self.observers[observer.broker]
        self.events.record("stoppedObserving")

    def setTemperature(self, temperature: int) -> Deferred[Any]:
        self.temperature = temperature
        return gatherResults(
            [o.callRemote("setTemperature", temperature) for o in self.observers.values()]
        )


class ThermometerCopyLogic:
    """
    The client's copy of the thermometer.
    """

    temperature: int

    def observe_setTemperature(self, temperature: int) -> None:
        self.temperature = temperature


class CounterLogic:
    """
    A server object lent by reference.
    """

    count = 0

    def remote_increment(self) -> int:
        self.count += 1
        return self.count


class EchoLogic:
    """
    A client object lent by reference to the server.
    """

    def remote_echo(self, value: Any) -> tuple[str, Any]:
        return ("echoed", value)


class MindLogic:
    """
    The client object given at login, which the avatar calls back.
    """

    def __init__(self) -> None:
        self.pokes: list[Any] = []

    def remote_poke(self, value: int) -> int:
        self.pokes.append(value)
        return value * 2


class RootLogic:
    """
    The root object of the servers without login.
    """

    def __init__(self, implementation: Implementation, events: EventLog) -> None:
        self.implementation = implementation
        self.counter = implementation.Counter()
        self.thermometer = implementation.Thermometer(events)

    def remote_add(self, a: Any, b: Any) -> Any:
        return a + b

    def remote_getCounter(self) -> Any:
        return self.counter

    def remote_isCounter(self, reference: Any) -> bool:
        return reference is self.counter

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_keep(self, value: Any) -> None:
        self.kept = value

    def remote_giveBack(self) -> Any:
        return self.kept

    def remote_callBack(self, reference: Any, value: Any) -> Deferred[Any]:
        return reference.callRemote("echo", value)

    def remote_movePoint(self, point: Any, dx: int) -> Any:
        Point = self.implementation.Point
        if not isinstance(point, Point):
            raise TypeError(f"expected a {Point.__name__}, got {point!r}")
        return Point(point.x + dx, point.y)

    def remote_getThermometer(self) -> Any:
        return self.thermometer

    def remote_setTemperature(self, temperature: int) -> Deferred[Any]:
        return self.thermometer.setTemperature(temperature)

    def remote_refuse(self) -> None:
        raise self.implementation.Refused("not today")

    def remote_fail(self) -> None:
        raise ValueError("bad value")


class UserLogic:
    """
    A logged-in user; C{avatarId} is C{b"alice"}, or C{()} when anonymous.
    """

    def __init__(self, avatarId: Any, mind: Any) -> None:
        self.avatarId = avatarId
        self.mind = mind

    def perspective_whoami(self) -> Any:
        return self.avatarId

    def perspective_pokeMind(self, value: int) -> Deferred[Any]:
        return self.mind.callRemote("poke", value)


@implementer(IRealm)
class InteropRealm:
    """
    Gives every login a new user avatar of C{implementation}; each logout is
    recorded as C{"logout:<name>"}.
    """

    def __init__(self, implementation: Implementation, events: EventLog) -> None:
        self.implementation = implementation
        self.events = events

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        IPerspective = self.implementation.IPerspective
        if IPerspective not in interfaces:
            raise NotImplementedError("only PB perspectives here")
        name = avatarId.decode() if isinstance(avatarId, bytes) else "anonymous"
        avatar = self.implementation.User(avatarId, mind)
        return IPerspective, avatar, lambda: self.events.record(f"logout:{name}")


# -- the two implementations ---------------------------------------------------


class OurPoint(PointLogic, pb.Copyable, pb.RemoteCopy):
    pass


class OurThermometer(ThermometerLogic, pb.Cacheable):
    pass


class OurThermometerCopy(ThermometerCopyLogic, pb.RemoteCache):
    pass


class OurCounter(CounterLogic, pb.Referenceable):
    pass


class OurEcho(EchoLogic, pb.Referenceable):
    pass


class OurMind(MindLogic, pb.Referenceable):
    pass


class OurRoot(RootLogic, pb.Root):
    pass


class OurUser(UserLogic, pb.Avatar):
    pass


class OurRefused(pb.Error):
    """
    An expected failure, on our side.
    """


OUR_REGISTRY = pb.TypeRegistry()
"""Our brokers' types: a registry of their own, so nothing global changes."""
OUR_REGISTRY.setUnjellyableForClass(POINT_TYPE, OurPoint)
OUR_REGISTRY.setUnjellyableForClass(THERMOMETER_TYPE, OurThermometerCopy)


class TwistedPoint(PointLogic, twistedPB.Copyable, twistedPB.RemoteCopy):
    pass


class TwistedThermometer(ThermometerLogic, twistedPB.Cacheable):
    pass


class TwistedThermometerCopy(ThermometerCopyLogic, twistedPB.RemoteCache):
    pass


class TwistedCounter(CounterLogic, twistedPB.Referenceable):
    pass


class TwistedEcho(EchoLogic, twistedPB.Referenceable):
    pass


class TwistedMind(MindLogic, twistedPB.Referenceable):
    pass


class TwistedRoot(RootLogic, twistedPB.Root):
    pass


class TwistedUser(UserLogic, twistedPB.Avatar):
    pass


class TwistedRefused(twistedPB.Error):
    """
    An expected failure, on Twisted's side.
    """


@attrs.frozen
class ErrorInfo:
    """
    A remote failure as the client saw it, in the same terms for both
    implementations.

    @ivar typeName: the qualified name of the remote exception's class.
    @ivar isPBError: whether it was a PB C{Error} (an expected failure).
    """

    typeName: str
    message: str
    isPBError: bool


class Implementation(abc.ABC):
    """
    One PB implementation, with the test's classes built on it.
    """

    name: str
    IPerspective: Any
    Broker: type
    DeadReferenceError: type[Exception]
    Point: type[PointLogic]
    Thermometer: type
    Counter: type
    Echo: type
    Mind: type
    Root: type[RootLogic]
    User: type[UserLogic]
    Refused: type[Exception]
    quietAboutCallerMistakes: bool
    """Whether the server logs no traceback for a refused login or a missing method."""

    def __repr__(self) -> str:
        return f"<{self.name}>"

    @abc.abstractmethod
    def serverFactory(self, root: Any) -> Any:
        """
        A server factory for a root object, or for a portal.
        """
        ...

    @abc.abstractmethod
    def clientFactory(self) -> Any:
        ...

    @abc.abstractmethod
    def passwordChecker(self) -> ICredentialsChecker:
        """
        A checker that knows alice, whose password is "wonderland".
        """
        ...

    def registerTypes(self, testCase: TestCase) -> None:  # noqa: B027 (a default: nothing)
        """
        Register the copy and cache classes for as long as C{testCase} runs.
        """

    @abc.abstractmethod
    def errorInfo(self, failure: Failure) -> ErrorInfo:
        """
        What a client of this implementation learnt from a remote failure.
        """
        ...


class OurImplementation(Implementation):
    name = "pb"
    IPerspective = pb.IPerspective
    Broker = pb.Broker
    DeadReferenceError = pb.DeadReferenceError
    Point = OurPoint
    Thermometer = OurThermometer
    Counter = OurCounter
    Echo = OurEcho
    Mind = OurMind
    Root = OurRoot
    User = OurUser
    Refused = OurRefused
    quietAboutCallerMistakes = True

    def serverFactory(self, root: Any) -> Any:
        return pb.PBServerFactory(root, security=OUR_REGISTRY)

    def clientFactory(self) -> Any:
        return pb.PBClientFactory(security=OUR_REGISTRY, clock=reactor)

    def passwordChecker(self) -> ICredentialsChecker:
        checker = InMemoryMD5Checker()
        checker.addUser("alice", "wonderland")
        return checker

    def errorInfo(self, failure: Failure) -> ErrorInfo:
        error = failure.value
        if isinstance(error, pb.RemoteError):
            return ErrorInfo(error.remoteType, error.value, error.isPBError)
        return ErrorInfo(qual(type(error)), str(error), isinstance(error, pb.Error))


class TwistedImplementation(Implementation):
    name = "twisted.spread.pb"
    IPerspective = twistedPB.IPerspective
    Broker = twistedPB.Broker
    DeadReferenceError = twistedPB.DeadReferenceError
    Point = TwistedPoint
    Thermometer = TwistedThermometer
    Counter = TwistedCounter
    Echo = TwistedEcho
    Mind = TwistedMind
    Root = TwistedRoot
    User = TwistedUser
    Refused = TwistedRefused
    quietAboutCallerMistakes = False

    def serverFactory(self, root: Any) -> Any:
        return twistedPB.PBServerFactory(root)

    def clientFactory(self) -> Any:
        return twistedPB.PBClientFactory()

    def passwordChecker(self) -> ICredentialsChecker:
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(b"alice", b"wonderland")
        return checker

    def registerTypes(self, testCase: TestCase) -> None:
        registerTwistedType(testCase, POINT_TYPE, TwistedPoint)
        registerTwistedType(testCase, THERMOMETER_TYPE, TwistedThermometerCopy)

    def errorInfo(self, failure: Failure) -> ErrorInfo:
        remoteType: Any = failure.type
        # A CopiedFailure names the remote class in bytes, and its value is a str.
        if isinstance(remoteType, bytes):
            typeName = remoteType.decode("utf-8")
        else:
            typeName = qual(remoteType)
        isPBError = failure.check(twistedPB.Error) is not None
        return ErrorInfo(typeName, str(failure.value), isPBError)


def registerTwistedType(testCase: TestCase, typeTag: bytes, cls: type) -> None:
    """
    Register C{cls} for C{typeTag} in Twisted's process-global registry until
    C{testCase} ends.
    """
    twistedJelly.setUnjellyableForClass(typeTag, cls)
    # Keyed by bytes, whatever its annotation says.
    registry: dict[Any, Any] = twistedJelly.unjellyableRegistry
    testCase.addCleanup(lambda: registry.pop(typeTag, None))
    testCase.addCleanup(lambda: twistedJelly.globalSecurity.allowedTypes.pop(typeTag, None))


OURS = OurImplementation()
TWISTED = TwistedImplementation()


# -- the checks ----------------------------------------------------------------


@attrs.frozen
class Connection:
    """
    A client connected to a server of the test.

    @ivar served: the server.
    @ivar factory: the client factory.
    @ivar broker: the client-side broker.
    """

    served: Served
    factory: Any
    broker: Any


if TYPE_CHECKING:
    _ChecksBase = TestCase
else:
    # A mixin: a TestCase base would make the runners collect it on its own.
    _ChecksBase = object


class InteropChecks(_ChecksBase):
    """
    The checks, run by the L{TestCase}s below for each pairing.
    """

    server: Implementation
    client: Implementation
    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.events = EventLog()
        for implementation in {self.server, self.client}:
            implementation.registerTypes(self)

    async def connectTo(self, root: Any) -> Connection:
        """
        Serve C{root} (a root object or a portal) and connect a client to it.
        """
        served = await listen(self, self.server.serverFactory(root))
        factory = self.client.clientFactory()
        broker = await connect(self, factory, served.port)
        return Connection(served, factory, broker)

    async def connectToRoot(self) -> tuple[RootLogic, Any, Connection]:
        """
        Serve a root object and connect to it.

        @return: the server's root object, the client's reference to it, and
            the connection.
        """
        root = self.server.Root(self.server, self.events)
        connection = await self.connectTo(root)
        return root, await connection.factory.getRootObject(), connection

    async def connectToPortal(self) -> Connection:
        """
        Serve a portal that knows alice and lets anyone in anonymously.
        """
        realm = InteropRealm(self.server, self.events)
        checkers = [self.server.passwordChecker(), AllowAnonymousAccess()]
        return await self.connectTo(Portal(realm, checkers))

    async def test_opposite(self) -> None:
        """
        The server and the client really are the two implementations.
        """
        _, _, connection = await self.connectToRoot()
        self.assertIsNot(self.server, self.client)
        self.assertIsInstance(connection.served.brokers[0], self.server.Broker)
        self.assertIsInstance(connection.broker, self.client.Broker)

    async def test_rootCall(self) -> None:
        """
        The root object's remote methods answer, called by name or through
        C{remoteMethod}.
        """
        _, rootRef, _ = await self.connectToRoot()
        self.assertEqual(await rootRef.callRemote("add", 5, 3), 8)
        self.assertEqual(await rootRef.callRemote("add", "py", "thon"), "python")
        self.assertEqual(await rootRef.remoteMethod("add")([1], [2]), [1, 2])

    async def test_passwordLogin(self) -> None:
        """
        A password login gets the avatar for the user, whose avatar ID is the
        user name in bytes.
        """
        connection = await self.connectToPortal()
        avatar = await connection.factory.login(UsernamePassword(b"alice", b"wonderland"))
        self.assertEqual(await avatar.callRemote("whoami"), b"alice")

    async def test_wrongPassword(self) -> None:
        """
        A wrong password is refused with C{UnauthorizedLogin}; our server does
        not log a traceback for it.
        """
        connection = await self.connectToPortal()
        failure = await failureOf(
            connection.factory.login, UsernamePassword(b"alice", b"looking-glass")
        )
        self.assertIsNotNone(failure.check(UnauthorizedLogin), failure)
        logged = self.flushLoggedErrors(UnauthorizedLogin)
        self.assertEqual(bool(logged), not self.server.quietAboutCallerMistakes)

    async def test_anonymousLogin(self) -> None:
        """
        An anonymous login gets an avatar whose avatar ID is C{()}.
        """
        connection = await self.connectToPortal()
        avatar = await connection.factory.login(Anonymous())
        self.assertEqual(await avatar.callRemote("whoami"), ())

    async def test_mindCalledBack(self) -> None:
        """
        The mind given at login reaches the avatar as a reference, and the
        avatar's calls on it run the client's methods.
        """
        connection = await self.connectToPortal()
        mind = self.client.Mind()
        avatar = await connection.factory.login(UsernamePassword(b"alice", b"wonderland"), mind)
        self.assertEqual(await avatar.callRemote("pokeMind", 21), 42)
        self.assertEqual(mind.pokes, [21])

    async def test_logoutOnRelease(self) -> None:
        """
        When the client drops its last reference to the avatar, the server
        runs the avatar's logout, with the connection still open.
        """
        connection = await self.connectToPortal()
        avatar = await connection.factory.login(UsernamePassword(b"alice", b"wonderland"))
        self.assertEqual(await avatar.callRemote("whoami"), b"alice")
        loggedOut = self.events.when("logout:alice")
        self.assertEqual(self.events.events, [])
        del avatar
        gc.collect()
        await loggedOut
        self.assertFalse(connection.broker.disconnected)

    async def test_referenceableFromServer(self) -> None:
        """
        A Referenceable the server returns arrives as a reference whose calls
        run on the server's object.
        """
        root, rootRef, _ = await self.connectToRoot()
        counter = await rootRef.callRemote("getCounter")
        self.assertEqual(await counter.callRemote("increment"), 1)
        self.assertEqual(await counter.callRemote("increment"), 2)
        self.assertEqual(root.counter.count, 2)

    async def test_referenceBackToServer(self) -> None:
        """
        A reference passed back to the server arrives as the server's own
        object.
        """
        _, rootRef, _ = await self.connectToRoot()
        counter = await rootRef.callRemote("getCounter")
        self.assertIs(await rootRef.callRemote("isCounter", counter), True)
        self.assertIs(await rootRef.callRemote("isCounter", rootRef), False)

    async def test_referenceableFromClient(self) -> None:
        """
        A Referenceable the client passes arrives as a reference the server
        can call back.
        """
        _, rootRef, _ = await self.connectToRoot()
        echo = self.client.Echo()
        self.assertEqual(await rootRef.callRemote("callBack", echo, 7), ("echoed", 7))

    async def test_referenceBackToClient(self) -> None:
        """
        A reference the server kept from an earlier call, passed back to the
        client, arrives as the client's own object.
        """
        _, rootRef, _ = await self.connectToRoot()
        echo = self.client.Echo()
        await rootRef.callRemote("keep", echo)
        self.assertIs(await rootRef.callRemote("giveBack"), echo)

    async def test_referenceEchoedToClient(self) -> None:
        """
        The server returning a client reference from the very call that passed
        it gives the client its own object: our server keeps the references
        that arrived in a call until its answer is sent.

        Twisted's server does not: its reference to the argument dies, and its
        decref is sent, before the answer naming the object.  Our client copes:
        what it lends in a call stays lent until that call's answer arrives.
        """
        _, rootRef, _ = await self.connectToRoot()
        echo = self.client.Echo()
        answers: list[Any] = []
        await rootRef.callRemote("echo", echo).addBoth(answers.append)
        self.assertIs(answers[0], echo)

    async def test_copyableBothWays(self) -> None:
        """
        A Copyable sent by the client arrives as the server's RemoteCopy class,
        and the one the server returns as the client's.
        """
        _, rootRef, _ = await self.connectToRoot()
        moved = await rootRef.callRemote("movePoint", self.client.Point(1, 2), 10)
        self.assertIsInstance(moved, self.client.Point)
        self.assertEqual((moved.x, moved.y), (11, 2))

    async def test_cacheable(self) -> None:
        """
        A Cacheable arrives with its state, receives the server's C{observe_*}
        updates, and when the client drops it the server stops observing.
        """
        root, rootRef, _ = await self.connectToRoot()
        thermometer = await rootRef.callRemote("getThermometer")
        self.assertEqual(thermometer.temperature, 20)
        self.assertEqual(len(root.thermometer.observers), 1)
        await rootRef.callRemote("setTemperature", 25)
        self.assertEqual(thermometer.temperature, 25)
        stopped = self.events.when("stoppedObserving")
        del thermometer
        gc.collect()
        await stopped
        self.assertEqual(root.thermometer.observers, {})

    async def test_pbError(self) -> None:
        """
        A PB C{Error} raised by a remote method reaches the client as an
        expected failure with its type and message, and is not logged.
        """
        _, rootRef, _ = await self.connectToRoot()
        failure = await failureOf(rootRef.callRemote, "refuse")
        info = self.client.errorInfo(failure)
        self.assertEqual(info, ErrorInfo(qual(self.server.Refused), "not today", True))
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_unexpectedError(self) -> None:
        """
        Another exception reaches the client with its type and message (a
        C{ValueError} is checkable as one), and the server logs its traceback.
        """
        _, rootRef, _ = await self.connectToRoot()
        failure = await failureOf(rootRef.callRemote, "fail")
        self.assertIsNotNone(failure.check(ValueError), failure)
        info = self.client.errorInfo(failure)
        self.assertEqual(info, ErrorInfo("builtins.ValueError", "bad value", False))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_missingMethod(self) -> None:
        """
        Calling a method the object does not have fails with an
        C{AttributeError}; our server does not log a traceback for it.
        """
        _, rootRef, _ = await self.connectToRoot()
        failure = await failureOf(rootRef.callRemote, "noSuchMethod")
        self.assertIsNotNone(failure.check(AttributeError), failure)
        self.assertIn("noSuchMethod", self.client.errorInfo(failure).message)
        logged = self.flushLoggedErrors(AttributeError)
        self.assertEqual(bool(logged), not self.server.quietAboutCallerMistakes)

    async def test_notifyOnDisconnect(self) -> None:
        """
        When the server closes the connection, the client's references call
        their disconnect callbacks, and later calls fail with
        C{DeadReferenceError}.
        """
        _, rootRef, connection = await self.connectToRoot()
        counter = await rootRef.callRemote("getCounter")
        notified: Deferred[Any] = Deferred()
        counter.notifyOnDisconnect(notified.callback)
        await closeBroker(connection.served.brokers[0])
        self.assertIs(await notified, counter)
        failure = await failureOf(counter.callRemote, "increment")
        self.assertIsNotNone(failure.check(self.client.DeadReferenceError), failure)


class OurServerTwistedClientTests(InteropChecks, TestCase):
    """
    Our server, Twisted's client.
    """

    server = OURS
    client = TWISTED


class TwistedServerOurClientTests(InteropChecks, TestCase):
    """
    Twisted's server, our client.
    """

    server = TWISTED
    client = OURS
