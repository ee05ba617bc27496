"""
Tests for L{pb.broker} and the objects it passes, over in-memory connections.

Each connection is a pair of brokers joined by C{twisted.test.iosim}: our server with our
client, and where the behaviour concerns the other side too, our server with a Twisted
client or a Twisted server with our client (Twisted's C{twisted.spread.pb} is the oracle
for the wire format).  Call timeouts run on a L{Clock}.
"""

from __future__ import annotations

import gc
import random
from typing import Any

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.spread import flavors as twistedFlavors
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

import pb
from pb import banana
from pb.credentials import FilePasswordChecker, InMemoryMD5Checker, UserFile
from pb.jelly import qual

ALICE_PASSWORD = "alice-Secret-0x5eed"
BOB_PASSWORD = "bob-Secret-0xfeed"


# -- the objects served ---------------------------------------------------------------


class Refused(pb.Error):
    """
    An expected failure a remote method raises on purpose.
    """


class Thing(pb.Copyable):
    """
    A Copyable some registries accept.
    """

    def __init__(self, x: int) -> None:
        self.x = x


class RemoteThing(pb.RemoteCopy):
    """
    The local copy of a L{Thing}.
    """


class ObserverRecords:
    """
    The Cacheable methods that ours and a Twisted peer's share: record each
    observer, and when each stops observing.
    """

    def __init__(self) -> None:
        self.value = 1
        self.observers: list[Any] = []
        self.stopped: list[Any] = []

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.stopped.append(observer)


class Observed(ObserverRecords, pb.Cacheable):
    """
    A Cacheable that records its observers and when each stops observing.
    """


class RecordingCache(pb.RemoteCache):
    """
    A local copy of an L{Observed}, which shows that C{setCacheableState} was called.
    """

    def setCacheableState(self, state: Any) -> None:
        super().setCacheableState(state)
        self.cachedState = state

    def observe_setValue(self, value: Any) -> None:
        self.value = value


class Child(pb.Referenceable):
    """
    A Referenceable lent by L{Service}.
    """

    def remote_name(self) -> str:
        return "child"


