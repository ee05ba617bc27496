"""
Tests of what sessions cost as they grow in number (C{gateway/sessions.py}):
one shared copy of each avatar method description however many logins use
it, and per-user and per-address session counts that a login reads instead
of scanning every session.

In memory first (a L{SessionTable} whose broker logins are stand-ins, on a
L{Clock}), then against a real broker on loopback.
"""

from __future__ import annotations

import copy
from typing import Any

from test_websocket import ALICE, BOB, GatewayHarness, waitFor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pb
from gateway.errors import TooManyRequests, Unauthorized
from gateway.sessions import GatewayOptions, Login, Session, SessionTable, _canonicalJSON

ADDRESS = "10.0.0.1"


def _methods(*names: str) -> list[dict[str, Any]]:
    """
    A method description as C{pb:describe} gives it, built anew each time.
    """
    return [
        {"name": name, "doc": f"The {name} method.", "async": False,
         "params": [{"name": "a", "kind": "positional", "annotation": "int"}]}
        for name in names
    ]


class FakeFactory:
    """
    The PB client factory of a stand-in login.
    """

    def __init__(self) -> None:
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True


class NoScan(dict[str, Session]):
    """
    A session table that fails any walk over all its sessions.
    """

    def _refuse(self, *args: Any) -> Any:
        raise AssertionError("a login walked over every session")

    __iter__ = values = items = keys = _refuse  # type: ignore[assignment]


class MemoryTable:
    """
    A L{SessionTable} on a L{Clock} whose broker logins are stand-ins: each
    login's avatar describes itself with C{describe(username)}.
    """

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.table = SessionTable(self.clock, GatewayOptions(staticDir=None, **options))
        self.logins: list[Login] = []
        self.refuse: set[str] = set()
        self.describe: Any = lambda username: _methods("add", "subtract")
        self.table._login = self._login  # type: ignore[method-assign]

    async def _login(self, credentials: Any, withMind: bool, keys: list[str],
                     shared: bool) -> Login:
        username = getattr(credentials, "username", b"").decode("utf-8") or None
        if username in self.refuse:
            self.table.limiter.failed(*keys)
            raise Unauthorized("bad username or password", "login_failed")
        login = Login(self.table, FakeFactory(), object(), None, shared)  # type: ignore[arg-type]
        self.table._holdMethods(login, self.describe(username))
        self.logins.append(login)
        return login

    def login(self, test: SynchronousTestCase, username: str | None,
              address: str | None = ADDRESS) -> Session:
        """
        Log in (anonymously for a L{None} C{username}); the session.
        """
        session: Session = test.successResultOf(Deferred.fromCoroutine(self.table.login(
            username, "pw" if username else None, anonymous=username is None,
            clientAddress=address,
        )))
        return session

    def refused(self, test: SynchronousTestCase, username: str | None,
                address: str | None = ADDRESS) -> Any:
        """
        The error a login fails with.
        """
        return test.failureResultOf(Deferred.fromCoroutine(self.table.login(
            username, "pw" if username else None, anonymous=username is None,
            clientAddress=address,
        ))).value

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.table.sessionsByUser), dict(self.table.sessionsByAddress)


# -- counting sessions --------------------------------------------------------------


