"""
Tests of server-initiated calls (C{gateway/mind.py}): a PB service calling
its web users back through their session's mind, end to end over real
loopback sockets.

The browsers are the C{websockets} library's sync client.  Each L{Page}
reads its socket in its own thread and answers the gateway's mind calls
there, as a page's handlers would, so the reactor keeps serving the broker
and the gateway.  The chat example (C{examples/chat.py}) is exercised by a
Twisted PB client, a C{pb} client and two browsers at once.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import treq
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import pb
from gateway.service import GatewayService
from gateway.sessions import GatewayOptions, Session
from pb.demo import DemoRealm
from pb.service import BrokerService, loadService

# The chat example is imported as C{examples.chat}, the name a
# C{--service examples.chat:makeService} spec uses; like the CLI (which puts
# the working directory there), that needs the repository root on the path.
REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))
chat: Any = importlib.import_module("examples.chat")

LOOPBACK = "tcp:0:interface=127.0.0.1"
DISCONNECTED = "the browser disconnected during the call"


# -- the browser ---------------------------------------------------------------


HOLD = object()
"""
A handler's answer meaning "do not reply (yet)": the call stays pending.
"""


class HandlerError(Exception):
    """
    Raised by a page's handler: answered as a JSON-RPC error.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RPCFailed(Exception):
    """
    The page's own request was answered with a JSON-RPC error.
    """

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class Page:
    """
    A web page on one WebSocket.

    A reader thread reads every message.  The gateway's mind calls
    (requests with a C{method} and an C{id}) and notifications are kept in
    L{received}, in order, and calls are answered at once by the handler
    registered for their method, in the reader thread: a handler takes the
    call's C{params} and returns the result (or L{HOLD} to leave the call
    unanswered), or raises L{HandlerError} (any other exception is answered
    with code -32000).  Answers to the page's own requests go back to the
    reactor.
    """

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self._answers: dict[int, Deferred[dict[str, Any]]] = {}
        self._nextID = 0
        self.closed = False
        self.token: str | None = None
        self._reader = threading.Thread(target=self._read, name="Page", daemon=True)
        self._reader.start()

    @classmethod
    async def open(cls, test: TestCase, url: str) -> Page:
        """
        Connect to C{url}; the test closes the page.
        """
        page = cls(await deferToThread(_connect, url))
        test.addCleanup(page.close)
        return page

    # -- the reader thread -------------------------------------------------

    def _read(self) -> None:
        try:
            for raw in self.connection:
                message = json.loads(raw)
                if isinstance(message, dict) and "method" in message:
                    with self._lock:
                        self._received.append(message)
                    if "id" in message:
                        self._answerCall(message)
                else:
                    reactor.callFromThread(self._answered, message)
        except ConnectionClosed:
            pass
        finally:
            reactor.callFromThread(self._lost)

    def _answerCall(self, message: dict[str, Any]) -> None:
        callID = message["id"]
        handler = self.handlers.get(message["method"])
        try:
            if handler is None:
                raise HandlerError(-32601, f"no handler for {message['method']}")
            result = handler(message.get("params"))
        except HandlerError as e:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": callID,
                                     "error": {"code": e.code, "message": e.message}}
        except Exception as e:
            reply = {"jsonrpc": "2.0", "id": callID, "error": {"code": -32000, "message": str(e)}}
        else:
            if result is HOLD:
                return
            reply = {"jsonrpc": "2.0", "id": callID, "result": result}
        try:
            self.connection.send(json.dumps(reply))
        except ConnectionClosed:
            pass

    # -- the reactor's side -------------------------------------------------

    def _answered(self, message: Any) -> None:
        waiting = self._answers.pop(message["id"], None) if isinstance(message, dict) else None
        if waiting is None:
            raise AssertionError(f"an answer nobody asked for: {message!r}")
        waiting.callback(message)

    def _lost(self) -> None:
        answers, self._answers = self._answers, {}
        for waiting in answers.values():
            waiting.errback(ConnectionError("the socket closed before the answer"))

    def received(self, method: str | None = None) -> list[dict[str, Any]]:
        """
        The mind calls and notifications received so far (named C{method}).
        """
        with self._lock:
            return [m for m in self._received if method is None or m["method"] == method]

    async def waitForReceived(
        self, method: str, count: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """
        The first C{count} messages named C{method}, once they have arrived.
        """
        await waitFor(lambda: len(self.received(method)) >= count, timeout,
                      f"{count} {method} messages")
        return self.received(method)[:count]

    async def request(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        """
        Send a request of the page's own (integer ids); its whole response.
        """
        self._nextID += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._nextID, "method": method}
        if params is not None:
            message["params"] = params
        answer: Deferred[dict[str, Any]] = Deferred()
        answer.addTimeout(timeout, reactor)
        self._answers[self._nextID] = answer
        await deferToThread(self.connection.send, json.dumps(message))
        return await answer

    async def send(self, message: Any) -> None:
        """
        Send one JSON message as it is (e.g. a late answer).
        """
        await deferToThread(self.connection.send, json.dumps(message))

    async def call(self, method: str, params: Any = None) -> Any:
        """
        The result of a request, or L{RPCFailed}.
        """
        response = await self.request(method, params)
        if "error" in response:
            raise RPCFailed(response["error"])
        return response["result"]

    async def login(self, username: str, password: str) -> str:
        """
        Log in with C{rpc.login}; the session's token.
        """
        result = await self.call("rpc.login", {"username": username, "password": password})
        self.token = str(result["token"])
        return self.token

    async def expose(self, **handlers: Callable[[Any], Any]) -> None:
        """
        Register handlers and tell the gateway (C{rpc.expose}).
        """
        self.handlers.update(handlers)
        result = await self.call("rpc.expose", {"methods": sorted(handlers)})
        if not set(handlers) <= set(result["exposed"]):
            raise AssertionError(f"not exposed: {result!r}")

    async def close(self) -> None:
        """
        Close the socket and wait for the reader thread.
        """
        if self.closed:
            return
        self.closed = True
        await deferToThread(self.connection.close)
        await deferToThread(self._reader.join, 10)


def _connect(url: str) -> ClientConnection:
    connection = connect(url, compression=None, open_timeout=10, close_timeout=5)
    # Enter its context, as websockets asks: closing it is Page.close's job.
    return connection.__enter__()


async def waitFor(predicate: Callable[[], Any], timeout: float = 10.0,
                  what: str = "condition") -> None:
    """
    Let the reactor run until C{predicate()} holds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await deferLater(reactor, 0.01, lambda: None)


async def remoteErrorOf(d: Deferred[Any], timeout: float = 10.0) -> pb.RemoteError:
    """
    The remote error C{d} fails with (the test fails if it succeeds, hangs
    or fails otherwise).
    """
    d.addTimeout(timeout, reactor)
    try:
        result = await d
    except pb.RemoteError as e:
        return e
    raise AssertionError(f"expected a remote error, got {result!r}")


class EventStreamReader(Protocol):
    """
    Collects a C{text/event-stream} body; L{events} parses what arrived.
    """

    def __init__(self) -> None:
        self.data = b""
        self.finished: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.finished.called:
            self.finished.callback(None)

    def events(self, name: str | None = None) -> list[tuple[str, Any]]:
        """
        The complete events so far: (event name, decoded data).
        """
        found = []
        for block in self.data.decode("utf-8").split("\n\n")[:-1]:
            fields = dict(
                line.split(": ", 1) for line in block.split("\n") if not line.startswith(":")
            )
            if "event" in fields and (name is None or fields["event"] == name):
                found.append((fields["event"], json.loads(fields["data"])))
        return found


# -- services used by the tests --------------------------------------------------


class Thing(pb.Referenceable):
    """
    An object the service lends the browser by reference.
    """

    def remote_poke(self, n: int) -> str:
        return f"poked {n}"


class Gift(pb.Copyable):
    """
    A value the service sends the browser by copy.
    """

    def __init__(self, what: str, count: int) -> None:
        self.what = what
        self.count = count

    def getTypeToCopy(self) -> bytes:
        return b"test_mind.Gift"


class Caller(pb.Perspective):
    """
    A user of L{MindRealm}.
    """

    def __init__(self, realm: MindRealm, name: str, mind: Any) -> None:
        super().__init__(name)
        self.realm = realm
        self.mind = mind

    async def perspective_giveGift(self) -> dict[str, Any]:
        """
        Show the user a L{Thing} and a L{Gift}; say whether the user's
        answer was that same Thing.
        """
        thing = Thing()
        answer = await self.mind.callRemote("show", thing, Gift("cake", 3))
        return {"sameThing": answer is thing}


class MindRealm(pb.Realm):
    """
    A tiny service that keeps every user's mind, so a test can call it as
    the service would.
    """

    demoUsers = {"bob": "secret", "carol": "hunter2"}

    def __init__(self) -> None:
        self.minds: dict[str, Any] = {}

    def createAvatar(self, avatarId: Any, mind: Any) -> Caller:
        name = avatarId.decode("utf-8")
        self.minds[name] = mind
        return Caller(self, name, mind)


class TwistedMind(twistedPB.Referenceable):
    """
    A Twisted PB client's mind for the chat example.
    """

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.received: list[tuple[str, str, str]] = []

    def remote_receive(self, room: str, sender: str, text: str) -> str:
        self.received.append((room, sender, text))
        return self.answer


# -- the harness ------------------------------------------------------------------


class MindTestCase(TestCase):
    """
    Serve a PB service behind a gateway on loopback, port 0, and open pages,
    REST calls and event streams on it; the test's cleanups stop them all.
    """

    async def serve(self, service: Any, **options: Any) -> None:
        """
        Serve C{service} with L{BrokerService} and a L{GatewayService} in
        front of it with C{options}.
        """
        self.broker = broker = BrokerService(reactor, LOOPBACK, service)
        broker.startService()
        self.addCleanup(broker.stopService)
        self.brokerPort = (await broker.whenListening()).getHost().port  # type: ignore[attr-defined]
        options.setdefault("staticDir", None)
        self.gateway = GatewayService(
            reactor, LOOPBACK,
            GatewayOptions(broker=f"tcp:host=127.0.0.1:port={self.brokerPort}", **options),
        )
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        port = (await self.gateway.whenListening()).getHost().port  # type: ignore[attr-defined]
        self.httpURL = f"http://127.0.0.1:{port}"
        self.wsURL = f"ws://127.0.0.1:{port}/ws"
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    async def page(self, token: str | None = None) -> Page:
        """
        A new page; with C{token}, joined to that session (C{/ws?token=T}).
        """
        url = self.wsURL if token is None else f"{self.wsURL}?token={token}"
        return await Page.open(self, url)

    def session(self, token: str) -> Session:
        """
        The gateway's session for C{token}.
        """
        return self.gateway.table.get(token)

    async def rest(self, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """
        POST C{body} as JSON to C{path}; the status and the decoded answer.
        """
        headers: dict[bytes | str, bytes | str] = (
            {"Authorization": f"Bearer {token}"} if token else {}
        )
        response = await treq.post(self.httpURL + path, json=body, headers=headers,
                                   pool=self.pool)
        return response.code, json.loads(await response.content())

    async def restLogin(self, **body: Any) -> str:
        """
        Log in over REST; the token.
        """
        status, answer = await self.rest("/api/login", body)
        self.assertEqual(status, 200, answer)
        return str(answer["token"])

    async def events(self, path: str) -> EventStreamReader:
        """
        Open an SSE stream on C{path}; the test closes it.
        """
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await agent.request(b"GET", (self.httpURL + path).encode())
        self.assertEqual(response.code, 200)
        reader = EventStreamReader()
        response.deliverBody(reader)

        async def close() -> None:
            if not reader.finished.called:
                reader.transport.stopProducing()  # type: ignore[union-attr]
            await reader.finished

        self.addCleanup(close)
        return reader

    async def twistedClient(self, username: bytes, password: bytes, mind: Any) -> Any:
        """
        A Twisted PB client's avatar, logged in straight to the broker.
        """
        factory = twistedPB.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.brokerPort, factory)
        self.addCleanup(factory.disconnect)
        return await factory.login(UsernamePassword(username, password), client=mind)

    async def pbClient(self, credentials: Any, mind: Any) -> Any:
        """
        A C{pb} client's avatar, logged in straight to the broker.
        """
        factory = pb.PBClientFactory()
        await pb.connect("127.0.0.1", self.brokerPort, factory)
        self.addCleanup(factory.disconnect)
        return await factory.login(credentials, mind)

    def assertNothingLogged(self) -> None:
        """
        No traceback was logged as unexpected.
        """
        self.assertEqual([f.getTraceback() for f in self.flushLoggedErrors()], [])


# -- the chat example with every kind of client ---------------------------------


class ChatTests(MindTestCase):
    """
    C{examples/chat.py} behind the gateway: native and web members in one
    room.
    """

    async def webMember(self, username: str, password: str,
                        answer: Callable[[str], Any]) -> tuple[Page, str, list[tuple[str, ...]]]:
        """
        A page logged in as C{username} that exposes C{receive} (answering
        with C{answer(text)}) and joins C{lobby}: the page, its seat's handle
        and the messages it receives.
        """
        page = await self.page()
        await page.login(username, password)
        seen: list[tuple[str, ...]] = []

        def receive(params: Any) -> Any:
            seen.append(tuple(params))
            return answer(params[2])

        await page.expose(receive=receive)
        seat = await page.call("join", ["lobby"])
        self.assertEqual(set(seat), {"$ref"})
        return page, seat["$ref"], seen

    async def test_fourKindsOfMembers(self) -> None:
        """
        A Twisted PB client, a C{pb} client and two browsers join one room
        and each says something: every member sees every message, in order;
        a browser handler's return value reaches the service (in C{say}'s
        answers) and a handler's thrown error reaches it as an error.
        """
        self.service = chat.ChatService()
        await self.serve(self.service)
        aliceMind = TwistedMind("alice ok")
        alice = await self.twistedClient(b"alice", b"password", aliceMind)
        aliceSeat = await alice.callRemote("join", "lobby")
        printed: list[str] = []
        daveMind = chat.PrintingMind(out=printed.append)
        dave = await self.pbClient(UsernamePassword(b"dave", b"letmein"), daveMind)
        daveSeat = await dave.callRemote("join", "lobby")
        bob, bobSeat, bobSaw = await self.webMember(
            "bob", "secret", lambda text: f"bob saw {text!r}")

        def carolAnswers(text: str) -> Any:
            if text.endswith("?"):
                raise HandlerError(4000, "carol does not answer questions")
            return {"carol": len(text)}

        carol, carolSeat, carolSaw = await self.webMember("carol", "hunter2", carolAnswers)

        said = [
            await aliceSeat.callRemote("say", "hello from Twisted"),
            await daveSeat.callRemote("say", "hello from pb"),
            await bob.call("rpc.call", {"ref": bobSeat, "method": "say",
                                        "args": ["hello from a browser"]}),
            await carol.call("rpc.call", {"ref": carolSeat, "method": "say",
                                          "args": ["hello from another browser"]}),
            await daveSeat.callRemote("say", "carol, are you there?"),
        ]
        # say answers what each member's mind answered, in the order they
        # joined: alice (Twisted), dave (pb), bob and carol (browsers).
        self.assertEqual(said, [
            ["alice ok", "ok", "bob saw 'hello from Twisted'", {"carol": 18}],
            ["alice ok", "ok", "bob saw 'hello from pb'", {"carol": 13}],
            ["alice ok", "ok", "bob saw 'hello from a browser'", {"carol": 20}],
            ["alice ok", "ok", "bob saw 'hello from another browser'", {"carol": 26}],
            ["alice ok", "ok", "bob saw 'carol, are you there?'",
             "error: carol does not answer questions"],
        ])

        messages = [
            ("lobby", "alice", "hello from Twisted"),
            ("lobby", "dave", "hello from pb"),
            ("lobby", "bob", "hello from a browser"),
            ("lobby", "carol", "hello from another browser"),
            ("lobby", "dave", "carol, are you there?"),
        ]
        joins = [("lobby", "*", f"{name} joined") for name in ["alice", "dave", "bob", "carol"]]
        self.assertEqual(aliceMind.received, joins + messages)
        self.assertEqual(daveMind.received, joins[1:] + messages)
        self.assertEqual(printed[-1], "[lobby] dave: carol, are you there?")
        self.assertEqual(bobSaw, joins[2:] + messages)
        self.assertEqual(carolSaw, joins[3:] + messages)
        self.assertEqual(await aliceSeat.callRemote("members"), ["alice", "bob", "carol", "dave"])

        await bob.call("rpc.call", {"ref": bobSeat, "method": "leave"})
        await waitFor(lambda: len(carolSaw) == 7, what="carol seeing bob leave")
        self.assertEqual(carolSaw[-1], ("lobby", "*", "bob left"))
        self.assertEqual(await daveSeat.callRemote("members"), ["alice", "carol", "dave"])
        self.assertEqual([m["id"] for m in carol.received("receive")],
                         [f"m{n}" for n in range(1, 8)])
        self.assertNothingLogged()

    async def test_disconnectMidCall(self) -> None:
        """
        A browser that disconnects while a call waits for its answer makes
        that call fail at once with a PB error saying so; the speaker's
        C{say} answers that error for it and nothing is logged as
        unexpected.
        """
        self.service = chat.ChatService()
        await self.serve(self.service, mindWait=0.3)
        dave = await self.pbClient(UsernamePassword(b"dave", b"letmein"), chat.PrintingMind(str))
        daveSeat = await dave.callRemote("join", "lobby")
        bob, _, _ = await self.webMember(
            "bob", "secret", lambda text: HOLD if text == "still there?" else "ok")

        said = daveSeat.callRemote("say", "still there?")
        await bob.waitForReceived("receive", 2)
        self.assertFalse(said.called)
        started = time.monotonic()
        await bob.close()
        said.addTimeout(10, reactor)
        self.assertEqual(await said, ["ok", f"error: {DISCONNECTED}"])
        self.assertLess(time.monotonic() - started, 5)

        # The same, seen by a service calling the mind itself.
        bob = await self.page(bob.token)
        await bob.expose(receive=lambda params: HOLD)
        direct = self.service.rooms["lobby"].members["bob"].callRemote("receive", "x", "y", "z")
        await bob.waitForReceived("receive", 1)
        await bob.close()
        error = await remoteErrorOf(direct)
        self.assertIsInstance(error, pb.RemoteError)
        self.assertEqual(str(error), DISCONNECTED)
        self.assertTrue(error.isPBError)
        self.assertNothingLogged()

    async def test_noSocket(self) -> None:
        """
        A member whose session has no WebSocket: after C{mindWait} the call
        fails with L{gateway.mind.NoMindHandler}, a PB error naming the
        method, and C{say} answers that error for the member.
        """
        self.service = chat.ChatService()
        await self.serve(self.service, mindWait=0.3)
        token = await self.restLogin(username="carol", password="hunter2")
        status, seat = await self.rest("/api/call/join", ["lobby"], token)
        self.assertEqual(status, 200, seat)
        self.assertEqual(set(seat["result"]), {"$ref"})
        dave = await self.pbClient(UsernamePassword(b"dave", b"letmein"), chat.PrintingMind(str))
        daveSeat = await dave.callRemote("join", "lobby")
        started = time.monotonic()
        said = await daveSeat.callRemote("say", "anyone?")
        waited = time.monotonic() - started
        self.assertEqual(said, ["error: no web client of this session handles 'receive'"
                                " (waited 0.3 s)", "ok"])
        self.assertGreaterEqual(waited, 0.3)
        self.assertLess(waited, 5)
        error = await remoteErrorOf(
            self.service.rooms["lobby"].members["carol"].callRemote("receive", "a", "b", "c")
        )
        self.assertEqual(error.remoteType, "gateway.mind.NoMindHandler")
        self.assertTrue(error.isPBError)
        self.assertNothingLogged()


class ChatExampleTests(MindTestCase):
    """
    The chat example on its own: its entry points and its rules.
    """

    def test_makeService(self) -> None:
        """
        C{--service examples.chat:makeService} loads the chat realm, which
        offers the demo users and anonymous guests.
        """
        service = loadService("examples.chat:makeService")
        self.assertIsInstance(service, chat.ChatService)
        self.assertTrue(service.allowAnonymous)
        self.assertEqual(service.demoUsers["carol"], "hunter2")

    async def test_runClient(self) -> None:
        """
        C{runClient} against C{makeFactory()} logs in, joins, says its lines
        and returns what its L{PrintingMind} received.
        """
        port = reactor.listenTCP(0, chat.makeFactory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        received = await Deferred.fromCoroutine(chat.runClient(
            reactor, "127.0.0.1", port.getHost().port, "alice", "password", "den",
            ["one", "two"],
        ))
        self.assertEqual(received, [("den", "*", "alice joined"), ("den", "alice", "one"),
                                    ("den", "alice", "two")])

    async def test_sameUserTwice(self) -> None:
        """
        A user in a room from two logins: the newer one receives the
        messages, and the older one leaving or logging out does not take
        the newer one out of the room.
        """
        service = chat.ChatService()
        await self.serve(service)
        older, newer = chat.PrintingMind(str), chat.PrintingMind(str)
        olderFactory = pb.PBClientFactory()
        await pb.connect("127.0.0.1", self.brokerPort, olderFactory)
        self.addCleanup(olderFactory.disconnect)
        # Hold the avatars: dropping one logs its login out.
        olderAvatar = await olderFactory.login(UsernamePassword(b"bob", b"secret"), older)
        olderSeat = await olderAvatar.callRemote("join", "lobby")
        newerAvatar = await self.pbClient(UsernamePassword(b"bob", b"secret"), newer)
        newerSeat = await newerAvatar.callRemote("join", "lobby")
        await olderSeat.callRemote("leave")
        connections = self.broker.factory.connections
        before = len(connections)
        olderFactory.disconnect()
        await waitFor(lambda: len(connections) < before, what="the older login's end")
        self.assertEqual(await newerSeat.callRemote("members"), ["bob"])
        self.assertEqual(await newerSeat.callRemote("say", "still here"), ["ok"])
        self.assertEqual(newer.received[-1], ("lobby", "bob", "still here"))
        self.assertEqual(older.received, [("lobby", "*", "bob joined")])

    async def test_rules(self) -> None:
        """
        Joining needs a mind and a room name that is an identifier; a
        message is 1 to 500 characters; a seat stops working once left;
        guests get numbered names; C{rooms} lists the rooms.
        """
        service = chat.ChatService()
        await self.serve(service)
        mindless = await self.pbClient(UsernamePassword(b"alice", b"password"), None)
        with self.assertRaises(pb.Error) as raised:
            await mindless.callRemote("join", "lobby")
        self.assertIn("log in with a mind", str(raised.exception))
        guest = await self.pbClient(Anonymous(), chat.PrintingMind(str))
        for room in ["", "two words", 7]:
            with self.assertRaises(pb.Error):
                await guest.callRemote("join", room)
        seat = await guest.callRemote("join", "lobby")
        self.assertEqual(await seat.callRemote("members"), ["guest1"])
        for text in ["", "   ", "x" * 501]:
            with self.assertRaises(pb.Error):
                await seat.callRemote("say", text)
        self.assertEqual(await seat.callRemote("say", "x" * 500), ["ok"])
        self.assertEqual(await guest.callRemote("rooms"), ["lobby"])
        await seat.callRemote("leave")
        with self.assertRaises(pb.Error) as raised:
            await seat.callRemote("say", "hello?")
        self.assertIn("you left this room", str(raised.exception))
        self.assertNothingLogged()


# -- the gateway's side of mind calls --------------------------------------------


class MindCallTests(MindTestCase):
    """
    How a service's call on a web session's mind reaches the session's
    sockets, with a service that calls the mind directly.
    """

    async def setUpRealm(self, **options: Any) -> None:
        self.realm = MindRealm()
        await self.serve(self.realm, **options)

    async def test_requestShapes(self) -> None:
        """
        A mind call becomes a JSON-RPC request with an id C{m<N>} and
        C{params}: the positional arguments as an array, keyword arguments
        as an object, both as C{{"args", "kwargs"}}; values use the JSON
        value codec both ways; the page's result is the call's result.
        """
        await self.setUpRealm()
        page = await self.page()
        await page.login("bob", "secret")
        await page.expose(receive=lambda params: {"echo": params, "raw": {"$bytes": "AQI="}})
        mind = self.realm.minds["bob"]
        answers = [
            await mind.callRemote("receive", 1, "two", b"\x00", (4, 5)),
            await mind.callRemote("receive", text="hi"),
            await mind.callRemote("receive", 1, text="hi"),
            await mind.callRemote("receive"),
        ]
        params = [
            [1, "two", {"$bytes": "AA=="}, [4, 5]],
            {"text": "hi"},
            {"args": [1], "kwargs": {"text": "hi"}},
            [],
        ]
        # The page's answer is decoded on the way back, its echo included.
        echoes = [[1, "two", b"\x00", [4, 5]], {"text": "hi"}, {"args": [1], "kwargs": {"text": "hi"}},
                  []]
        self.assertEqual(answers, [{"echo": e, "raw": b"\x01\x02"} for e in echoes])
        self.assertEqual(
            page.received(),
            [{"jsonrpc": "2.0", "id": f"m{n}", "method": "receive", "params": p}
             for n, p in enumerate(params, 1)],
        )

    async def test_errorReply(self) -> None:
        """
        A JSON-RPC error reply fails the service's call with a PB error
        carrying the page's message; an unanswerable method (the page has
        no handler) fails the same way.
        """
        await self.setUpRealm()
        page = await self.page()
        await page.login("bob", "secret")

        def refuse(params: Any) -> Any:
            raise HandlerError(-32000, "no thanks")

        await page.expose(receive=refuse, other=lambda params: "fine")
        page.handlers.pop("other")
        mind = self.realm.minds["bob"]
        error = await remoteErrorOf(mind.callRemote("receive", 1))
        self.assertIsInstance(error, pb.RemoteError)
        self.assertEqual(str(error), "no thanks")
        self.assertTrue(error.isPBError)
        error = await remoteErrorOf(mind.callRemote("other"))
        self.assertEqual(str(error), "no handler for other")
        self.assertNothingLogged()

    async def test_valuesTheCodecRefuses(self) -> None:
        """
        A service's argument that JSON cannot carry (a cycle) and a page's
        answer that is not a PB value (an unknown handle, bad base64) fail
        the call with a PB error saying so, and are not logged as
        unexpected.
        """
        await self.setUpRealm()
        page = await self.page()
        await page.login("bob", "secret")
        answers = iter([{"$ref": "rnothing"}, {"$bytes": "!!"}])
        await page.expose(receive=lambda params: next(answers))
        mind = self.realm.minds["bob"]
        cycle: list[Any] = []
        cycle.append(cycle)
        errors = [
            await remoteErrorOf(mind.callRemote("receive", cycle)),
            await remoteErrorOf(mind.callRemote("receive", 1)),
            await remoteErrorOf(mind.callRemote("receive", 2)),
        ]
        self.assertEqual([error.isPBError for error in errors], [True, True, True])
        self.assertEqual(
            [str(error) for error in errors],
            ["cannot send 'receive' to the browser: the broker's value contains a cycle",
             "the browser's answer to 'receive' is not a PB value:"
             " no reference 'rnothing' in this session",
             "the browser's answer to 'receive' is not a PB value:"
             " bad $bytes value: Only base64 data is allowed"],
        )
        self.assertEqual([m["params"] for m in page.received()], [[1], [2]])
        self.assertNothingLogged()

    async def test_answerTimeout(self) -> None:
        """
        A page that does not answer within C{callTimeout} fails the call
        with a PB error; its late answer is ignored and the socket keeps
        working.
        """
        await self.setUpRealm(callTimeout=0.5)
        page = await self.page()
        await page.login("bob", "secret")
        await page.expose(receive=lambda params: HOLD)
        started = time.monotonic()
        error = await remoteErrorOf(self.realm.minds["bob"].callRemote("receive"))
        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        self.assertEqual(str(error), "the browser did not answer 'receive' within 0.5 s")
        [call] = page.received()
        await page.send({"jsonrpc": "2.0", "id": call["id"], "result": "too late"})
        self.assertEqual(await page.call("rpc.expose", {"methods": []}),
                         {"exposed": ["receive"]})
        self.assertNothingLogged()

    async def test_latestExposerGetsTheCall(self) -> None:
        """
        With several sockets on one session, a call goes to the socket that
        most recently exposed its method; exposing another method does not
        count; when that socket closes, the previous one gets the calls.
        """
        await self.setUpRealm()
        first = await self.page()
        token = await first.login("bob", "secret")
        second = await self.page(token)
        third = await self.page(token)
        await first.expose(receive=lambda params: "first")
        await second.expose(receive=lambda params: "second")
        mind = self.realm.minds["bob"]
        answers = [await mind.callRemote("receive")]
        await first.expose(receive=lambda params: "first again")
        answers.append(await mind.callRemote("receive"))
        await third.expose(other=lambda params: "third")
        answers.append(await mind.callRemote("receive"))
        await first.close()
        answers.append(await mind.callRemote("receive"))
        self.assertEqual(answers, ["second", "first again", "first again", "second"])
        self.assertEqual(third.received(), [])

    async def test_reconnectWithinMindWait(self) -> None:
        """
        A call made while the session has no socket waits; a socket that
        joins the session with C{/ws?token=T} and exposes the method within
        C{mindWait} receives it, and its answer is the call's result.
        """
        await self.setUpRealm(mindWait=5.0)
        page = await self.page()
        token = await page.login("bob", "secret")
        await page.expose(receive=lambda params: "before")
        await page.close()
        started = time.monotonic()
        call = self.realm.minds["bob"].callRemote("receive", "while away")
        again = await self.page(token)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(call.called)
        await again.expose(receive=lambda params: f"back for {params[0]}")
        call.addTimeout(10, reactor)
        self.assertEqual(await call, "back for while away")
        self.assertLess(time.monotonic() - started, 5.0)

    async def test_noHandlerAfterMindWait(self) -> None:
        """
        With a socket that exposed nothing, a call waits C{mindWait} and
        then fails with C{NoMindHandler}, a PB error naming the method.
        """
        await self.setUpRealm(mindWait=0.3)
        page = await self.page()
        await page.login("bob", "secret")
        started = time.monotonic()
        error = await remoteErrorOf(self.realm.minds["bob"].callRemote("receive"))
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(error.remoteType, "gateway.mind.NoMindHandler")
        self.assertEqual(str(error), "no web client of this session handles 'receive'"
                                     " (waited 0.3 s)")
        self.assertEqual(page.received(), [])
        self.assertNothingLogged()

    async def test_notifications(self) -> None:
        """
        A method listed in C{mindNotifications} goes, without an id, to
        every socket of the session that exposed it, and the service's call
        answers L{None} at once; a socket that did not expose it gets
        nothing.
        """
        await self.setUpRealm(mindNotifications=("receive",), mindWait=5.0)
        first = await self.page()
        token = await first.login("bob", "secret")
        second = await self.page(token)
        bystander = await self.page(token)
        for page in (first, second):
            await page.expose(receive=lambda params: HOLD)
        started = time.monotonic()
        self.assertIsNone(await self.realm.minds["bob"].callRemote("receive", "news", n=1))
        self.assertLess(time.monotonic() - started, 5.0)
        expected = {"jsonrpc": "2.0", "method": "receive",
                    "params": {"args": ["news"], "kwargs": {"n": 1}}}
        self.assertEqual(await first.waitForReceived("receive", 1), [expected])
        self.assertEqual(await second.waitForReceived("receive", 1), [expected])
        await bystander.call("rpc.expose", {"methods": []})
        self.assertEqual(bystander.received(), [])

    async def test_referenceAndCopyToBrowser(self) -> None:
        """
        A service passing a Referenceable and a Copyable to the browser: the
        page receives C{{"$ref": H}} (and can call it with C{rpc.call}) and
        C{{"$copy": TYPE, "state": ...}}; answering with the C{$ref} hands
        the service its own object back.
        """
        await self.setUpRealm()
        page = await self.page()
        await page.login("carol", "hunter2")
        await page.expose(show=lambda params: params[0])
        self.assertEqual(await page.call("giveGift"), {"sameThing": True})
        [shown] = page.received("show")
        ref, gift = shown["params"]
        self.assertEqual(set(ref), {"$ref"})
        self.assertEqual(gift, {"$copy": "test_mind.Gift", "state": {"what": "cake", "count": 3}})
        poked = await page.call("rpc.call", {"ref": ref["$ref"], "method": "poke", "args": [7]})
        self.assertEqual(poked, "poked 7")


# -- the demo service: SSE, opting out, the demo chat room -----------------------


class DemoMindTests(MindTestCase):
    """
    The demo service's chat room and mind calls seen by REST and SSE.
    """

    async def setUpDemo(self, **options: Any) -> None:
        self.realm = DemoRealm(clock=reactor)
        await self.serve(self.realm, **options)

    async def test_sseShowsCalls(self) -> None:
        """
        A session's event stream shows each mind call as a read-only
        C{call} event; the call itself, with no socket to answer it, fails
        with C{NoMindHandler}.
        """
        await self.setUpDemo(mindWait=0.3)
        token = await self.restLogin(username="alice", password="password")
        status, board = await self.rest("/api/call/board", None, token)
        self.assertEqual(status, 200)
        stream = await self.events(f"/api/caches/{board['result']['$cache']}/events?token={token}")
        await waitFor(lambda: stream.events("snapshot"), what="the snapshot")
        status, joined = await self.rest("/api/call/joinChat", None, token)
        self.assertEqual((status, joined), (200, {"result": ["alice"]}))
        await waitFor(lambda: stream.events("call"), what="a call event")
        self.assertEqual(stream.events("call"),
                         [("call", {"method": "receive", "params": ["*", "alice joined"]})])
        error = await remoteErrorOf(
            self.realm.chat.members["alice"].callRemote("receive", "bob", "hi")
        )
        self.assertEqual(error.remoteType, "gateway.mind.NoMindHandler")
        self.assertEqual(stream.events("call")[-1],
                         ("call", {"method": "receive", "params": ["bob", "hi"]}))
        self.assertNothingLogged()

    async def test_restLoginWithoutMind(self) -> None:
        """
        A REST login with C{"mind": false} gives the service no mind: the
        demo's C{joinChat} refuses it (422); a login without the key has a
        mind and may join; a non-boolean is a bad login.
        """
        await self.setUpDemo()
        token = await self.restLogin(username="alice", password="password", mind=False)
        self.assertIsNone(self.session(token).mind)
        status, answer = await self.rest("/api/call/joinChat", None, token)
        self.assertEqual(status, 422)
        self.assertIn("join the chat with a client that can receive messages",
                      answer["error"]["message"])
        self.assertEqual(self.realm.chat.members, {})
        withMind = await self.restLogin(username="bob", password="secret")
        self.assertIsNotNone(self.session(withMind).mind)
        status, answer = await self.rest("/api/call/joinChat", None, withMind)
        self.assertEqual((status, answer), (200, {"result": ["bob"]}))
        status, answer = await self.rest(
            "/api/login", {"username": "bob", "password": "secret", "mind": "no"})
        self.assertEqual(status, 400)

    async def test_sameUserTwice(self) -> None:
        """
        A user in the demo's chat room from two sessions: the newer join
        receives the messages, and the older session's logout does not
        take the newer one out of the room.
        """
        await self.setUpDemo()
        older, newer = await self.page(), await self.page()
        for page in (older, newer):
            await page.login("alice", "password")
            await page.expose(receive=lambda params: None)
            await page.call("joinChat")
        await older.call("rpc.logout")
        bob = await self.page()
        await bob.login("bob", "secret")
        await bob.expose(receive=lambda params: None)
        self.assertEqual(await bob.call("joinChat"), ["alice", "bob"])
        await bob.call("say", ["still there, alice?"])
        await newer.waitForReceived("receive", 3)
        self.assertEqual([m["params"] for m in newer.received()],
                         [["*", "alice joined"], ["*", "bob joined"],
                          ["bob", "still there, alice?"]])
        await newer.call("leaveChat")
        self.assertEqual(list(self.realm.chat.members), ["bob"])

    async def test_demoChatRoom(self) -> None:
        """
        Two WebSocket sessions in the demo's chat room (C{joinChat}, C{say},
        C{leaveChat}) each receive C{receive(sender, text)} for every
        message, in order.
        """
        await self.setUpDemo()
        pages = {}
        for name, password in [("alice", "password"), ("bob", "secret")]:
            page = await self.page()
            await page.login(name, password)
            await page.expose(receive=lambda params: None)
            await page.call("joinChat")
            pages[name] = page
        await pages["alice"].call("say", ["hello bob"])
        await pages["bob"].call("say", {"text": "hi alice"})
        await pages["bob"].call("leaveChat")
        alice = await pages["alice"].waitForReceived("receive", 5)
        bob = await pages["bob"].waitForReceived("receive", 3)
        said = [["alice", "hello bob"], ["bob", "hi alice"]]
        self.assertEqual([m["params"] for m in alice],
                         [["*", "alice joined"], ["*", "bob joined"], *said, ["*", "bob left"]])
        self.assertEqual([m["params"] for m in bob], [["*", "bob joined"], *said])
        with self.assertRaises(RPCFailed) as raised:
            await pages["bob"].call("say", ["anyone?"])
        self.assertIn("join the chat first", raised.exception.error["message"])