def manyDicts(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item {i}", "ok": i % 2 == 0} for i in range(count)]


class ServiceMethods:
    """
    The remote methods that the roots of our servers and of Twisted's servers
    both answer, and answer alike.

    @ivar pending: the Deferreds of C{remote_wait} calls, fired by the tests.
    """

    pending: list[Deferred[Any]]

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_wait(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def remote_many(self, count: int) -> list[dict[str, Any]]:
        return manyDicts(count)

    def remote_fail(self) -> None:
        raise ValueError("bad value")


class Service(ServiceMethods, pb.Root):
    """
    The root object of our servers.

    @ivar received: the values C{remote_take} was given.
    """

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.pending: list[Deferred[Any]] = []
        self.gate: Deferred[None] = Deferred()
        self.cache = Observed()
        self.child = Child()

    def remote_two(self, a: Any, b: Any) -> Any:
        return (a, b)

    def remote_take(self, value: Any) -> str:
        self.received.append(value)
        return "took"

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_thing(self) -> Thing:
        return Thing(5)

    def remote_cache(self) -> Observed:
        return self.cache

    def remote_child(self) -> Child:
        return self.child

    def remote_bigString(self, size: int) -> str:
        return "x" * size

    def remote_unserializable(self) -> object:
        return object()

    def remote_refuse(self) -> None:
        raise Refused("not today")

    async def remote_double(self, x: int) -> int:
        await self.gate
        return x * 2


class TwistedThing(twistedPB.Copyable):
    """
    A Copyable of a Twisted peer.
    """

    def __init__(self, x: int) -> None:
        self.x = x


class TwistedObserved(ObserverRecords, twistedPB.Cacheable):
    """
    A Twisted peer's Cacheable, recording its observers.
    """


class TwistedService(ServiceMethods, twistedPB.Root):
    """
    The root object of Twisted servers.
    """

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []
        self.cache = TwistedObserved()

    def remote_thing(self) -> TwistedThing:
        return TwistedThing(5)

    def remote_cache(self) -> TwistedObserved:
        return self.cache


class User(pb.Avatar):
    """
    A logged-in user; counts its logouts.
    """

    def __init__(self, avatarId: Any) -> None:
        super().__init__(avatarId)
        self.logouts = 0

    async def perspective_greet(self, name: str) -> str:
        return f"hello {name}, this is {self.avatarId.decode()}"

    def perspective_document(self) -> Document:
        return DOCUMENT

    def perspective_pingMind(self, text: str) -> Deferred[Any]:
        return self.mind.callRemote("notice", text)

    def logout(self) -> None:
        self.logouts += 1


class Document(pb.Viewable):
    """
    A Viewable shared by every user.
    """

    async def view_whoAmI(self, perspective: Any, suffix: str) -> Any:
        return (perspective.avatarId, suffix)


DOCUMENT = Document()


class UserRealm(pb.Realm):
    """
    A realm handing out L{User}s, keeping each one.
    """

    def __init__(self) -> None:
        self.avatars: list[User] = []

    def createAvatar(self, avatarId: Any, mind: Any) -> Any:
        avatar = User(avatarId)
        avatar.mind = mind
        self.avatars.append(avatar)
        return avatar


class Mind(pb.Referenceable):
    """
    A client-side object passed at login, which the avatar can call.
    """

    def __init__(self) -> None:
        self.notices: list[str] = []

    def remote_notice(self, text: str) -> str:
        self.notices.append(text)
        return "noted"


def userPortal(realm: pb.Realm | None = None, checker: Any = None) -> tuple[Portal, Any]:
    """
    A portal for alice and bob, with its realm.
    """
    if realm is None:
        realm = UserRealm()
    if checker is None:
        checker = InMemoryMD5Checker()
        checker.addUser("alice", ALICE_PASSWORD)
        checker.addUser("bob", BOB_PASSWORD)
    return Portal(realm, [checker]), realm


# -- connections ----------------------------------------------------------------------


def ourClient(**kwargs: Any) -> pb.PBClientFactory:
    """
    Our client factory, on a L{Clock} unless one is given (calls never touch the
    global reactor).
    """
    kwargs.setdefault("clock", Clock())
    return pb.PBClientFactory(**kwargs)


def ourServer(root: Any = None, security: Any = None, portal: Any = None, **kwargs: Any) -> Any:
    """
    Our server factory, on a L{Clock} unless one is given.
    """
    kwargs.setdefault("clock", Clock())
    return pb.PBServerFactory(root, security, portal, **kwargs)


@attrs.frozen
class Connection:
    """
    Two brokers joined in memory, and the client's reference to the server's root.
    """

    client: Any
    server: Any
    pump: iosim.IOPump
    root: Any

    def call(self, ref: Any, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call a remote method and move the bytes until both sides are idle.
        """
        d = ref.callRemote(name, *args, **kwargs)
        self.pump.flush()
        return d

    def callRoot(self, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self.call(self.root, name, *args, **kwargs)

    def disconnect(self) -> None:
        """
        Close the connection from the client side; both sides see it lost.
        """
        self.client.transport.loseConnection()
        self.pump.flush()


def connect(testCase: SynchronousTestCase, serverFactory: Any, clientFactory: Any) -> Connection:
    """
    Connect a client factory to a server factory in memory and get the root object.
    """
    client, server, pump = iosim.connectedServerAndClient(
        lambda: serverFactory.buildProtocol(None), lambda: clientFactory.buildProtocol(None)
    )
    root = testCase.successResultOf(clientFactory.getRootObject())
    return Connection(client, server, pump, root)


def logIn(
    testCase: SynchronousTestCase,
    connection: Connection,
    clientFactory: Any,
    credentials: Any,
    mind: Any = None,
) -> Any:
    """
    Log in over C{connection} and return the reference to the avatar.
    """
    d = clientFactory.login(credentials, mind)
    connection.pump.flush()
    return testCase.successResultOf(d)


def lentID(broker: pb.Broker, obj: Any) -> Any:
    """
    The ID under which C{broker} lent C{obj} (or the wrapper lending it) to the peer.
    """
    for luid, local in broker.localObjects.items():
        if local.object is obj or getattr(local.object, "object", None) is obj:
            return luid
    raise AssertionError(f"{obj!r} is not lent")


# -- (1) a big answer -----------------------------------------------------------------


class BigAnswerTests(SynchronousTestCase):
    """
    A big answer, delivered in one chunk, arrives intact (decoding is linear, so it
    also arrives quickly; the banana tests measure that).
    """

    def test_tenThousandDicts(self) -> None:
        """
        A list of 10,000 small dicts from our server arrives equal at our client.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        result = self.successResultOf(connection.callRoot("many", 10_000))
        self.assertEqual(result, manyDicts(10_000))

    def test_tenThousandDictsFromTwisted(self) -> None:
        """
        The same list from a Twisted server arrives equal at our client.
        """
        connection = connect(self, twistedPB.PBServerFactory(TwistedService()), ourClient())
        result = self.successResultOf(connection.callRoot("many", 10_000))
        self.assertEqual(result, manyDicts(10_000))


# -- (2) per-broker registries --------------------------------------------------------


class PerBrokerRegistryTests(SynchronousTestCase):
    """
    Each factory's C{security} registry decides what its connections accept; a refused
    value fails the one call it came in, and the connection goes on.
    """

    def test_twoFactoriesDifferentRegistries(self) -> None:
        """
        Of two server factories in one process, the one whose registry allows
        L{Thing} receives it; the other fails the call with an error naming the type
        and never runs the method, and the same connection then answers another call.
        """
        accepting = pb.TypeRegistry()
        accepting.setUnjellyableForClass(Thing, RemoteThing)
        acceptingService, refusingService = Service(), Service()
        acceptingFactory = ourServer(acceptingService, accepting)
        refusingFactory = ourServer(refusingService, pb.TypeRegistry())

        accepted = connect(self, acceptingFactory, ourClient())
        self.assertEqual(self.successResultOf(accepted.callRoot("take", Thing(7))), "took")
        [received] = acceptingService.received
        self.assertIsInstance(received, RemoteThing)
        self.assertEqual(received.x, 7)

        refused = connect(self, refusingFactory, ourClient())
        failure = self.failureResultOf(refused.callRoot("take", Thing(7)), pb.RemoteError)
        self.assertIn(qual(Thing), str(failure.value))
        self.assertTrue(failure.value.remoteType.endswith("UnsafeValue"))
        self.assertEqual(refusingService.received, [])
        self.assertEqual(self.successResultOf(refused.callRoot("add", 1, 2)), 3)
        self.assertFalse(refused.server.disconnected)

    def test_refusalKeepsTwistedClientConnected(self) -> None:
        """
        When a Twisted client sends a type our server refuses, its call fails with a
        failure naming the type and the connection goes on (a Twisted server would
        drop it).
        """
        service = Service()
        connection = connect(self, ourServer(service), twistedPB.PBClientFactory())
        failure = self.failureResultOf(connection.callRoot("take", TwistedThing(7)))
        self.assertEqual(failure.type, b"pb.errors.UnsafeValue")
        self.assertIn(qual(TwistedThing), failure.value)
        self.assertEqual(service.received, [])
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_unknownCacheableReleased(self) -> None:
        """
        A Cacheable whose type our client refuses fails the call at the client, and
        the refusal releases the cache: the server's C{stoppedObserving} runs for the
        observer it handed out and its cache table is empty.
        """
        service = Service()
        connection = connect(
            self, ourServer(service), ourClient(security=pb.TypeRegistry(inherit=None))
        )
        failure = self.failureResultOf(connection.callRoot("cache"), pb.UnsafeValue)
        self.assertIn(qual(Observed), str(failure.value))
        self.assertEqual(len(service.cache.observers), 1)
        self.assertEqual(service.cache.stopped, service.cache.observers)
        self.assertEqual(connection.server.remotelyCachedObjects, {})
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_unknownCacheableReleasedOnTwistedServer(self) -> None:
        """
        The refusal releases a Twisted server's cache too: its C{stoppedObserving}
        runs.
        """
        service = TwistedService()
        connection = connect(
            self,
            twistedPB.PBServerFactory(service),
            ourClient(security=pb.TypeRegistry(inherit=None)),
        )
        self.failureResultOf(connection.callRoot("cache"), pb.UnsafeValue)
        self.assertEqual(len(service.cache.stopped), 1)
        self.assertEqual(connection.server.remotelyCachedObjects, {})
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_genericCopyAndCache(self) -> None:
        """
        A client whose registry allows generic holders receives an unknown Copyable
        as a L{pb.GenericCopy} and an unknown Cacheable as a L{pb.GenericRemoteCache},
        whose listeners get C{("observe_x", args, kwargs)} for each
        C{observer.callRemote("x", ...)} on the server.
        """
        service = Service()
        connection = connect(
            self, ourServer(service), ourClient(security=pb.TypeRegistry(allowGeneric=True))
        )
        generic = self.successResultOf(connection.callRoot("thing"))
        self.assertEqual(generic, pb.GenericCopy(qual(Thing), {"x": 5}))

        cache = self.successResultOf(connection.callRoot("cache"))
        self.assertIsInstance(cache, pb.GenericRemoteCache)
        self.assertEqual(cache.typeName, qual(Observed))
        self.assertEqual(cache.state, {"value": 1})
        events: list[Any] = []
        cache.addListener(lambda *event: events.append(event))
        [observer] = service.cache.observers
        first = observer.callRemote("x", 1, key="v")
        second = observer.callRemote("y")
        connection.pump.flush()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(events, [("observe_x", (1,), {"key": "v"}), ("observe_y", (), {})])

        del cache
        gc.collect()
        connection.pump.flush()
        self.assertEqual(service.cache.stopped, [observer])

    def test_genericFromTwistedServer(self) -> None:
        """
        Generic holders mirror a Twisted server's Copyable and Cacheable the same way.
        """
        service = TwistedService()
        connection = connect(
            self,
            twistedPB.PBServerFactory(service),
            ourClient(security=pb.TypeRegistry(allowGeneric=True)),
        )
        generic = self.successResultOf(connection.callRoot("thing"))
        self.assertEqual(generic, pb.GenericCopy(qual(TwistedThing), {"x": 5}))
        cache = self.successResultOf(connection.callRoot("cache"))
        self.assertIsInstance(cache, pb.GenericRemoteCache)
        events: list[Any] = []
        cache.addListener(lambda *event: events.append(event))
        [observer] = service.cache.observers
        observer.callRemote("x", 1, key="v")
        connection.pump.flush()
        self.assertEqual(events, [("observe_x", (1,), {"key": "v"})])


# -- (3) async methods ----------------------------------------------------------------


class AsyncMethodTests(SynchronousTestCase):
    """
    C{async def} remote, perspective and view methods answer with their results
    (Twisted's broker would send an Unpersistable instead).
    """

    def test_asyncRemoteMethod(self) -> None:
        """
        An C{async def remote_x} that waits answers when it returns, not before.
        """
        service = Service()
        connection = connect(self, ourServer(service), ourClient())
        d = connection.callRoot("double", 21)
        self.assertNoResult(d)
        service.gate.callback(None)
        connection.pump.flush()
        self.assertEqual(self.successResultOf(d), 42)

    def test_asyncRemoteMethodTwistedClient(self) -> None:
        """
        A Twisted client gets the result of an C{async def remote_x} too.
        """
        service = Service()
        connection = connect(self, ourServer(service), twistedPB.PBClientFactory())
        d = connection.callRoot("double", 21)
        service.gate.callback(None)
        connection.pump.flush()
        self.assertEqual(self.successResultOf(d), 42)

    def assertAsyncAvatar(self, clientFactory: Any) -> None:
        portal, _ = userPortal()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        avatar = logIn(
            self, connection, clientFactory, UsernamePassword(b"alice", ALICE_PASSWORD.encode())
        )
        greeting = self.successResultOf(connection.call(avatar, "greet", "you"))
        self.assertEqual(greeting, "hello you, this is alice")
        document = self.successResultOf(connection.call(avatar, "document"))
        who = self.successResultOf(connection.call(document, "whoAmI", "!"))
        self.assertEqual(tuple(who), (b"alice", "!"))

    def test_asyncPerspectiveAndViewMethods(self) -> None:
        """
        C{async def perspective_x} and C{async def view_x} answer our client.
        """
        self.assertAsyncAvatar(ourClient())

    def test_asyncPerspectiveAndViewMethodsTwistedClient(self) -> None:
        """
        C{async def perspective_x} and C{async def view_x} answer a Twisted client.
        """
        self.assertAsyncAvatar(twistedPB.PBClientFactory())


# -- (4) timeouts ---------------------------------------------------------------------


class TimeoutTests(SynchronousTestCase):
    """
    Every call is bounded: it times out, can be cancelled, and fails when the
    connection goes, leaving nothing behind in the broker's tables.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.service = Service()

    def connectWith(self, serverFactory: Any = None, **clientOptions: Any) -> Connection:
        if serverFactory is None:
            serverFactory = ourServer(self.service)
        return connect(self, serverFactory, ourClient(clock=self.clock, **clientOptions))

    def assertNothingWaiting(self, connection: Connection) -> None:
        self.assertEqual(connection.client.waitingForAnswers, {})
        self.assertEqual(connection.client._timeouts, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_callTimeout(self) -> None:
        """
        C{callRemote(..., _timeout=5)} fails with L{pb.CallTimeout} once 5 seconds
        pass without an answer, and leaves no waiting entry or timer behind.
        """
        connection = self.connectWith()
        d = connection.callRoot("wait", _timeout=5)
        self.assertEqual(len(connection.client.waitingForAnswers), 1)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, pb.CallTimeout)
        self.assertNothingWaiting(connection)

    def test_lateAnswerDropped(self) -> None:
        """
        An answer arriving after the timeout is dropped without error, and the
        connection goes on.
        """
        connection = self.connectWith()
        d = connection.callRoot("wait", _timeout=5)
        self.clock.advance(5)
        self.failureResultOf(d, pb.CallTimeout)
        self.service.pending[0].callback("late")
        connection.pump.flush()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(connection.client.disconnected)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)
        self.assertNothingWaiting(connection)

    def test_brokerDefault(self) -> None:
        """
        C{BrokerOptions(callTimeout=...)} bounds calls that give no timeout.
        """
        connection = self.connectWith(options=pb.BrokerOptions(callTimeout=2))
        d = connection.callRoot("wait")
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, pb.CallTimeout)
        self.assertNothingWaiting(connection)

    def test_explicitTimeoutWins(self) -> None:
        """
        A call's own C{_timeout} overrides the broker default, and C{_timeout=None}
        waits forever (no timer at all).
        """
        connection = self.connectWith(options=pb.BrokerOptions(callTimeout=2))
        longer = connection.callRoot("wait", _timeout=10)
        forever = connection.callRoot("wait", _timeout=None)
        self.clock.advance(9)
        self.assertNoResult(longer)
        self.clock.advance(1)
        self.failureResultOf(longer, pb.CallTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10_000)
        self.assertNoResult(forever)
        self.service.pending[1].callback("at last")
        connection.pump.flush()
        self.assertEqual(self.successResultOf(forever), "at last")

    def test_cancelRemovesEntry(self) -> None:
        """
        Cancelling a call's Deferred fails it with L{CancelledError}, removes its
        waiting entry and timer, and its answer is then dropped.
        """
        connection = self.connectWith()
        d = connection.callRoot("wait", _timeout=5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertNothingWaiting(connection)
        self.service.pending[0].callback("ignored")
        connection.pump.flush()
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_callAfterDisconnectFailsAtOnce(self) -> None:
        """
        A call on a reference whose connection is gone fails at once with
        L{pb.DeadReferenceError}, without waiting for any timeout.
        """
        connection = self.connectWith()
        connection.disconnect()
        d = connection.root.callRemote("add", 1, 2)
        self.failureResultOf(d, pb.DeadReferenceError)
        self.assertNothingWaiting(connection)

    def test_pendingCallsFailOnConnectionLost(self) -> None:
        """
        Calls waiting for an answer fail with L{pb.PBConnectionLost} when the
        connection drops, and their timers are cancelled.
        """
        connection = self.connectWith()
        first = connection.callRoot("wait")
        second = connection.callRoot("wait", _timeout=5)
        connection.disconnect()
        self.failureResultOf(first, pb.PBConnectionLost)
        self.failureResultOf(second, pb.PBConnectionLost)
        self.assertNothingWaiting(connection)

    def test_timeoutAgainstTwistedServer(self) -> None:
        """
        Timeouts work against a Twisted server, which knows nothing of them; the
        connection goes on after its late answer.
        """
        service = TwistedService()
        connection = self.connectWith(twistedPB.PBServerFactory(service))
        d = connection.callRoot("wait", _timeout=5)
        self.clock.advance(5)
        self.failureResultOf(d, pb.CallTimeout)
        self.assertNothingWaiting(connection)
        service.pending[0].callback("late")
        connection.pump.flush()
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_oneTimerForAllCalls(self) -> None:
        """
        However many calls wait, the broker holds one timer, due at the
        earliest deadline (a call with an earlier deadline than those waiting
        brings it forward); each call still fails at its own deadline, the
        others going on waiting.
        """
        connection = self.connectWith()
        five = connection.callRoot("wait", _timeout=5)
        eight = connection.callRoot("wait", _timeout=8)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [5])
        self.clock.advance(1)
        three = connection.callRoot("wait", _timeout=2)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [3])
        self.clock.advance(1.9)
        self.assertNoResult(three)
        self.clock.advance(0.1)
        self.failureResultOf(three, pb.CallTimeout)
        self.assertNoResult(five)
        self.assertNoResult(eight)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [5])
        self.clock.advance(2)
        self.failureResultOf(five, pb.CallTimeout)
        self.assertNoResult(eight)
        self.clock.advance(2.9)
        self.assertNoResult(eight)
        self.clock.advance(0.1)
        self.failureResultOf(eight, pb.CallTimeout)
        self.assertNothingWaiting(connection)

    def test_answeredCallsLeaveTheTimerToOthers(self) -> None:
        """
        An answer removes its call's deadline only: the timer stays while any
        call waits, fails those still waiting at their deadlines, and is gone
        once no call waits.
        """
        connection = self.connectWith()
        first = connection.callRoot("wait", _timeout=5)
        second = connection.callRoot("wait", _timeout=7)
        self.service.pending[0].callback("first")
        connection.pump.flush()
        self.assertEqual(self.successResultOf(first), "first")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(6.9)
        self.assertNoResult(second)
        self.clock.advance(0.1)
        self.failureResultOf(second, pb.CallTimeout)
        self.assertNothingWaiting(connection)
        third = connection.callRoot("wait", _timeout=5)
        self.service.pending[2].callback("third")
        connection.pump.flush()
        self.assertEqual(self.successResultOf(third), "third")
        self.assertNothingWaiting(connection)

    def test_callsTimingOutTogether(self) -> None:
        """
        Calls whose deadlines pass in one step of the clock fail in the order
        of their deadlines; a call made by a timed-out call's errback gets its
        own timeout.
        """
        connection = self.connectWith()
        failed: list[str] = []
        retried: list[Deferred[Any]] = []

        def timedOut(failure: Any, name: str) -> None:
            failure.trap(pb.CallTimeout)
            failed.append(name)
            if name == "late":
                retried.append(connection.root.callRemote("wait", _timeout=1))

        connection.callRoot("wait", _timeout=3).addErrback(timedOut, "late")
        connection.callRoot("wait", _timeout=1).addErrback(timedOut, "early")
        self.clock.advance(10)
        self.assertEqual(failed, ["early", "late"])
        (retry,) = retried
        self.assertNoResult(retry)
        self.clock.advance(1)
        self.failureResultOf(retry, pb.CallTimeout)
        self.assertNothingWaiting(connection)


# -- (5) oversized values -------------------------------------------------------------


class OversizedValueTests(SynchronousTestCase):
    """
    A value over the size limit fails its one call, at the side that produced it, and
    the connection goes on.
    """

    limits = pb.BrokerOptions(sizeLimit=1000)

    def test_oversizedArgumentFailsAtSender(self) -> None:
        """
        An argument string over the client's C{sizeLimit} fails the call at once with
        L{pb.TooLarge}: nothing is written, nothing waits for an answer, and the
        connection answers the next call.
        """
        service = Service()
        connection = connect(self, ourServer(service), ourClient(options=self.limits))
        d = connection.root.callRemote("take", "x" * 2000)
        self.assertEqual(connection.client.transport.stream, [])
        self.failureResultOf(d, pb.TooLarge)
        self.assertEqual(connection.client.waitingForAnswers, {})
        self.assertEqual(connection.client._timeouts, {})
        connection.pump.flush()
        self.assertEqual(service.received, [])
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_nothingLentInFailedMessage(self) -> None:
        """
        A Referenceable or Cacheable inside a message that could not be sent is not
        left registered, and the Cacheable stops observing at once.
        """
        connection = connect(self, ourServer(Service()), ourClient(options=self.limits))
        client = connection.client
        localObjects, luids = dict(client.localObjects), dict(client.luids)
        observed = Observed()
        d = connection.root.callRemote("take", [pb.Referenceable(), observed, "x" * 2000])
        self.failureResultOf(d, pb.TooLarge)
        self.assertEqual(client.localObjects, localObjects)
        self.assertEqual(client.luids, luids)
        self.assertEqual(client.remotelyCachedObjects, {})
        self.assertEqual(client.remotelyCachedLUIDs, {})
        self.assertEqual(observed.stopped, observed.observers)
        self.assertEqual(len(observed.stopped), 1)

    def test_oversizedReturnFailsCall(self) -> None:
        """
        A return value over the server's C{sizeLimit} fails the caller's call with a
        L{pb.RemoteError} whose C{remoteType} ends with C{TooLarge}, is not logged as
        unexpected, and the connection goes on (Twisted would drop it).
        """
        connection = connect(self, ourServer(Service(), options=self.limits), ourClient())
        failure = self.failureResultOf(connection.callRoot("bigString", 2000), pb.RemoteError)
        self.assertTrue(failure.value.remoteType.endswith("TooLarge"))
        self.assertIsInstance(failure.value, pb.TooLarge)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(connection.client.disconnected)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_oversizedReturnTwistedClient(self) -> None:
        """
        A Twisted client gets the same failure for an oversized return value and
        stays connected.
        """
        connection = connect(
            self, ourServer(Service(), options=self.limits), twistedPB.PBClientFactory()
        )
        failure = self.failureResultOf(connection.callRoot("bigString", 2000))
        self.assertEqual(failure.type, b"pb.errors.TooLarge")
        self.assertFalse(connection.client.disconnected)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)


# -- (6) login ------------------------------------------------------------------------


class LoginTests(SynchronousTestCase):
    """
    Password login: fresh random challenges, each answered once, checked against a
    user file that holds no plaintext, for our clients and Twisted's.
    """

    def test_challenge(self) -> None:
        """
        C{pb.challenge()} returns 16 random bytes, different each time.
        """
        first, second = pb.challenge(), pb.challenge()
        self.assertIsInstance(first, bytes)
        self.assertEqual(len(first), 16)
        self.assertEqual(len(second), 16)
        self.assertNotEqual(first, second)

    def test_challengerAnswersOnce(self) -> None:
        """
        A login challenge accepts one response only: after a wrong answer, even the
        right one is refused, so a response cannot be retried or replayed.
        """
        portal, _ = userPortal()
        connection = connect(self, ourServer(portal=portal), ourClient())
        challenge, challenger = self.successResultOf(connection.callRoot("login", "alice"))
        self.assertEqual(len(challenge), 16)
        wrong = connection.call(challenger, "respond", pb.respond(challenge, "guess"), None)
        self.assertIsInstance(self.failureResultOf(wrong, pb.RemoteError).value, pb.LoginFailed)
        right = connection.call(challenger, "respond", pb.respond(challenge, ALICE_PASSWORD), None)
        failure = self.failureResultOf(right, pb.RemoteError)
        self.assertIn("already answered", str(failure.value))

        challenge, challenger = self.successResultOf(connection.callRoot("login", "alice"))
        response = pb.respond(challenge, ALICE_PASSWORD)
        avatar = self.successResultOf(connection.call(challenger, "respond", response, None))
        self.assertIsInstance(avatar, pb.RemoteReference)
        again = connection.call(challenger, "respond", response, None)
        self.assertIn("already answered", str(self.failureResultOf(again, pb.RemoteError).value))

    def fileChecker(self) -> FilePasswordChecker:
        path = self.mktemp()
        UserFile().add("alice", ALICE_PASSWORD).save(path)
        with open(path, "rb") as f:
            self.assertNotIn(ALICE_PASSWORD.encode(), f.read())
        return FilePasswordChecker(path)

    def assertLogsIn(self, clientFactory: Any, credentials: Any) -> None:
        portal, realm = userPortal(checker=self.fileChecker())
        connection = connect(self, ourServer(portal=portal), clientFactory)
        avatar = logIn(self, connection, clientFactory, credentials)
        self.assertEqual(
            self.successResultOf(connection.call(avatar, "greet", "me")),
            "hello me, this is alice",
        )
        [user] = realm.avatars
        self.assertEqual(user.avatarId, b"alice")

    def test_fileCheckerStrCredentials(self) -> None:
        """
        Our client logs in with str credentials against a L{FilePasswordChecker}.
        """
        self.assertLogsIn(ourClient(), UsernamePassword("alice", ALICE_PASSWORD))

    def test_fileCheckerBytesCredentials(self) -> None:
        """
        Our client logs in with bytes credentials against a L{FilePasswordChecker}.
        """
        self.assertLogsIn(ourClient(), UsernamePassword(b"alice", ALICE_PASSWORD.encode("utf-8")))

    def test_fileCheckerTwistedClientBytes(self) -> None:
        """
        A Twisted client logs in with bytes credentials.
        """
        self.assertLogsIn(
            twistedPB.PBClientFactory(), UsernamePassword(b"alice", ALICE_PASSWORD.encode())
        )

    def test_fileCheckerTwistedClientStrUsername(self) -> None:
        """
        A Twisted client sending its user name as str (it can only hash a bytes
        password) logs in too.
        """
        self.assertLogsIn(
            twistedPB.PBClientFactory(), UsernamePassword("alice", ALICE_PASSWORD.encode())
        )

    def test_wrongPassword(self) -> None:
        """
        A wrong password fails our client's login with a L{pb.RemoteError} that is
        a L{pb.LoginFailed} and a C{twisted.cred} L{UnauthorizedLogin}.
        """
        portal, realm = userPortal(checker=self.fileChecker())
        clientFactory = ourClient()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        d = clientFactory.login(UsernamePassword("alice", "wrong"))
        connection.pump.flush()
        failure = self.failureResultOf(d, pb.RemoteError)
        self.assertIsInstance(failure.value, pb.LoginFailed)
        self.assertIsInstance(failure.value, UnauthorizedLogin)
        self.assertEqual(realm.avatars, [])

    def test_wrongPasswordTwistedClient(self) -> None:
        """
        A Twisted client's failed login is recognisable as an L{UnauthorizedLogin}.
        """
        portal, realm = userPortal(checker=self.fileChecker())
        clientFactory = twistedPB.PBClientFactory()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        d = clientFactory.login(UsernamePassword(b"alice", b"wrong"))
        connection.pump.flush()
        failure = self.failureResultOf(d)
        self.assertTrue(failure.check(UnauthorizedLogin))
        self.assertEqual(realm.avatars, [])


# -- (7) unserializable values --------------------------------------------------------


class UnserializableValueTests(SynchronousTestCase):
    """
    A value that cannot be serialized fails its call where it is found, instead of
    travelling as an Unpersistable.
    """

    def test_argumentFailsAtSender(self) -> None:
        """
        An C{object()} argument fails the call at once with L{pb.UnsafeValue} (a
        L{pb.Error}); nothing is written and nothing waits for an answer.
        """
        service = Service()
        connection = connect(self, ourServer(service), ourClient())
        d = connection.root.callRemote("take", {"nested": [object()]})
        self.assertEqual(connection.client.transport.stream, [])
        failure = self.failureResultOf(d, pb.UnsafeValue)
        self.assertIsInstance(failure.value, pb.Error)
        self.assertIn("builtins.object", str(failure.value))
        self.assertEqual(connection.client.waitingForAnswers, {})
        connection.pump.flush()
        self.assertEqual(service.received, [])
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_returnFailsCall(self) -> None:
        """
        Returning an C{object()} fails the caller's call with a L{pb.RemoteError}
        naming the type (no Unpersistable arrives); the server logs the programming
        error.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        failure = self.failureResultOf(connection.callRoot("unserializable"), pb.RemoteError)
        self.assertIn("builtins.object", str(failure.value))
        self.assertEqual(len(self.flushLoggedErrors(pb.JellyError)), 1)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_returnFailsCallTwistedClient(self) -> None:
        """
        A Twisted client's call fails too, rather than succeeding with an
        Unpersistable.
        """
        connection = connect(self, ourServer(Service()), twistedPB.PBClientFactory())
        failure = self.failureResultOf(connection.callRoot("unserializable"))
        self.assertNotIsInstance(failure.value, twistedJelly.Unpersistable)
        self.assertIn("builtins.object", failure.value)
        self.assertEqual(len(self.flushLoggedErrors(pb.JellyError)), 1)


# -- errors ---------------------------------------------------------------------------


class RemoteErrorTests(SynchronousTestCase):
    """
    Remote exceptions arrive as L{pb.RemoteError}s that say what they were.
    """

    def setUp(self) -> None:
        self.connection = connect(self, ourServer(Service()), ourClient())

    def test_pbErrorNotLogged(self) -> None:
        """
        A L{pb.Error} subclass raised remotely arrives as a L{pb.RemoteError} with
        C{isPBError} true and its class name and message, and the server does not log
        it as unexpected.
        """
        failure = self.failureResultOf(self.connection.callRoot("refuse"), pb.RemoteError)
        self.assertTrue(failure.value.isPBError)
        self.assertEqual(failure.value.remoteType, qual(Refused))
        self.assertEqual(str(failure.value), "not today")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_valueErrorCatchable(self) -> None:
        """
        A remote L{ValueError} can be caught with C{except ValueError} and with
        C{except pb.RemoteError}; it is not a PB error, and the server logs it.
        """

        async def attempt(catch: type[BaseException]) -> BaseException | None:
            try:
                await self.connection.root.callRemote("fail")
            except catch as e:
                return e
            return None

        for catch in (ValueError, pb.RemoteError):
            d = Deferred.fromCoroutine(attempt(catch))
            self.connection.pump.flush()
            caught = self.successResultOf(d)
            self.assertIsInstance(caught, ValueError)
            self.assertIsInstance(caught, pb.RemoteError)
            self.assertEqual(caught.remoteType, "builtins.ValueError")
            self.assertFalse(caught.isPBError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_tracebackNotSent(self) -> None:
        """
        By default no traceback leaves the server; C{unsafeTracebacks=True} sends it.
        """
        failure = self.failureResultOf(self.connection.callRoot("fail"), pb.RemoteError)
        self.assertNotIn("remote_fail", failure.value.remoteTraceback)
        unsafe = connect(self, ourServer(Service(), unsafeTracebacks=True), ourClient())
        failure = self.failureResultOf(unsafe.callRoot("fail"), pb.RemoteError)
        self.assertIn("remote_fail", failure.value.remoteTraceback)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_missingMethod(self) -> None:
        """
        Calling a method the object lacks fails with a L{pb.RemoteError} that is a
        L{pb.NoSuchMethod}; a Twisted client recognises Twisted's C{NoSuchMethod}.
        """
        failure = self.failureResultOf(self.connection.callRoot("nothing"), pb.RemoteError)
        self.assertIsInstance(failure.value, pb.NoSuchMethod)
        self.assertIn("remote_nothing", str(failure.value))
        twisted = connect(self, ourServer(Service()), twistedPB.PBClientFactory())
        failure = self.failureResultOf(twisted.callRoot("nothing"))
        self.assertTrue(failure.check(twistedFlavors.NoSuchMethod))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_wrongArgumentCount(self) -> None:
        """
        Too few or too many arguments fail with a L{pb.RemoteError} that is a
        L{pb.ArgumentError} (and a L{TypeError}); the method does not run.
        """
        for args in ((1,), (1, 2, 3)):
            d = self.connection.callRoot("two", *args)
            failure = self.failureResultOf(d, pb.RemoteError)
            self.assertIsInstance(failure.value, pb.ArgumentError)
            self.assertIsInstance(failure.value, TypeError)
            self.assertEqual(failure.value.remoteType, "pb.errors.ArgumentError")
        d = self.connection.callRoot("two", 1, b=2)
        self.assertEqual(tuple(self.successResultOf(d)), (1, 2))

    def test_twistedCopiedFailure(self) -> None:
        """
        A Twisted server's C{CopiedFailure} arrives as a L{pb.RemoteError} whose
        C{remoteType} and C{value} are str (Twisted's own client would see bytes).
        """
        connection = connect(self, twistedPB.PBServerFactory(TwistedService()), ourClient())
        failure = self.failureResultOf(connection.callRoot("fail"), pb.RemoteError)
        self.assertEqual(failure.value.remoteType, "builtins.ValueError")
        self.assertEqual(failure.value.value, "bad value")
        self.assertIsInstance(failure.value, ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class OddState(pb.Copyable):
    """
    A Copyable whose state is a list, which a L{pb.RemoteCopy} refuses.
    """

    def getStateToCopy(self) -> Any:
        return [1, 2]


class CopyableProblem(pb.Copyable, Exception):
    """
    An exception that travels as itself.
    """

    def getStateToCopy(self) -> Any:
        return {"detail": "copied"}


class BrokenCopy(pb.RemoteCopy):
    """
    A local copy class whose state setter fails with an unexpected exception.
    """

    def setCopyableState(self, state: Any) -> None:
        raise RuntimeError("cannot rebuild this")


class AwkwardService(Service):
    """
    A service whose answers the client cannot rebuild.
    """

    def remote_odd(self) -> OddState:
        return OddState()

    def remote_broken(self) -> CopyableProblem:
        return CopyableProblem()

    def remote_raiseBroken(self) -> None:
        raise CopyableProblem()


class UnreadableAnswerTests(SynchronousTestCase):
    """
    Whatever stops the caller rebuilding an answer or an error fails that call: its
    Deferred never hangs.
    """

    def connectWith(self) -> Connection:
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass(OddState, pb.RemoteCopy)
        registry.setUnjellyableForClass(CopyableProblem, BrokenCopy)
        return connect(self, ourServer(AwkwardService()), ourClient(security=registry))

    def test_unexpectedErrorInAnswer(self) -> None:
        """
        An unexpected exception while rebuilding an answer fails the call with it,
        and the connection goes on.
        """
        connection = self.connectWith()
        failure = self.failureResultOf(connection.callRoot("broken"), RuntimeError)
        self.assertEqual(str(failure.value), "cannot rebuild this")
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)
        self.assertEqual(connection.client.waitingForAnswers, {})

    def test_unexpectedErrorInError(self) -> None:
        """
        An unexpected exception while rebuilding a remote error fails the call with
        it, and the connection goes on.
        """
        connection = self.connectWith()
        self.failureResultOf(connection.callRoot("raiseBroken"), RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(CopyableProblem)), 1)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_refusedCopyInAnswer(self) -> None:
        """
        An answer carrying a copy whose state a L{pb.RemoteCopy} refuses (not a
        dictionary) fails that call with L{pb.UnsafeValue}; the connection goes
        on.
        """
        connection = self.connectWith()
        d = connection.callRoot("odd")
        failure = self.failureResultOf(d, pb.UnsafeValue)
        self.assertIn("expects a dictionary state, not list", str(failure.value))
        self.assertFalse(connection.client.disconnected)
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_refusedCopyInArguments(self) -> None:
        """
        A call whose argument is such a copy fails for the caller with the
        server's L{pb.UnsafeValue} (an expected error: nothing is logged);
        the connection goes on.
        """
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass("pb.demo.SharedData", pb.RemoteCopy)
        connection = connect(self, ourServer(Service(), security=registry), ourClient())
        d = connection.callRoot("add", pb.GenericCopy("pb.demo.SharedData", 7), 1)
        failure = self.failureResultOf(d, pb.RemoteError)
        self.assertEqual(failure.value.remoteType, "pb.errors.UnsafeValue")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)


# -- views, references and logout -----------------------------------------------------


class ViewPointTests(SynchronousTestCase):
    """
    A Viewable arrives as a reference whose C{view_*} methods get the caller's
    perspective.
    """

    def assertViewsApart(self, makeClient: Any) -> None:
        portal, _ = userPortal()
        serverFactory = ourServer(portal=portal)
        for name, password in ((b"alice", ALICE_PASSWORD), (b"bob", BOB_PASSWORD)):
            clientFactory = makeClient()
            connection = connect(self, serverFactory, clientFactory)
            avatar = logIn(
                self, connection, clientFactory, UsernamePassword(name, password.encode())
            )
            document = self.successResultOf(connection.call(avatar, "document"))
            who = self.successResultOf(connection.call(document, "whoAmI", "?"))
            self.assertEqual(tuple(who), (name, "?"))

    def test_perspectivePassed(self) -> None:
        """
        Two users viewing the same object each get their own perspective.
        """
        self.assertViewsApart(ourClient)

    def test_perspectivePassedTwistedClient(self) -> None:
        """
        The same for Twisted clients.
        """
        self.assertViewsApart(twistedPB.PBClientFactory)


class RemoteReferenceTests(SynchronousTestCase):
    """
    L{pb.RemoteReference}'s C{remoteMethod} and C{notifyOnDisconnect}.
    """

    def test_remoteMethod(self) -> None:
        """
        C{remoteMethod(name)} is a callable that calls the remote method.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        add = connection.root.remoteMethod("add")
        self.assertEqual(add, connection.root.remoteMethod("add"))
        d = add(2, 3)
        connection.pump.flush()
        self.assertEqual(self.successResultOf(d), 5)

    def test_notifyOnDisconnect(self) -> None:
        """
        Callbacks registered with C{notifyOnDisconnect} get the reference once when
        the connection is lost, unless removed; registered afterwards, they run at
        once.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        child = self.successResultOf(connection.callRoot("child"))
        notified: list[Any] = []
        removed: list[Any] = []
        child.notifyOnDisconnect(notified.append)
        child.notifyOnDisconnect(removed.append)
        child.dontNotifyOnDisconnect(removed.append)
        self.assertEqual(notified, [])
        connection.disconnect()
        self.assertEqual(notified, [child])
        self.assertEqual(removed, [])
        late: list[Any] = []
        child.notifyOnDisconnect(late.append)
        self.assertEqual(late, [child])


class UnregisterReferenceTests(SynchronousTestCase):
    """
    C{Broker.unregisterReference} withdraws a lent object.
    """

    def test_laterCallsFail(self) -> None:
        """
        After the server unregisters a lent object, calls on it fail with "Invalid
        Object ID"; other objects still answer.
        """
        service = Service()
        connection = connect(self, ourServer(service), ourClient())
        child = self.successResultOf(connection.callRoot("child"))
        self.assertEqual(self.successResultOf(connection.call(child, "name")), "child")
        connection.server.unregisterReference(lentID(connection.server, service.child))
        failure = self.failureResultOf(connection.call(child, "name"), pb.RemoteError)
        self.assertEqual(str(failure.value), "Invalid Object ID")
        self.assertEqual(self.successResultOf(connection.callRoot("add", 1, 2)), 3)

    def test_runsAvatarLogout(self) -> None:
        """
        Unregistering an avatar runs its logout, once: not again when the
        connection is lost.
        """
        portal, realm = userPortal()
        clientFactory = ourClient()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        avatar = logIn(self, connection, clientFactory, UsernamePassword("alice", ALICE_PASSWORD))
        [user] = realm.avatars
        connection.server.unregisterReference(lentID(connection.server, user))
        self.assertEqual(user.logouts, 1)
        failure = self.failureResultOf(connection.call(avatar, "greet", "x"), pb.RemoteError)
        self.assertEqual(str(failure.value), "Invalid Object ID")
        connection.disconnect()
        self.assertEqual(user.logouts, 1)


class LogoutTests(SynchronousTestCase):
    """
    An avatar's logout runs once per login: when the client drops its last
    reference to the avatar, or when the connection is lost.
    """

    def assertDecrefLogout(self, clientFactory: Any, credentials: Any) -> None:
        portal, realm = userPortal()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        avatar = logIn(self, connection, clientFactory, credentials)
        [user] = realm.avatars
        self.successResultOf(connection.call(avatar, "greet", "x"))
        self.assertEqual(user.logouts, 0)
        del avatar
        gc.collect()
        connection.pump.flush()
        self.assertEqual(user.logouts, 1)
        connection.disconnect()
        self.assertEqual(user.logouts, 1)

    def test_decrefLogout(self) -> None:
        """
        Dropping our client's reference to the avatar logs it out.
        """
        self.assertDecrefLogout(ourClient(), UsernamePassword("alice", ALICE_PASSWORD))

    def test_decrefLogoutTwistedClient(self) -> None:
        """
        Dropping a Twisted client's reference to the avatar logs it out.
        """
        self.assertDecrefLogout(
            twistedPB.PBClientFactory(), UsernamePassword(b"alice", ALICE_PASSWORD.encode())
        )

    def test_logoutOnDisconnect(self) -> None:
        """
        Losing the connection logs out every avatar logged in over it, once each.
        """
        portal, realm = userPortal()
        clientFactory = ourClient()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        alice = logIn(self, connection, clientFactory, UsernamePassword("alice", ALICE_PASSWORD))
        bob = logIn(self, connection, clientFactory, UsernamePassword("bob", BOB_PASSWORD))
        self.assertEqual([user.logouts for user in realm.avatars], [0, 0])
        connection.disconnect()
        self.assertEqual([user.logouts for user in realm.avatars], [1, 1])
        del alice, bob
        gc.collect()
        connection.pump.flush()
        self.assertEqual([user.logouts for user in realm.avatars], [1, 1])


class RealmTests(SynchronousTestCase):
    """
    L{pb.Realm} hands out avatars, possibly asynchronously, with the client's mind.
    """

    def test_requestAvatar(self) -> None:
        """
        C{requestAvatar} returns C{(IPerspective, avatar, avatar.logout)} and refuses
        other interfaces.
        """
        realm = UserRealm()
        interface, avatar, logout = realm.requestAvatar(b"alice", None, pb.IPerspective)
        self.assertIs(interface, pb.IPerspective)
        self.assertIsInstance(avatar, User)
        self.assertEqual(logout, avatar.logout)
        logout()
        self.assertEqual(avatar.logouts, 1)
        self.assertRaises(NotImplementedError, realm.requestAvatar, b"alice", None, object())

    def test_asyncCreateAvatar(self) -> None:
        """
        An C{async def createAvatar} makes C{requestAvatar} return a Deferred, and
        login waits for it.
        """
        gate: Deferred[None] = Deferred()

        class SlowRealm(UserRealm):
            async def createAvatar(self, avatarId: Any, mind: Any) -> Any:
                await gate
                return UserRealm.createAvatar(self, avatarId, mind)

        self.assertIsInstance(SlowRealm().requestAvatar(b"x", None, pb.IPerspective), Deferred)
        portal, realm = userPortal(SlowRealm())
        clientFactory = ourClient()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        d = clientFactory.login(UsernamePassword("alice", ALICE_PASSWORD))
        connection.pump.flush()
        self.assertNoResult(d)
        gate.callback(None)
        connection.pump.flush()
        avatar = self.successResultOf(d)
        greeting = self.successResultOf(connection.call(avatar, "greet", "you"))
        self.assertEqual(greeting, "hello you, this is alice")
        self.assertEqual(len(realm.avatars), 1)

    def test_mindReachesAvatar(self) -> None:
        """
        The C{client} object given at login reaches the avatar, which can call it.
        """
        portal, _ = userPortal()
        clientFactory = ourClient()
        connection = connect(self, ourServer(portal=portal), clientFactory)
        mind = Mind()
        avatar = logIn(
            self, connection, clientFactory, UsernamePassword("bob", BOB_PASSWORD), mind
        )
        self.assertEqual(self.successResultOf(connection.call(avatar, "pingMind", "hi")), "noted")
        self.assertEqual(mind.notices, ["hi"])


class RemoteCacheTests(SynchronousTestCase):
    """
    A L{pb.RemoteCache} receives its state through C{setCacheableState} and its
    updates through C{observe_*}.
    """

    def test_setCacheableState(self) -> None:
        """
        Our client's cache gets its state from C{setCacheableState}, then updates;
        dropping it makes the server stop observing.
        """
        registry = pb.TypeRegistry(inherit=None)
        registry.setUnjellyableForClass(Observed, RecordingCache)
        service = Service()
        connection = connect(self, ourServer(service), ourClient(security=registry))
        cache = self.successResultOf(connection.callRoot("cache"))
        self.assertIsInstance(cache, RecordingCache)
        self.assertEqual(cache.cachedState, {"value": 1})
        [observer] = service.cache.observers
        observer.callRemote("setValue", 9)
        connection.pump.flush()
        self.assertEqual(cache.value, 9)
        again = self.successResultOf(connection.callRoot("cache"))
        self.assertEqual(again, cache)
        self.assertEqual(len(service.cache.observers), 1)
        del cache, again
        gc.collect()
        connection.pump.flush()
        self.assertEqual(service.cache.stopped, [observer])

    def test_setCacheableStateTwistedServer(self) -> None:
        """
        A cache from a Twisted server gets C{setCacheableState} too (Twisted's own
        client calls only C{setCopyableState}), and its updates.
        """
        registry = pb.TypeRegistry(inherit=None)
        registry.setUnjellyableForClass(qual(TwistedObserved), RecordingCache)
        service = TwistedService()
        connection = connect(
            self, twistedPB.PBServerFactory(service), ourClient(security=registry)
        )
        cache = self.successResultOf(connection.callRoot("cache"))
        self.assertEqual(cache.cachedState, {"value": 1})
        [observer] = service.cache.observers
        observer.callRemote("setValue", 9)
        connection.pump.flush()
        self.assertEqual(cache.value, 9)


class ServerFactoryTests(SynchronousTestCase):
    """
    C{PBServerFactory(root, security=None, portal=None)}.
    """

    def test_positionalSecurity(self) -> None:
        """
        The second positional argument is the type registry of the factory's
        connections (not Twisted's C{unsafeTracebacks}).
        """
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass(Thing, RemoteThing)
        service = Service()
        factory = pb.PBServerFactory(service, registry, clock=Clock())
        self.assertIs(factory.security, registry)
        self.assertFalse(factory.options.unsafeTracebacks)
        connection = connect(self, factory, ourClient())
        self.assertIs(connection.server.registry, registry)
        self.successResultOf(connection.callRoot("take", Thing(1)))
        self.assertIsInstance(service.received[0], RemoteThing)

    def test_portal(self) -> None:
        """
        A portal, given by keyword or (as Twisted takes it) as the root, serves login.
        """
        for factory in (
            pb.PBServerFactory(portal=userPortal()[0], clock=Clock()),
            pb.PBServerFactory(userPortal()[0], clock=Clock()),
        ):
            clientFactory = ourClient()
            connection = connect(self, factory, clientFactory)
            avatar = logIn(self, connection, clientFactory, UsernamePassword("bob", BOB_PASSWORD))
            self.assertEqual(
                self.successResultOf(connection.call(avatar, "greet", "x")),
                "hello x, this is bob",
            )

    def test_rootOrPortal(self) -> None:
        """
        A factory needs a root or a portal, and refuses both at once.
        """
        self.assertRaises(TypeError, pb.PBServerFactory)
        self.assertRaises(TypeError, pb.PBServerFactory, Service(), None, userPortal()[0])


# -- the cost of a call ---------------------------------------------------------------


class PerCallCostTests(SynchronousTestCase):
    """
    A call with plain arguments and a plain result (numbers, strings, small
    containers of them) skips the work only other values need, on both sides.
    """

    def countBuilt(self) -> dict[str, int]:
        """
        Count the Jellier and Unjellier objects the brokers build from now on.
        """
        built = {"Jellier": 0, "Unjellier": 0}

        class CountingJellier(pb.jelly.Jellier):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                built["Jellier"] += 1
                super().__init__(*args, **kwargs)

        class CountingUnjellier(pb.jelly.Unjellier):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                built["Unjellier"] += 1
                super().__init__(*args, **kwargs)

        self.patch(pb.broker, "Jellier", CountingJellier)
        self.patch(pb.broker, "Unjellier", CountingUnjellier)
        return built

    def test_plainCallsBuildNoJellier(self) -> None:
        """
        Plain calls and answers build no Jellier and no Unjellier; a call that
        passes a reference does (so the count above can see them).
        """
        connection = connect(self, ourServer(Service()), ourClient())
        built = self.countBuilt()
        self.assertEqual(self.successResultOf(connection.callRoot("add", 5, 3)), 8)
        self.assertEqual(
            self.successResultOf(connection.callRoot("two", "a", b={"c": [1.5, None, True]})),
            ("a", {"c": [1.5, None, True]}),
        )
        self.assertEqual(built, {"Jellier": 0, "Unjellier": 0})
        self.successResultOf(connection.callRoot("take", pb.Referenceable()))
        self.assertEqual(built, {"Jellier": 1, "Unjellier": 1})

    def test_smallMessagesDoNotPauseCollector(self) -> None:
        """
        Small calls and answers run with the cycle collector as it is; only
        large messages pause it.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        paused: list[bool] = []
        disable = gc.disable

        def recordingDisable() -> None:
            paused.append(True)
            disable()

        self.patch(gc, "disable", recordingDisable)
        for i in range(10):
            self.assertEqual(self.successResultOf(connection.callRoot("add", i, 1)), i + 1)
        self.assertEqual(paused, [])
        self.assertEqual(len(self.successResultOf(connection.callRoot("many", 2000))), 2000)
        self.assertNotEqual(paused, [])


# -- protocol garbage -----------------------------------------------------------------


def messageBytes(*message: Any) -> bytes:
    """
    A PB message as a client sends it after negotiation.
    """
    return banana.encode(list(message), vocabulary=banana.PB_VOCABULARY)


TAKE_MESSAGE = messageBytes(
    b"message", 99, b"root", b"take", 1, [b"tuple", [b"unicode", b"smuggled"]], [b"dictionary"]
)
"""A well-formed call of C{remote_take}, sent after garbage to show it never runs."""


class ProtocolGarbageTests(SynchronousTestCase):
    """
    A peer that breaks the protocol loses its connection, and only its own; nothing
    it sent after the garbage runs.
    """

    def assertGarbageCloses(self, garbage: bytes) -> None:
        service = Service()
        factory = ourServer(service)
        bystander = connect(self, factory, ourClient())
        offender = connect(self, factory, ourClient())
        offender.client.transport.write(garbage + TAKE_MESSAGE)
        offender.pump.flush()
        self.assertTrue(offender.server.disconnected)
        self.assertTrue(offender.client.disconnected)
        self.assertEqual(service.received, [])
        self.assertFalse(bystander.server.disconnected)
        self.assertEqual(self.successResultOf(bystander.callRoot("add", 1, 2)), 3)
        self.assertEqual(self.successResultOf(bystander.callRoot("take", "fine")), "took")
        self.assertEqual(service.received, ["fine"])

    def test_wellFormedMessageRuns(self) -> None:
        """
        The message sent after the garbage in the other tests does run when nothing
        precedes it (so their "nothing ran" assertions can fail).
        """
        service = Service()
        connection = connect(self, ourServer(service), ourClient())
        connection.client.transport.write(TAKE_MESSAGE)
        connection.pump.flush()
        self.assertEqual(service.received, ["smuggled"])

    def test_randomBytes(self) -> None:
        """
        Random bytes close that connection.
        """
        for seed in range(3):
            garbage = random.Random(seed).randbytes(4096) + b"\xff"
            self.assertGarbageCloses(garbage)

    def test_invalidTypeByte(self) -> None:
        """
        A byte that is no banana type closes the connection.
        """
        self.assertGarbageCloses(b"\x01\xff")

    def test_nonListExpression(self) -> None:
        """
        A top-level expression that is not a list (an int, a string) closes the
        connection.
        """
        self.assertGarbageCloses(banana.encode(42))
        self.assertGarbageCloses(banana.encode(b"message"))

    def test_malformedMessage(self) -> None:
        """
        A message whose request ID is not an int, or with missing fields, closes the
        connection.
        """
        self.assertGarbageCloses(
            messageBytes(b"message", b"one", b"root", b"take", 1, [b"tuple"], [b"dictionary"])
        )
        self.assertGarbageCloses(messageBytes(b"message", 1))


# -- corked writes ------------------------------------------------------------------


class CorkTests(SynchronousTestCase):
    """
    L{pb.Broker.cork} holds a broker's messages until the outermost
    L{pb.Broker.uncork}, which writes them as one.
    """

    def test_heldUntilOutermostUncork(self) -> None:
        from twisted.internet.testing import StringTransport

        broker = pb.Broker(True, clock=Clock())
        transport = StringTransport()
        broker.makeConnection(transport)
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        broker.cork()
        broker.cork()
        broker.sendCall(b"decref", 1)
        broker.sendCall(b"decref", 2)
        broker.uncork()
        self.assertEqual(writes, [])
        broker.uncork()
        self.assertEqual(writes, [pb.banana.encode([b"decref", 1]) +
                                  pb.banana.encode([b"decref", 2])])
        broker.sendCall(b"decref", 3)
        self.assertEqual(len(writes), 2)

    def test_droppedWhenDisconnected(self) -> None:
        """
        What is held when the connection is lost is not written.
        """
        from twisted.internet.testing import StringTransport

        broker = pb.Broker(True, clock=Clock())
        transport = StringTransport()
        broker.makeConnection(transport)
        broker.cork()
        broker.sendCall(b"decref", 1)
        broker.connectionLost(None)
        written = transport.value()
        broker.uncork()
        self.assertEqual(transport.value(), written)

    def test_answersOfOneChunkWrittenTogether(self) -> None:
        """
        The answers to calls that arrive in one chunk leave in one write.
        """
        connection = connect(self, ourServer(Service()), ourClient())
        writes: list[bytes] = []
        original = connection.server.transport.write
        connection.server.transport.write = lambda data: (writes.append(data), original(data))
        results = [connection.root.callRemote("add", i, 1) for i in range(3)]
        connection.pump.flush()
        self.assertEqual([self.successResultOf(d) for d in results], [1, 2, 3])
        self.assertEqual(len(writes), 1)


class UnreachedLendsTests(SynchronousTestCase):
    """
    When a value fails to unjelly, what the peer lent in it is given back:
    the references made (when they are collected) and those never reached.
    """

    def test_argumentsGivenBack(self) -> None:
        """
        A call whose arguments hold a reference before and after a refused
        copy fails, and the caller lends nothing afterwards.
        """
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass(OddState, pb.RemoteCopy)
        connection = connect(self, ourServer(Service(), security=registry), ourClient())
        before, after = pb.Referenceable(), pb.Referenceable()
        d = connection.call(connection.root, "add", [before, OddState(), after], 1)
        failure = self.failureResultOf(d, pb.RemoteError)
        self.assertEqual(failure.value.remoteType, "pb.errors.UnsafeValue")
        gc.collect()
        connection.pump.flush()
        self.assertEqual(connection.client.localObjects, {})
        self.assertEqual(self.successResultOf(connection.call(connection.root, "add", 1, 2)), 3)

    def test_unreachedCacheReleased(self) -> None:
        """
        A new cache in the failed value that was never reached is released
        (decache): the sender stops counting the receiver as an observer.
        """
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass(OddState, pb.RemoteCopy)
        registry.setUnjellyableForClass(Observed, RecordingCache)
        connection = connect(self, ourServer(Service(), security=registry), ourClient())
        observed = Observed()
        d = connection.call(connection.root, "add", [OddState(), observed], 1)
        self.failureResultOf(d, pb.RemoteError)
        connection.pump.flush()
        self.assertEqual(len(observed.observers), 1)
        self.assertEqual(observed.stopped, observed.observers)
        self.assertEqual(connection.client.remotelyCachedObjects, {})
        # A cache that was reached is not released twice.
        d = connection.call(connection.root, "add", [observed, OddState()], 1)
        self.failureResultOf(d, pb.RemoteError)
        gc.collect()
        connection.pump.flush()
        self.assertEqual(len(observed.observers), 2)
        self.assertEqual(observed.stopped, observed.observers)


class LoginThrottleTests(SynchronousTestCase):
    """
    A server refuses password logins for a user name or an address after
    too many failures (L{pb.BrokerOptions.loginMaxFailures}).
    """

    def serve(self, **options: Any) -> tuple[Clock, Any]:
        clock = Clock()
        portal, _ = userPortal()
        factory = ourServer(portal=portal, clock=clock, options=pb.BrokerOptions(**options))
        return clock, factory

    def attempt(self, factory: Any, name: bytes, password: str) -> Any:
        """
        One login on a new connection: the avatar reference, or the failure.
        """
        clientFactory = ourClient()
        connection = connect(self, factory, clientFactory)
        d = clientFactory.login(UsernamePassword(name, password.encode()))
        connection.pump.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        return results[0]

    def test_lockedOutAfterFailures(self) -> None:
        """
        After C{loginMaxFailures} wrong passwords within the window, even
        the right password is refused with L{pb.LoginThrottled} (a
        L{pb.LoginFailed}) until the lockout has passed; another user from
        the same address is unaffected.
        """
        clock, factory = self.serve(loginMaxFailures=3, loginWindow=60, loginLockout=30)
        for _ in range(3):
            failure = self.attempt(factory, b"alice", "wrong")
            self.assertTrue(failure.check(pb.LoginFailed))
            self.assertFalse(failure.check(pb.LoginThrottled))
        failure = self.attempt(factory, b"alice", ALICE_PASSWORD)
        self.assertTrue(failure.check(pb.LoginThrottled), failure)
        self.assertIn("try again in 30 s", str(failure.value))
        self.assertIsInstance(self.attempt(factory, b"bob", BOB_PASSWORD), pb.RemoteReference)
        clock.advance(31)
        self.assertIsInstance(self.attempt(factory, b"alice", ALICE_PASSWORD),
                              pb.RemoteReference)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_windowSlides(self) -> None:
        """
        Failures older than the window do not count.
        """
        clock, factory = self.serve(loginMaxFailures=2, loginWindow=10, loginLockout=30)
        self.attempt(factory, b"bob", "wrong")
        clock.advance(11)
        self.attempt(factory, b"bob", "wrong")
        self.assertIsInstance(self.attempt(factory, b"bob", BOB_PASSWORD), pb.RemoteReference)

    def test_off(self) -> None:
        """
        C{loginMaxFailures=0}: no limit.
        """
        _, factory = self.serve(loginMaxFailures=0)
        for _ in range(10):
            self.attempt(factory, b"alice", "wrong")
        self.assertIsInstance(self.attempt(factory, b"alice", ALICE_PASSWORD),
                              pb.RemoteReference)