class SessionCountTests(SynchronousTestCase):
    """
    The table keeps how many sessions each user name, and each client
    address (anonymous sessions), holds.
    """

    def test_everyEndingUncounts(self) -> None:
        """
        A session ended by logging out, by idling, by losing its broker
        connection, or by the gateway closing them all leaves the counts
        as they were before it opened; ending it again changes nothing.
        """
        memory = MemoryTable(sessionIdleTimeout=10.0, shareAnonymous=False)
        endings = {
            "logout": lambda session: session.end("logged out"),
            "idle": lambda session: memory.clock.advance(10.0),
            "broker lost": lambda session: session.login.lost(),
            "closeAll": lambda session: memory.table.closeAll(),
        }
        for how, end in endings.items():
            for username in ("alice", None):
                session = memory.login(self, username)
                expected = ({"alice": 1}, {}) if username else ({}, {ADDRESS: 1})
                self.assertEqual(memory.counts(), expected, how)
                end(session)
                self.assertIsNotNone(session.ended, how)
                self.assertEqual(memory.counts(), ({}, {}), how)
                session.end("again")
                memory.table._forget(session, "again")
                self.assertEqual(memory.counts(), ({}, {}), how)

    def test_countsPerUserAndAddress(self) -> None:
        """
        A password session counts for its user wherever it comes from; an
        anonymous session counts for its address; an anonymous session with
        no address counts for nothing.
        """
        memory = MemoryTable()
        alice = [memory.login(self, "alice", address) for address in ("a", "b", None)]
        memory.login(self, "bob", "a")
        anonymous = [memory.login(self, None, address) for address in ("a", "a", "b", None)]
        self.assertEqual(memory.counts(), ({"alice": 3, "bob": 1}, {"a": 2, "b": 1}))
        for session in alice + anonymous:
            session.end("logged out")
        self.assertEqual(memory.counts(), ({"bob": 1}, {}))

    def test_limitRefusesTheNextOne(self) -> None:
        """
        With C{maxSessionsPerUser=2} the third session of a user (or of an
        address, anonymous) is refused with 429 C{too_many_sessions} and the
        message it always had; its login is closed; refused and failed
        logins are not counted; ending one session makes room.
        """
        memory = MemoryTable(maxSessionsPerUser=2)
        first, _ = memory.login(self, "alice"), memory.login(self, "alice")
        error = memory.refused(self, "alice")
        self.assertIsInstance(error, TooManyRequests)
        self.assertEqual((error.status, error.type, error.code), (429, "too_many_requests",
                                                                  "too_many_sessions"))
        self.assertEqual(error.message,
                         "user 'alice' holds 2 sessions already: log out of one first")
        self.assertTrue(memory.logins[-1].closed)
        self.assertTrue(memory.logins[-1].factory.disconnected)  # type: ignore[attr-defined]
        memory.refuse.add("mallory")
        self.assertIsInstance(memory.refused(self, "mallory"), Unauthorized)
        self.assertEqual(memory.counts(), ({"alice": 2}, {}))
        first.end("logged out")
        memory.login(self, "alice")
        self.assertEqual(memory.counts(), ({"alice": 2}, {}))

        memory.login(self, None), memory.login(self, None)
        error = memory.refused(self, None)
        self.assertEqual(error.message,
                         f"address {ADDRESS} holds 2 sessions already: log out of one first")
        memory.login(self, None, "10.0.0.2")
        memory.login(self, None, None)
        self.assertEqual(memory.counts(), ({"alice": 2}, {ADDRESS: 2, "10.0.0.2": 1}))

    def test_loginDoesNotScan(self) -> None:
        """
        Logging in, being refused and logging out never walk over all the
        sessions (which made opening N sessions cost N squared steps).
        """
        memory = MemoryTable(maxSessionsPerUser=3)
        memory.table.sessions = NoScan()
        sessions = [memory.login(self, "alice") for _ in range(3)]
        sessions += [memory.login(self, None) for _ in range(3)]
        self.assertIsInstance(memory.refused(self, "alice"), TooManyRequests)
        self.assertIsInstance(memory.refused(self, None), TooManyRequests)
        for session in sessions:
            session.end("logged out")
        self.assertEqual(memory.counts(), ({}, {}))
        self.assertEqual(dict.__len__(memory.table.sessions), 0)


# -- sharing method descriptions ---------------------------------------------------------


class SharedMethodsTests(SynchronousTestCase):
    """
    Logins whose avatars describe themselves alike share one description.
    """

    def test_equalDescriptionsShared(self) -> None:
        """
        Two logins whose avatars give equal descriptions (each built anew)
        get the very same object; a different description is its own.
        """
        memory = MemoryTable(shareAnonymous=False)
        memory.describe = lambda username: (
            _methods("add", "subtract") if username != "carol" else _methods("approve")
        )
        first, second = memory.login(self, "alice"), memory.login(self, "alice")
        bob, carol = memory.login(self, "bob"), memory.login(self, "carol")
        guest = memory.login(self, None)
        self.assertEqual(first.methods, _methods("add", "subtract"))
        self.assertIs(first.methods, second.methods)
        self.assertIs(first.methods, bob.methods)
        self.assertIs(first.methods, guest.methods)
        # Nor does each login keep its own copy of the (as large) key.
        self.assertIs(first.login.sharedMethods, second.login.sharedMethods)
        self.assertEqual(carol.methods, _methods("approve"))
        self.assertIsNot(carol.methods, first.methods)
        self.assertEqual(memory.table.sharedMethodsCount(), 2)

    def test_releasedWithTheLastLogin(self) -> None:
        """
        A description is dropped when the last login using it closes, by
        whichever ending; the table keeps none for ended sessions.
        """
        memory = MemoryTable(shareAnonymous=False, sessionIdleTimeout=10.0)
        memory.describe = lambda username: _methods(username or "guest")
        alice = [memory.login(self, "alice") for _ in range(3)]
        bob, carol = memory.login(self, "bob"), memory.login(self, "carol")
        self.assertEqual(memory.table.sharedMethodsCount(), 3)
        alice[0].end("logged out")
        alice[1].login.lost()
        self.assertEqual(memory.table.sharedMethodsCount(), 3)
        alice[2].end("logged out")
        self.assertEqual(memory.table.sharedMethodsCount(), 2)
        memory.clock.advance(10.0)
        self.assertEqual((bob.ended, carol.ended), ("expired", "expired"))
        self.assertEqual(memory.table.sharedMethodsCount(), 0)
        # A refused login gives its description back too.
        memory = MemoryTable(maxSessionsPerUser=1)
        memory.login(self, "alice")
        memory.describe = lambda username: _methods("other")
        self.assertIsInstance(memory.refused(self, "alice"), TooManyRequests)
        self.assertEqual(memory.table.sharedMethodsCount(), 1)
        memory.table.closeAll()
        self.assertEqual(memory.table.sharedMethodsCount(), 0)

    def test_manyDistinctDescriptionsBounded(self) -> None:
        """
        Descriptions that all differ (one per login) do not pile up: the
        table holds only those of open logins.
        """
        memory = MemoryTable(maxSessionsPerUser=0)
        counter = iter(range(10**6))
        memory.describe = lambda username: _methods(f"m{next(counter)}")
        for _ in range(200):
            memory.login(self, "alice").end("logged out")
        self.assertEqual(memory.table.sharedMethodsCount(), 0)
        sessions = [memory.login(self, "alice") for _ in range(5)]
        self.assertEqual(memory.table.sharedMethodsCount(), 5)
        memory.table.closeAll()
        self.assertEqual((memory.table.sharedMethodsCount(), len(sessions)), (0, 5))

    def test_notPlainJSONNotShared(self) -> None:
        """
        A description JSON would not tell apart from another (a tuple for a
        list) or cannot carry is the login's own, unchanged, and not held.
        """
        memory = MemoryTable(shareAnonymous=False)
        odd = [{"name": "add", "params": ("a", "b")}]
        memory.describe = lambda username: copy.deepcopy(odd)
        first, second = memory.login(self, "alice"), memory.login(self, "alice")
        self.assertEqual(first.methods, odd)
        self.assertIsNot(first.methods, second.methods)
        self.assertEqual(memory.table.sharedMethodsCount(), 0)
        memory.describe = lambda username: None
        self.assertIsNone(memory.login(self, "bob").methods)
        self.assertIsNone(_canonicalJSON([{"name": b"add"}]))
        self.assertNotEqual(_canonicalJSON([1]), _canonicalJSON([1.0]))
        self.assertNotEqual(_canonicalJSON([1]), _canonicalJSON([True]))

    def test_lostWhileDescribing(self) -> None:
        """
        A login whose broker connection is lost while its avatar is being
        described keeps its description to itself: the table holds none
        (nothing would release it).
        """
        table = SessionTable(Clock(), GatewayOptions(staticDir=None))
        factory = FakeLoginFactory()
        describing: Deferred[Any] = Deferred()

        async def connect(factory: Any) -> Any:
            return factory._broker

        async def describe(avatar: Any) -> Any:
            return await describing

        table.newFactory = lambda: factory  # type: ignore[assignment,method-assign,return-value]
        table.connect = connect  # type: ignore[method-assign]
        table._describeMethods = describe  # type: ignore[method-assign]
        loggingIn = Deferred.fromCoroutine(table.login("alice", "pw"))
        [lost] = factory._broker.lost
        lost()
        describing.callback(_methods("add"))
        session = self.successResultOf(loggingIn)
        self.assertTrue(session.login.closed)
        self.assertEqual(session.methods, _methods("add"))
        self.assertEqual(table.sharedMethodsCount(), 0)


class FakeBroker:
    def __init__(self) -> None:
        self.lost: list[Any] = []

    def notifyOnDisconnect(self, callback: Any) -> None:
        self.lost.append(callback)


class FakeLoginFactory(FakeFactory):
    """
    A PB client factory whose logins succeed at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._broker = FakeBroker()

    def login(self, credentials: Any, mind: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        d.callback(object())
        return d


# -- against a real broker ------------------------------------------------------------


class Clerk(pb.Avatar):
    """
    The avatar of the realm's clerks.
    """

    def perspective_add(self, a: int, b: int) -> int:
        """
        Add two numbers.
        """
        return a + b

    def perspective_whoami(self) -> str:
        return str(self.avatarId)


class Manager(Clerk):
    """
    A clerk who may also approve.
    """

    def perspective_approve(self, item: str) -> str:
        return f"approved {item}"


class OfficeRealm(pb.Realm):
    """
    Clerks (alice, bob) and a manager (carol).
    """

    demoUsers = {"alice": "password", "bob": "secret", "carol": "boss"}
    allowAnonymous = True

    def createAvatar(self, avatarId: Any, mind: Any) -> Any:
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        avatar = (Manager if name == "carol" else Clerk)(name)
        avatar.mind = mind
        return avatar


CAROL = {"username": "carol", "password": "boss"}


class BrokerTests(GatewayHarness, TestCase):
    """
    Password logins to a real broker, over REST and the WebSocket.
    """

    async def startOffice(self, **options: Any) -> SessionTable:
        await self.startGateway(await self.startBroker(OfficeRealm()), **options)
        table: SessionTable = self.gateway.table
        return table

    async def test_sameAvatarClassShares(self) -> None:
        """
        Password logins of the same user, or of another user with the same
        avatar class, share one description object; another class's logins
        get another; what the clients are sent is unchanged, and using the
        sessions (OpenAPI, rpc.login) leaves the shared object as it was.
        """
        table = await self.startOffice(shareAnonymous=False)
        rest = self.restClient()
        await rest.login("alice", "password")
        self.addCleanup(rest.logout)
        sockets = [await self.loggedIn(credentials) for credentials in (ALICE, BOB, CAROL)]
        tokens = [rest.token] + [
            session.token for session in table.sessions.values()
            if session.token != rest.token
        ]
        sessions = [table.get(token) for token in tokens]
        byUser: dict[str | None, list[Session]] = {}
        for session in sessions:
            byUser.setdefault(session.username, []).append(session)
        clerkMethods = byUser["alice"][0].methods
        self.assertIsNotNone(clerkMethods)
        assert clerkMethods is not None
        self.assertEqual(sorted(m["name"] for m in clerkMethods), ["add", "whoami"])
        self.assertIs(byUser["alice"][1].methods, clerkMethods)
        self.assertIs(byUser["bob"][0].methods, clerkMethods)
        managerMethods = byUser["carol"][0].methods
        assert managerMethods is not None
        self.assertEqual(sorted(m["name"] for m in managerMethods),
                         ["add", "approve", "whoami"])
        self.assertIsNot(managerMethods, clerkMethods)
        self.assertEqual(table.sharedMethodsCount(), 2)
        self.assertEqual(rest.methods, clerkMethods)
        key = _canonicalJSON(clerkMethods)
        document = await rest._request("GET", "/api/openapi.json")
        self.assertIn("/api/call/whoami", document["paths"])
        await sockets[0].call("rpc.login", {"token": rest.token})
        self.assertEqual(_canonicalJSON(clerkMethods), key)
        self.assertEqual(await sockets[2].call("approve", ["it"]), "approved it")

    async def test_releasedWhenSessionsEnd(self) -> None:
        """
        The table's descriptions go with the sessions: after logouts and a
        lost broker connection, it holds none; the session counts are back
        to zero too.
        """
        table = await self.startOffice()
        socket = await self.loggedIn(ALICE)
        await socket.call("rpc.logout")
        rest = self.restClient()
        await rest.login("carol", "boss")
        await self.loggedIn(BOB)
        await self.loggedIn()
        self.assertEqual(table.sharedMethodsCount(), 2)
        self.assertEqual(table.sessionsByUser, {"carol": 1, "bob": 1})
        self.assertEqual(table.sessionsByAddress, {"127.0.0.1": 1})
        await self.brokerService.stopService()
        await waitFor(lambda: not table.sessions, what="every session to end")
        self.assertEqual(table.sharedMethodsCount(), 0)
        self.assertEqual((table.sessionsByUser, table.sessionsByAddress), ({}, {}))

    async def test_limitOverBothTransports(self) -> None:
        """
        With C{maxSessionsPerUser=1}, a second session of alice is refused
        over REST and over the WebSocket, and a wrong password is refused
        without counting; logging out makes room.
        """
        table = await self.startOffice(maxSessionsPerUser=1)
        socket = await self.loggedIn(ALICE)
        error = await (await self.socket()).error("rpc.login", ALICE)
        self.assertEqual(error.data["code"], "too_many_sessions")
        wrong = await (await self.socket()).error(
            "rpc.login", {"username": "bob", "password": "nope"})
        self.assertEqual(wrong.data["code"], "login_failed")
        self.assertEqual(table.sessionsByUser, {"alice": 1})
        await socket.call("rpc.logout")
        self.assertEqual(table.sessionsByUser, {})
        await self.loggedIn(ALICE)
        self.assertEqual(table.sessionsByUser, {"alice": 1})
