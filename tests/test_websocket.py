"""
Tests of the WebSocket bridge (C{gateway/websocket.py}) and its bounded
sender (C{gateway/_flow.py}), end to end over real loopback sockets with an
independent client: the C{websockets} library's sync client, driven from the
reactor through one worker thread per client.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from test_hosting import TwistedBoardMirror
from treq.client import HTTPClient
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from zope.interface import implementer

import pb
from gateway._flow import BoundedSender
from gateway.client import GatewayClient
from gateway.service import GatewayService
from gateway.sessions import GatewayOptions
from pb.demo import DemoRealm
from pb.live import applyDelta
from pb.service import BrokerService

LOOPBACK = "tcp:0:interface=127.0.0.1"
ALICE = {"username": "alice", "password": "password"}
BOB = {"username": "bob", "password": "secret"}


# -- the independent client ---------------------------------------------------


class RPCFailed(Exception):
    """
    A JSON-RPC request was answered with an error.
    """

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error
        self.code = error.get("code")
        self.data = error.get("data") or {}


class WSClient:
    """
    A C{websockets} sync client used from the reactor: every blocking call
    runs in this client's own worker thread (a one-thread pool that
    L{close} stops and joins), so the reactor keeps serving the gateway.

    Messages that arrive while waiting for a particular answer are kept in
    C{backlog}, in order, for L{receive} and L{notifications}.
    """

    def __init__(self, pool: ThreadPool, connection: ClientConnection) -> None:
        self.pool = pool
        self.connection = connection
        self.backlog: list[Any] = []
        self.nextID = 0
        self.closed = False

    @classmethod
    async def open(
        cls,
        test: TestCase,
        url: str,
        origin: str | None = None,
        maxQueue: int = 16,
        receiveBuffer: int | None = None,
    ) -> WSClient:
        """
        Connect to C{url}; the test cleans the client up.  C{maxQueue} is
        how many frames the client buffers before it stops reading the
        socket; C{receiveBuffer} shrinks the kernel's receive buffer.
        """
        pool = ThreadPool(minthreads=1, maxthreads=1, name="WSClient")
        pool.start()
        try:
            connection = await deferToThreadPool(
                reactor, pool, _connect, url, origin, maxQueue, receiveBuffer
            )
        except BaseException:
            pool.stop()
            raise
        client = cls(pool, connection)
        test.addCleanup(client.close)
        return client

    def _inThread(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, self.pool, f, *args, **kwargs)

    async def sendRaw(self, data: str | bytes, text: bool | None = None) -> None:
        """
        Send one frame: text for C{str}, binary for C{bytes} (unless
        C{text} says otherwise: C{bytes} sent as text are not checked).
        """
        await self._inThread(self.connection.send, data, text=text)

    async def send(self, message: Any) -> None:
        """
        Send one JSON message (a request, notification or batch).
        """
        await self.sendRaw(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> Any:
        """
        The next message (from the backlog first).
        """
        if self.backlog:
            return self.backlog.pop(0)
        return json.loads(await self._inThread(self.connection.recv, timeout))

    def request(self, method: str, params: Any = None) -> dict[str, Any]:
        """
        A request with a fresh id.
        """
        self.nextID += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.nextID, "method": method}
        if params is not None:
            message["params"] = params
        return message

    async def answer(self, requestID: Any, timeout: float = 5.0) -> dict[str, Any]:
        """
        The response with C{requestID}; other messages go to the backlog.
        """
        for index, message in enumerate(self.backlog):
            if isinstance(message, dict) and "method" not in message and message.get(
                "id"
            ) == requestID:
                return self.backlog.pop(index)  # type: ignore[no-any-return]
        while True:
            message = json.loads(await self._inThread(self.connection.recv, timeout))
            if isinstance(message, dict) and "method" not in message and message.get(
                "id"
            ) == requestID:
                return message  # type: ignore[no-any-return]
            self.backlog.append(message)

    async def roundTrip(self, method: str, params: Any = None) -> dict[str, Any]:
        """
        Send a request and return its whole response.
        """
        message = self.request(method, params)
        await self.send(message)
        response = await self.answer(message["id"])
        if set(response) - {"jsonrpc", "id", "result", "error"} or response["jsonrpc"] != "2.0":
            raise AssertionError(f"not a JSON-RPC 2.0 response: {response!r}")
        return response

    async def call(self, method: str, params: Any = None) -> Any:
        """
        The result of a request, or L{RPCFailed}.
        """
        response = await self.roundTrip(method, params)
        if "error" in response:
            raise RPCFailed(response["error"])
        return response["result"]

    async def error(self, method: str, params: Any = None) -> RPCFailed:
        """
        The error a request is answered with (fails if it succeeds).
        """
        response = await self.roundTrip(method, params)
        if "error" not in response:
            raise AssertionError(f"{method} succeeded: {response!r}")
        return RPCFailed(response["error"])

    async def notifications(
        self, method: str, count: int, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """
        The params of the next C{count} notifications named C{method};
        anything else stays in the backlog.
        """
        found: list[dict[str, Any]] = []
        kept: list[Any] = []
        for message in self.backlog:
            if len(found) < count and isinstance(message, dict) and message.get(
                "method"
            ) == method and "id" not in message:
                found.append(message["params"])
            else:
                kept.append(message)
        self.backlog = kept
        while len(found) < count:
            message = json.loads(await self._inThread(self.connection.recv, timeout))
            if isinstance(message, dict) and message.get("method") == method and (
                "id" not in message
            ):
                found.append(message["params"])
            else:
                self.backlog.append(message)
        return found

    async def collect(self, stop: Any, timeout: float = 10.0) -> list[Any]:
        """
        Read messages (in the worker thread, without a reactor round trip
        each) up to and including the first for which C{stop(message)}
        holds.
        """
        def read() -> list[Any]:
            messages: list[Any] = []
            while not messages or not stop(messages[-1]):
                messages.append(json.loads(self.connection.recv(timeout)))
            return messages

        backlog, self.backlog = self.backlog, []
        for index, message in enumerate(backlog):
            if stop(message):
                self.backlog = backlog[index + 1:]
                return backlog[:index + 1]
        return backlog + await self._inThread(read)

    async def closeFrame(self, timeout: float = 5.0) -> tuple[int, str] | None:
        """
        Read until the server closes the socket; the code and reason of its
        close frame (L{None} if it sent none).
        """
        def drain() -> tuple[int, str] | None:
            try:
                while True:
                    self.connection.recv(timeout)
            except ConnectionClosed as e:
                return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else None

        return await self._inThread(drain)

    async def close(self) -> None:
        """
        Close the socket and join the worker thread.
        """
        if self.closed:
            return
        self.closed = True
        try:
            await self._inThread(self.connection.close)
        finally:
            self.pool.stop()


def _connect(
    url: str, origin: str | None, maxQueue: int, receiveBuffer: int | None
) -> ClientConnection:
    sock = None
    if receiveBuffer is not None:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        sock.settimeout(10)
        sock.connect((parts.hostname, parts.port))
    connection = connect(
        url,
        sock=sock,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        max_queue=maxQueue,
        open_timeout=10,
        close_timeout=5,
        max_size=None,
    )
    # Enter its context, as websockets asks: closing it is WSClient.close's job.
    return connection.__enter__()


async def waitFor(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """
    Let the reactor run until C{predicate()} holds.
    """
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


# -- in-process services ------------------------------------------------------


class GatewayHarness:
    """
    Start brokers and gateways on loopback, port 0, for one test (a mixin
    for L{TestCase}; everything started is stopped by the test's cleanups).
    """

    async def startBroker(self, service: Any, **kwargs: Any) -> int:
        """
        Serve C{service} (a root, realm or portal) with L{BrokerService};
        the port number.
        """
        broker = BrokerService(reactor, LOOPBACK, service, **kwargs)
        broker.startService()
        self.addCleanup(broker.stopService)  # type: ignore[attr-defined]
        port = await broker.whenListening()
        self.brokerService = broker
        return port.getHost().port  # type: ignore[attr-defined]

    async def startGateway(self, brokerPort: int, **options: Any) -> GatewayService:
        """
        A gateway in front of the broker on C{brokerPort}; sets C{httpURL}
        and C{wsURL}.
        """
        options.setdefault("staticDir", None)
        gateway = GatewayService(
            reactor,
            LOOPBACK,
            GatewayOptions(broker=f"tcp:host=127.0.0.1:port={brokerPort}", **options),
        )
        gateway.startService()
        self.addCleanup(gateway.stopService)  # type: ignore[attr-defined]
        port = await gateway.whenListening()
        self.gatewayPort: int = port.getHost().port  # type: ignore[attr-defined]
        self.httpURL = f"http://127.0.0.1:{self.gatewayPort}"
        self.wsURL = f"ws://127.0.0.1:{self.gatewayPort}/ws"
        self.gateway = gateway
        return gateway

    async def startDemo(self, **options: Any) -> DemoRealm:
        """
        The demo service and a gateway in front of it.
        """
        self.realm = DemoRealm(clock=reactor)
        await self.startGateway(await self.startBroker(self.realm), **options)
        return self.realm

    async def socket(self, query: str = "", **kwargs: Any) -> WSClient:
        """
        A new WebSocket client of the current gateway (at C{/ws} and
        C{query}).
        """
        return await WSClient.open(self, self.wsURL + query, **kwargs)  # type: ignore[arg-type]

    async def loggedIn(self, params: dict[str, Any] | None = None) -> WSClient:
        """
        A new WebSocket client, logged in (anonymously by default).
        """
        client = await self.socket()
        await client.call("rpc.login", params or {"anonymous": True})
        return client

    def restClient(self) -> GatewayClient:
        """
        A REST client of the current gateway, with its own connection pool
        (closed by the test's cleanups).
        """
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)  # type: ignore[attr-defined]
        return GatewayClient(self.httpURL, HTTPClient(Agent(reactor, pool=pool)))

    async def mirrorReaches(self, token: str, handle: str, seq: int) -> None:
        """
        Wait until the gateway's mirror of a session's cache is at C{seq}
        (changes made on the broker reach it asynchronously).
        """
        mirror = self.gateway.table.get(token).mirror(handle)
        await waitFor(lambda: mirror.seq >= seq, what=f"the gateway's mirror at seq {seq}")
        if mirror.seq != seq:
            raise AssertionError(f"the gateway's mirror went past {seq} to {mirror.seq}")

    async def serverClosesSettled(self) -> None:
        """
        Wait for the closing-handshake timers of sockets the gateway closed:
        autobahn leaves them running after the connection is gone (they
        fire within a second and do nothing), which trial would report as a
        dirty reactor.
        """
        timer = self.gateway.api.webSocketFactory._batched_timer
        await waitFor(lambda: not any(
            getattr(call.func, "__self__", None) is timer for call in reactor.getDelayedCalls()
        ), what="autobahn's timers")

    def serverSockets(self) -> list[Any]:
        """
        The gateway's side of the open WebSockets.
        """
        return list(self.gateway.api.webSocketFactory.sockets)


class DemoTests(GatewayHarness, TestCase):
    """
    The demo service through the WebSocket.
    """

    async def test_passwordLogin(self) -> None:
        """
        C{rpc.login} with a password answers a token, the idle lifetime and
        the perspective's methods; calls then reach that user's perspective.
        """
        await self.startDemo()
        client = await self.socket()
        login = await client.call("rpc.login", ALICE)
        self.assertEqual(set(login), {"token", "expires_in", "methods"})
        self.assertEqual(login["expires_in"], 900.0)
        self.assertIn("getMessage", {m["name"] for m in login["methods"]})
        self.assertEqual(await client.call("getMessage"), "Hello, alice!")
        self.assertEqual(await client.call("add", [5, 3]), 8)
        self.assertEqual(await client.call("add", {"a": 2, "b": 40}), 42)

    async def test_anonymousLogin(self) -> None:
        """
        C{{"anonymous": true}} logs in as a guest: guest methods work, the
        users' methods are not offered.
        """
        await self.startDemo()
        client = await self.socket()
        login = await client.call("rpc.login", {"anonymous": True})
        names = {m["name"] for m in login["methods"]}
        self.assertIn("add", names)
        self.assertNotIn("addTask", names)
        self.assertEqual(await client.call("whoami"), "guest")
        error = await client.error("addTask", ["nope"])
        self.assertEqual(error.code, -32601)

    async def test_joinRESTSession(self) -> None:
        """
        C{{"token": T}} joins a session opened over REST: the socket acts as
        that user and gets the same token back; handles are shared.
        """
        await self.startDemo()
        rest = self.restClient()
        await rest.login("bob", "secret")
        self.addCleanup(rest.logout)
        counter = await rest.call("counter")
        await counter.call("increment", 3)
        client = await self.socket()
        login = await client.call("rpc.login", {"token": rest.token})
        self.assertEqual(login["token"], rest.token)
        self.assertEqual(await client.call("getMessage"), "Hello, bob!")
        self.assertEqual(
            await client.call("rpc.call", {"ref": counter.handle, "method": "value"}), 3
        )

    async def test_joinByQuery(self) -> None:
        """
        C{/ws?token=T} joins the session at once, without C{rpc.login}; an
        unknown token is told with C{rpc.session} and the socket stays
        usable before login.
        """
        await self.startDemo()
        rest = self.restClient()
        await rest.login("bob", "secret")
        self.addCleanup(rest.logout)
        joined = await self.socket(f"?token={rest.token}")
        self.assertEqual(await joined.call("getMessage"), "Hello, bob!")
        stranger = await self.socket("?token=gw-nope.nope")
        [notice] = await stranger.notifications("rpc.session", 1)
        self.assertEqual(notice, {"state": "ended", "reason": "unknown token"})
        self.assertEqual((await stranger.call("rpc.describe"))["kind"], "login")

    async def test_badLogins(self) -> None:
        """
        A wrong password, an unknown token and a call needing a session
        before login are answered with -32001; the socket stays usable.
        """
        await self.startDemo()
        client = await self.socket()
        wrong = await client.error("rpc.login", {"username": "alice", "password": "nope"})
        self.assertEqual((wrong.code, wrong.data["type"]), (-32001, "unauthorized"))
        unknown = await client.error("rpc.login", {"token": "gw-nothing.nothing"})
        self.assertEqual((unknown.code, unknown.data["code"]), (-32001, "bad_token"))
        for method, params in [
            ("rpc.logout", None),
            ("rpc.call", {"ref": "r1", "method": "value"}),
            ("rpc.subscribe", {"cache": "c1"}),
            ("rpc.release", {"ref": "r1"}),
        ]:
            error = await client.error(method, params)
            self.assertEqual((error.code, error.data["code"]), (-32001, "no_session"), method)
        await client.call("rpc.login", ALICE)
        self.assertEqual(await client.call("whoami"), "alice")

    async def test_logout(self) -> None:
        """
        C{rpc.logout} ends the session: its token no longer logs in and the
        broker runs the avatar's logout.
        """
        realm = await self.startDemo()
        client = await self.socket()
        token = (await client.call("rpc.login", ALICE))["token"]
        self.assertEqual(realm.sessions, 1)
        self.assertIsNone(await client.call("rpc.logout"))
        await waitFor(lambda: realm.sessions == 0, what="the avatar's logout")
        error = await client.error("rpc.login", {"token": token})
        self.assertEqual((error.code, error.data["code"]), (-32001, "session_ended"))

    async def test_describe(self) -> None:
        """
        C{rpc.describe} describes the root before login (the broker's login
        object) and the perspective after.
        """
        await self.startDemo()
        client = await self.socket()
        root = await client.call("rpc.describe")
        self.assertEqual(root["kind"], "login")
        await client.call("rpc.login", ALICE)
        described = await client.call("rpc.describe")
        self.assertEqual(described["kind"], "perspective")
        methods = {m["name"]: m for m in described["methods"]}
        self.assertEqual([p["name"] for p in methods["store"]["params"]], ["key", "data"])

    async def test_batch(self) -> None:
        """
        A batch is answered by one array holding a response per request (in
        any order), none for notifications; a batch of notifications only
        is answered by nothing.
        """
        await self.startDemo()
        client = await self.loggedIn()
        await client.send([
            {"jsonrpc": "2.0", "id": "a", "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "add", "params": [5, 5]},
            {"jsonrpc": "2.0", "id": "b", "method": "multiply", "params": [3, 4]},
            {"jsonrpc": "2.0", "id": "c", "method": "divide", "params": [1, 0]},
            {"not": "a request"},
        ])
        answers = await client.receive()
        self.assertIsInstance(answers, list)
        byID = {answer["id"]: answer for answer in answers}
        self.assertEqual(set(byID), {"a", "b", "c", None})
        self.assertEqual((byID["a"]["result"], byID["b"]["result"]), (3, 12))
        self.assertEqual(byID["c"]["error"]["code"], -32011)
        self.assertEqual(byID[None]["error"]["code"], -32600)
        self.flushLoggedErrors(ValueError)
        await client.send([{"jsonrpc": "2.0", "method": "add", "params": [1, 1]}] * 2)
        self.assertEqual(await client.call("add", [2, 2]), 4)
        self.assertEqual(client.backlog, [])

    async def test_refs(self) -> None:
        """
        A reference comes back as a handle: C{rpc.call} calls it with args
        and kwargs, C{rpc.release} drops it, after which it is unknown
        (-32003).
        """
        await self.startDemo()
        client = await self.loggedIn()
        ref = await client.call("counter")
        self.assertEqual(set(ref), {"$ref"})
        handle = ref["$ref"]
        self.assertEqual(await client.call("counter"), ref)
        call = {"ref": handle, "method": "increment"}
        self.assertEqual(await client.call("rpc.call", {**call, "args": [5]}), 5)
        self.assertEqual(await client.call("rpc.call", {**call, "kwargs": {"by": 2}}), 7)
        self.assertEqual(await client.call("rpc.call", {"ref": handle, "method": "value"}), 7)
        self.assertIsNone(await client.call("rpc.release", {"ref": handle}))
        gone = await client.error("rpc.call", {"ref": handle, "method": "value"})
        self.assertEqual((gone.code, gone.data["code"]), (-32003, "unknown_handle"))
        again = await client.error("rpc.release", {"ref": handle})
        self.assertEqual(again.code, -32003)

    async def test_copyables(self) -> None:
        """
        A C{$copy} of C{pb.demo.SharedData} is stored as a real SharedData
        on the broker and comes back as the same C{$copy}.
        """
        await self.startDemo()
        client = await self.loggedIn(ALICE)
        copy = {"$copy": "pb.demo.SharedData",
                "state": {"name": "test_data", "value": {"count": 42, "tags": ["a"]}}}
        self.assertEqual(await client.call("store", ["item1", copy]), "Stored item1 for alice")
        self.assertEqual(await client.call("retrieve", ["item1"]), copy)
        self.assertEqual(await client.call("list_keys"), ["item1"])

    async def test_everyErrorOfTheDemo(self) -> None:
        """
        Each kind of bad message is answered with its JSON-RPC error code
        and C{data} (type, message, code, remote type), and the same socket
        still answers a good call after each one.
        """
        await self.startDemo()
        client = await self.loggedIn(ALICE)
        counter = (await client.call("counter"))["$ref"]
        board = (await client.call("board"))["$cache"]
        cases: list[tuple[str, Any, int, dict[str, Any]]] = [
            ("binary frame", b'{"jsonrpc": "2.0", "id": 1, "method": "add"}', -32600, {}),
            ("bad JSON", '{"jsonrpc": "2.0", "id": 1,', -32700, {}),
            ("no jsonrpc field", {"id": 1, "method": "add", "params": [1, 2]}, -32600, {}),
            ("wrong version", {"jsonrpc": "1.0", "id": 1, "method": "add"}, -32600, {}),
            ("not an object", 42, -32600, {}),
            ("empty batch", [], -32600, {}),
            ("id is a boolean", {"jsonrpc": "2.0", "id": True, "method": "add"}, -32600, {}),
            ("method not a string", {"jsonrpc": "2.0", "id": 1, "method": 7}, -32600, {}),
            ("unknown rpc method", {"jsonrpc": "2.0", "id": 1, "method": "rpc.nope"},
             -32601, {}),
            ("not a method name", {"jsonrpc": "2.0", "id": 1, "method": "get Message"},
             -32601, {}),
            ("no such remote method", {"jsonrpc": "2.0", "id": 1, "method": "nope"}, -32601,
             {"type": "not_found", "code": "no_such_method"}),
            ("params a string", {"jsonrpc": "2.0", "id": 1, "method": "add", "params": "1"},
             -32602, {}),
            ("rpc.call without method",
             {"jsonrpc": "2.0", "id": 1, "method": "rpc.call", "params": {"ref": counter}},
             -32602, {}),
            ("rpc.call with args not a list",
             {"jsonrpc": "2.0", "id": 1, "method": "rpc.call",
              "params": {"ref": counter, "method": "increment", "args": 5}},
             -32602, {"type": "bad_request"}),
            ("rpc.release without a handle",
             {"jsonrpc": "2.0", "id": 1, "method": "rpc.release", "params": {}}, -32602, {}),
            ("rpc.subscribe since not a number",
             {"jsonrpc": "2.0", "id": 1, "method": "rpc.subscribe",
              "params": {"cache": board, "since": "x"}}, -32602, {}),
            ("rpc.subscribe to an unknown cache",
             {"jsonrpc": "2.0", "id": 1, "method": "rpc.subscribe",
              "params": {"cache": "c-nope"}}, -32003, {"code": "unknown_handle"}),
            ("wrong arguments", {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1]},
             -32602, {"type": "bad_request", "code": "bad_arguments"}),
            ("unknown tag", {"jsonrpc": "2.0", "id": 1, "method": "add",
                             "params": [{"$nope": 1}, 2]}, -32602, {"code": "unknown_tag"}),
            ("unknown handle", {"jsonrpc": "2.0", "id": 1, "method": "rpc.call",
                                "params": {"ref": "r-nope", "method": "value"}},
             -32003, {"type": "not_found", "code": "unknown_handle"}),
            ("remote exception", {"jsonrpc": "2.0", "id": 1, "method": "divide",
                                  "params": [1, 0]},
             -32011, {"type": "remote_exception", "code": "builtins.ValueError",
                      "remote_type": "builtins.ValueError", "message": "Division by zero"}),
            ("remote pb.Error", {"jsonrpc": "2.0", "id": 1, "method": "addTask",
                                 "params": [""]},
             -32010, {"type": "remote_error", "remote_type": "pb.errors.Error",
                      "message": "a task needs some text"}),
            ("argument too large for PB", {"jsonrpc": "2.0", "id": 1, "method": "add",
                                           "params": ["x" * 700_000, "y"]},
             -32004, {"type": "payload_too_large"}),
        ]
        for what, message, code, data in cases:
            if isinstance(message, bytes | str):
                await client.sendRaw(message)
            else:
                await client.send(message)
            response = await client.receive()
            self.assertIsInstance(response, dict, what)
            self.assertEqual(response["jsonrpc"], "2.0", what)
            self.assertNotIn("result", response, what)
            self.assertEqual(response["error"]["code"], code, (what, response))
            self.assertIsInstance(response["error"]["message"], str, what)
            if code not in (-32700, -32600):
                self.assertEqual(response["id"], 1, what)
            for key, value in data.items():
                self.assertEqual(response["error"]["data"][key], value, (what, response))
            if "traceback" in response["error"].get("data", {}):
                self.fail(f"{what}: a traceback left the gateway")
            self.assertEqual(await client.call("add", [1, 2]), 3, what)
        self.flushLoggedErrors(ValueError)
        self.flushLoggedErrors(pb.Error)

    async def test_rootBeforeLogin(self) -> None:
        """
        Before login, calls go to the broker's root object; the demo's root
        is its login (a portal), so every call is forbidden there (-32002,
        use rpc.login), as over REST.
        """
        await self.startDemo()
        client = await self.socket()
        for method in ("login", "loginAnonymous", "add"):
            error = await client.error(method, ["alice"])
            self.assertEqual((error.code, error.data["code"]), (-32002, "login_root"), method)
        await client.call("rpc.login", {"anonymous": True})
        self.assertEqual(await client.call("add", [1, 2]), 3)

    async def test_liveUpdatesInOrder(self) -> None:
        """
        A cache in a result is subscribed to at once: five changes made
        through another session arrive as C{rpc.update} notifications with
        sequence numbers 1..5, in order, carrying the delta.
        """
        await self.startDemo()
        watcher = await self.loggedIn()
        board = await watcher.call("board")
        self.assertEqual(
            (board["type"], board["state"], board["seq"]), ("pb.live.LiveDict", {}, 0)
        )
        writer = await self.loggedIn(ALICE)
        taskIDs = [await writer.call("addTask", [f"task {n}"]) for n in range(5)]
        updates = await watcher.notifications("rpc.update", 5)
        self.assertEqual([u["seq"] for u in updates], [1, 2, 3, 4, 5])
        self.assertEqual({u["cache"] for u in updates}, {board["$cache"]})
        self.assertEqual({u["method"] for u in updates}, {"observe_set"})
        self.assertEqual(
            [u["args"] for u in updates],
            [[n + 1, taskIDs[n], {"text": f"task {n}", "done": False, "by": "alice"}]
             for n in range(5)],
        )

    async def test_releaseCache(self) -> None:
        """
        After C{rpc.release} of a cache, no more updates arrive for it and
        the handle is unknown.
        """
        realm = await self.startDemo()
        client = await self.loggedIn()
        handle = (await client.call("board"))["$cache"]
        self.assertIsNone(await client.call("rpc.release", {"cache": handle}))
        realm.addTask("unseen", "test")
        self.assertEqual(await client.call("add", [1, 2]), 3)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(await client.call("add", [1, 2]), 3)
        self.assertEqual(client.backlog, [])
        error = await client.error("rpc.subscribe", {"cache": handle})
        self.assertEqual(error.code, -32003)

    async def test_releaseSharedCache(self) -> None:
        """
        A socket that releases a cache gets no more updates for it (nor do
        other sockets of its session), even while another session still
        watches the same live object; that session keeps getting them.
        """
        realm = await self.startDemo()
        releasing = await self.socket()
        token = (await releasing.call("rpc.login", {"anonymous": True}))["token"]
        sameSession = await self.socket()
        await sameSession.call("rpc.login", {"token": token})
        watching = await self.loggedIn()
        handle = (await releasing.call("board"))["$cache"]
        await sameSession.call("rpc.subscribe", {"cache": handle, "since": 0})
        other = (await watching.call("board"))["$cache"]
        await releasing.call("rpc.release", {"cache": handle})
        realm.addTask("after the release", "test")
        [update] = await watching.notifications("rpc.update", 1)
        self.assertEqual((update["cache"], update["seq"]), (other, 1))
        for client in (releasing, sameSession):
            self.assertEqual(await client.call("add", [1, 2]), 3)
            self.assertEqual(client.backlog, [])

    async def resumeAfterMissing(self, missed: int) -> tuple[WSClient, dict[str, Any], str]:
        """
        Watch the board on one socket (seeing one change), close it, make
        C{missed} changes, and rejoin the session on a new socket with
        C{rpc.subscribe since=1}: the new socket and the subscribe result.
        """
        realm = self.realm
        first = await self.socket()
        token = (await first.call("rpc.login", {"anonymous": True}))["token"]
        handle = (await first.call("board"))["$cache"]
        realm.addTask("seen", "test")
        [seen] = await first.notifications("rpc.update", 1)
        self.assertEqual(seen["seq"], 1)
        await first.close()
        for n in range(missed):
            realm.addTask(f"missed {n}", "test")
        second = await self.socket()
        await second.call("rpc.login", {"token": token})
        await self.mirrorReaches(token, handle, 1 + missed)
        result = await second.call("rpc.subscribe", {"cache": handle, "since": 1})
        return second, result, handle

    async def test_resumeReplays(self) -> None:
        """
        Reconnecting with the token and C{rpc.subscribe since=N} replays the
        missed updates (N+1 onwards, in order, before the answer), without a
        snapshot; live updates then continue on the new socket.
        """
        realm = await self.startDemo()
        client, result, handle = await self.resumeAfterMissing(3)
        self.assertEqual(result, {"cache": handle, "seq": 4, "replayed": 3, "snapshot": False})
        self.assertEqual(
            [(m["method"], m["params"]["seq"]) for m in client.backlog],
            [("rpc.update", 2), ("rpc.update", 3), ("rpc.update", 4)],
        )
        self.assertEqual(client.backlog[0]["params"]["args"][2]["text"], "missed 0")
        client.backlog.clear()
        realm.addTask("live", "test")
        [live] = await client.notifications("rpc.update", 1)
        self.assertEqual(live["seq"], 5)

    async def test_resumeSnapshot(self) -> None:
        """
        When the missed updates are no longer buffered (C{updateBuffer=2},
        four missed), C{rpc.subscribe} sends one C{rpc.snapshot} of the
        current state instead of updates.
        """
        await self.startDemo(updateBuffer=2)
        client, result, handle = await self.resumeAfterMissing(4)
        self.assertEqual(result, {"cache": handle, "seq": 5, "replayed": 0, "snapshot": True})
        [snapshot] = [m["params"] for m in client.backlog]
        self.assertEqual(client.backlog[0]["method"], "rpc.snapshot")
        self.assertEqual((snapshot["$cache"], snapshot["seq"]), (handle, 5))
        self.assertEqual(snapshot["type"], "pb.live.LiveDict")
        self.assertEqual(
            sorted(task["text"] for task in snapshot["state"].values()),
            ["missed 0", "missed 1", "missed 2", "missed 3", "seen"],
        )

    async def test_subscribeWithoutSince(self) -> None:
        """
        C{rpc.subscribe} without C{since} answers with a snapshot; with the
        current seq it replays nothing.
        """
        await self.startDemo()
        client = await self.loggedIn()
        handle = (await client.call("board"))["$cache"]
        result = await client.call("rpc.subscribe", {"cache": handle})
        self.assertEqual(result["snapshot"], True)
        [snapshot] = await client.notifications("rpc.snapshot", 1)
        self.assertEqual((snapshot["seq"], snapshot["state"]), (0, {}))
        current = await client.call("rpc.subscribe", {"cache": handle, "since": 0})
        self.assertEqual((current["replayed"], current["snapshot"]), (0, False))
        self.assertEqual(client.backlog, [])

    async def test_sessionEndsByRESTLogout(self) -> None:
        """
        A socket that joined a REST session is told with C{rpc.session}
        when the session is logged out over REST; after that it has no
        session.
        """
        await self.startDemo()
        rest = self.restClient()
        await rest.login("alice", "password")
        client = await self.socket()
        await client.call("rpc.login", {"token": rest.token})
        await rest.logout()
        [notice] = await client.notifications("rpc.session", 1)
        self.assertEqual(notice, {"state": "ended", "reason": "logged out"})
        error = await client.error("rpc.call", {"ref": "r", "method": "value"})
        self.assertEqual(error.code, -32001)

    async def test_sessionEndsWhenBrokerIsLost(self) -> None:
        """
        When the broker goes away, every socket of the session gets
        C{rpc.session} with the reason, and a root call then reports the
        broker unavailable (-32020).
        """
        await self.startDemo()
        client = await self.socket()
        token = (await client.call("rpc.login", ALICE))["token"]
        other = await self.socket()
        await other.call("rpc.login", {"token": token})
        await self.brokerService.stopService()
        for socket_ in (client, other):
            [notice] = await socket_.notifications("rpc.session", 1)
            self.assertEqual(notice, {"state": "ended", "reason": "broker connection lost"})
        error = await client.error("add", [1, 2])
        self.assertEqual(error.code, -32020)


# -- a service of our own, for timing ------------------------------------------


class TimingAvatar(pb.Avatar):
    """
    Methods that take their time, never answer, or answer what JSON cannot
    carry.
    """

    def perspective_add(self, a: Any, b: Any) -> Any:
        return a + b

    async def perspective_slow(self, delay: float) -> float:
        await deferLater(reactor, delay, lambda: None)
        return delay

    def perspective_hang(self) -> Deferred[None]:
        return Deferred()

    def perspective_cycle(self) -> list[Any]:
        cycle: list[Any] = []
        cycle.append(cycle)
        return cycle


class TimingRealm(pb.Realm):
    avatarFactory = TimingAvatar


class TimingTests(GatewayHarness, TestCase):
    """
    Pipelining and the limits that need a slow or silent method.
    """

    async def startTiming(self, **options: Any) -> WSClient:
        await self.startGateway(await self.startBroker(TimingRealm(), anonymous=True), **options)
        return await self.loggedIn()

    async def test_pipelinedOutOfOrder(self) -> None:
        """
        Requests run concurrently and are answered as they complete: a slow
        call sent first is answered after a quick one sent second.
        """
        client = await self.startTiming()
        await client.send({"jsonrpc": "2.0", "id": 1, "method": "slow", "params": [0.3]})
        await client.send({"jsonrpc": "2.0", "id": 2, "method": "add", "params": [1, 2]})
        first = await client.receive()
        second = await client.receive()
        self.assertEqual((first["id"], first["result"]), (2, 3))
        self.assertEqual((second["id"], second["result"]), (1, 0.3))

    async def test_tooManyInFlight(self) -> None:
        """
        With C{maxInFlight=2}, a third request while two are unanswered is
        refused at once with -32005; the two are still answered and then
        the socket takes requests again.
        """
        client = await self.startTiming(maxInFlight=2)
        for requestID in (1, 2):
            await client.send(
                {"jsonrpc": "2.0", "id": requestID, "method": "slow", "params": [0.3]}
            )
        await client.send({"jsonrpc": "2.0", "id": 3, "method": "add", "params": [1, 2]})
        refused = await client.receive()
        self.assertEqual(refused["id"], 3)
        self.assertEqual(refused["error"]["code"], -32005)
        self.assertEqual(refused["error"]["data"]["type"], "too_many_requests")
        self.assertEqual({(await client.receive())["id"] for _ in range(2)}, {1, 2})
        self.assertEqual(await client.call("add", [1, 2]), 3)

    async def test_timeout(self) -> None:
        """
        With C{callTimeout=0.3} a method that never answers is answered with
        -32021 after the timeout; the socket still answers.
        """
        client = await self.startTiming(callTimeout=0.3)
        error = await client.error("hang")
        self.assertEqual((error.code, error.data["type"]), (-32021, "timeout"))
        self.assertEqual(await client.call("add", [1, 2]), 3)

    async def test_unmappableResult(self) -> None:
        """
        A result JSON cannot carry (a list containing itself) is answered
        with -32022; the socket still answers.
        """
        client = await self.startTiming()
        error = await client.error("cycle")
        self.assertEqual((error.code, error.data["type"]), (-32022, "unmappable_result"))
        self.assertEqual(await client.call("add", [1, 2]), 3)


class BrokerUnavailableTests(GatewayHarness, TestCase):
    """
    A gateway whose broker does not listen.
    """

    async def test_brokerUnavailable(self) -> None:
        """
        A root call and a login are answered with -32020 when nothing
        listens at the broker's address; the socket stays open and answers
        again.
        """
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        await self.startGateway(port)
        client = await self.socket()
        for method, params in [("add", [1, 2]), ("rpc.login", {"anonymous": True})]:
            error = await client.error(method, params)
            self.assertEqual((error.code, error.data["type"]), (-32020, "broker_unavailable"))
        error = await client.error("rpc.nope")
        self.assertEqual(error.code, -32601)


class ConnectionPolicyTests(GatewayHarness, TestCase):
    """
    Who may open a socket, and what closes one.
    """

    async def assertRefused(self, origin: str, status: int = 403) -> None:
        with self.assertRaises(InvalidStatus) as refused:
            await self.socket(origin=origin)
        self.assertEqual(refused.exception.response.status_code, status, origin)

    async def test_originDefaultIsSameOrigin(self) -> None:
        """
        By default a page from another origin (or the opaque C{null}
        origin) is refused with HTTP 403, one from the gateway's own origin
        and a client sending no Origin (not a browser) are accepted.
        """
        await self.startDemo()
        await self.assertRefused("http://evil.example")
        await self.assertRefused(f"http://evil.example:{self.gatewayPort}")
        # Autobahn itself refuses the opaque origin, before the gateway's check.
        await self.assertRefused("null", 400)
        await self.assertRefused("http://127.0.0.1")
        await self.assertRefused(f"http://localhost:{self.gatewayPort}")
        same = await self.socket(origin=self.httpURL)
        await same.call("rpc.login", {"anonymous": True})
        self.assertEqual(await same.call("add", [1, 2]), 3)
        noOrigin = await self.socket()
        self.assertEqual((await noOrigin.call("rpc.describe"))["kind"], "login")

    async def test_allowedOrigins(self) -> None:
        """
        C{allowedOrigins} lets the listed origins in and still refuses
        others.
        """
        await self.startDemo(allowedOrigins=("http://ok.example",))
        ok = await self.socket(origin="http://ok.example")
        self.assertEqual((await ok.call("rpc.describe"))["kind"], "login")
        await self.assertRefused("http://evil.example")

    async def test_oversizedMessage(self) -> None:
        """
        With C{maxMessageSize=1024}, a message under the limit is answered
        and a larger one closes the socket with code 1009.
        """
        await self.startDemo(maxMessageSize=1024)
        client = await self.loggedIn()
        self.assertEqual(await client.call("add", ["x" * 900, "y"]), "x" * 900 + "y")
        await client.send({"jsonrpc": "2.0", "id": 1, "method": "add",
                           "params": ["x" * 2000, "y"]})
        code, reason = await client.closeFrame() or (None, "")
        self.assertEqual(code, 1009, reason)
        self.assertIn("1024", reason)
        await self.serverClosesSettled()



    async def test_invalidUTF8(self) -> None:
        """
        A text frame that is not UTF-8 violates the WebSocket protocol: the
        socket is closed with code 1007 (not silently dropped).
        """
        await self.startDemo()
        client = await self.loggedIn()
        await client.sendRaw(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', text=True)
        code, reason = await client.closeFrame() or (None, "")
        self.assertEqual(code, 1007, reason)
        await self.serverClosesSettled()

class ProtocolLoggingTests(SynchronousTestCase):
    """
    The cost of logging on the gateway's sockets.
    """

    def test_autobahnDebugLoggingStaysOff(self) -> None:
        """
        The gateway's own logger does not shadow autobahn's C{log}: autobahn
        logs every frame with C{self.log.debug}, a no-op on its txaio logger
        at the default level, but an event built and filtered per frame on a
        Twisted L{Logger} (about a tenth of the gateway's CPU per call).
        """
        from autobahn.twisted.websocket import WebSocketServerProtocol

        from gateway.websocket import GatewayWebSocketProtocol

        self.assertIs(GatewayWebSocketProtocol.log, WebSocketServerProtocol.log)


class BoundedSenderTests(SynchronousTestCase):
    """
    The slow-consumer policy of L{BoundedSender}, in memory.
    """

    def setUp(self) -> None:
        self.written: list[bytes] = []
        self.dropped: list[str] = []
        self.resynced: list[set[str]] = []
        self.sender = BoundedSender(
            self.written.append, self.dropped.append, self.resynced.append, 10, 20
        )

    def test_writesAtOnceUnlessPaused(self) -> None:
        """
        Messages are written at once while the client keeps up, queued in
        order while it is paused, and flushed when it resumes.
        """
        self.sender.send(b"a")
        self.assertEqual(self.written, [b"a"])
        self.sender.pauseProducing()
        self.sender.send(b"b")
        self.sender.sendUpdate("c1", b"u1")
        self.assertEqual((self.written, self.sender.queuedBytes), ([b"a"], 3))
        self.sender.resumeProducing()
        self.assertEqual(self.written, [b"a", b"b", b"u1"])
        self.assertEqual(self.sender.queuedBytes, 0)
        self.assertEqual((self.dropped, self.resynced), ([], []))

    def test_softLimitResyncs(self) -> None:
        """
        Past the soft limit a cache's updates are dropped (only that
        cache's, and all of its later ones); once drained, the client gets
        one resync for it, after which its updates flow again.
        """
        self.sender.pauseProducing()
        self.sender.sendUpdate("c1", b"12345678")
        self.sender.sendUpdate("c1", b"abc")
        self.sender.sendUpdate("c2", b"x")
        self.sender.sendUpdate("c1", b"y")
        self.assertEqual(self.sender.needsResync, {"c1"})
        self.sender.send(b"answer")
        self.sender.resumeProducing()
        self.assertEqual(self.written, [b"12345678", b"x", b"answer"])
        self.assertEqual(self.resynced, [{"c1"}])
        self.sender.sendUpdate("c1", b"z")
        self.assertEqual(self.written[-1], b"z")
        self.assertEqual(self.dropped, [])

    def test_hardLimitDisconnects(self) -> None:
        """
        Past the hard limit the client is dropped as a slow consumer, its
        queue freed, and nothing more is written.
        """
        self.sender.pauseProducing()
        self.sender.send(b"x" * 15)
        self.assertEqual(self.dropped, [])
        self.sender.send(b"y" * 6)
        self.assertEqual(self.dropped, ["slow consumer: send buffer overflow"])
        self.assertEqual(self.sender.queuedBytes, 0)
        self.sender.send(b"late")
        self.sender.sendUpdate("c1", b"late")
        self.sender.resumeProducing()
        self.assertEqual(self.written, [])
        self.assertEqual(len(self.dropped), 1)

    def test_pausedAgainWhileFlushing(self) -> None:
        """
        If the transport pauses again while the queue is flushed, the rest
        stays queued (in order) and no resync is sent yet.
        """
        def write(data: bytes) -> None:
            self.written.append(data)
            if data == b"b":
                self.sender.pauseProducing()

        self.sender._write = write
        self.sender.pauseProducing()
        for data in (b"a", b"b", b"c"):
            self.sender.send(data)
        self.sender.sendUpdate("c1", b"0123456789")
        self.sender.resumeProducing()
        self.assertEqual(self.written, [b"a", b"b"])
        self.assertEqual(self.resynced, [])
        self.sender.resumeProducing()
        self.assertEqual(self.written, [b"a", b"b", b"c"])
        self.assertEqual(self.resynced, [{"c1"}])

    def test_stopProducing(self) -> None:
        """
        When the transport goes away the queue is freed and nothing more
        is written.
        """
        self.sender.pauseProducing()
        self.sender.send(b"queued")
        self.sender.stopProducing()
        self.sender.resumeProducing()
        self.sender.send(b"after")
        self.assertEqual((self.written, self.sender.queuedBytes), ([], 0))


class SlowConsumerTests(GatewayHarness, TestCase):
    """
    A client that stops reading while a watched cache changes fast, over a
    real socket: it gets a resync snapshot, or is closed with 1008.
    """

    async def stalledWatcher(self, **options: Any) -> tuple[WSClient, str, str, Any]:
        """
        A board watcher that reads nothing more (its client buffers one
        frame, its kernel a few KiB): the client, its token, the board's
        handle, and the gateway's side of its socket.
        """
        await self.startDemo(**options)
        client = await self.socket(maxQueue=1, receiveBuffer=4096)
        token = (await client.call("rpc.login", {"anonymous": True}))["token"]
        handle = (await client.call("board"))["$cache"]
        [server] = self.serverSockets()
        return client, token, handle, server

    async def flood(self, until: Any) -> int:
        """
        Change the board with large values until C{until()} holds; the
        number of changes.
        """
        count = 0
        while not until():
            if count > 3000:
                raise AssertionError("the gateway never stopped sending")
            for _ in range(20):
                count += 1
                self.realm.board.set("big", f"{count:06d}" + "x" * 8000)
            await deferLater(reactor, 0.005, lambda: None)
        return count

    async def test_resyncSnapshot(self) -> None:
        """
        Past the soft limit the watcher's board updates are dropped and the
        cache is marked for a resync: reading again, it gets contiguous
        updates, broken only by C{rpc.snapshot}s of the then current state,
        and rebuilds exactly the broker's board.
        """
        client, token, handle, server = await self.stalledWatcher(
            sendBufferSoft=64 * 1024, sendBufferHard=64 * 1024 * 1024
        )
        count = await self.flood(lambda: bool(server.sender.needsResync))
        self.realm.board.set("small", 1)
        final = count + 1
        await self.mirrorReaches(token, handle, final)
        messages = await client.collect(lambda m: m["params"]["seq"] == final)
        seq, state, snapshots = 0, {}, 0
        for message in messages:
            params = message["params"]
            if message["method"] == "rpc.snapshot":
                self.assertEqual(params["$cache"], handle)
                self.assertGreater(params["seq"], seq + 1, "a snapshot replacing nothing")
                seq, state, snapshots = params["seq"], params["state"], snapshots + 1
            else:
                self.assertEqual(message["method"], "rpc.update")
                self.assertEqual(params["seq"], seq + 1, "a gap in the updates")
                seq, state = params["seq"], applyDelta(state, params["method"], params["args"])
        self.assertGreaterEqual(snapshots, 1)
        self.assertLess(len(messages), final, "nothing was dropped")
        self.assertEqual(state, self.realm.board.snapshot())
        self.realm.board.set("small", 2)
        [live] = await client.notifications("rpc.update", 1)
        self.assertEqual((live["seq"], live["args"]), (final + 1, [final + 1, "small", 2]))

    async def test_hardLimitCloses(self) -> None:
        """
        With a soft limit above the hard one, queued updates reach the hard
        limit: the watcher is closed with code 1008 once it reads again.
        """
        client, _, _, server = await self.stalledWatcher(
            sendBufferSoft=64 * 1024 * 1024, sendBufferHard=64 * 1024
        )
        await self.flood(lambda: server.sender.closed)
        self.assertEqual(
            await client.closeFrame(), (1008, "slow consumer: send buffer overflow")
        )
        await waitFor(lambda: not self.serverSockets(), what="the socket's end")
        await self.serverClosesSettled()


# -- an unmodified Twisted PB server --------------------------------------------


class TwistedMath(twistedPB.Root):
    """
    The reference math service on Twisted's own PB.
    """

    def remote_add(self, a: Any, b: Any) -> Any:
        return a + b

    def remote_divide(self, a: Any, b: Any) -> Any:
        return a / b

    def remote_refuse(self) -> None:
        raise twistedPB.Error("refused, as expected")

    def remote_counter(self) -> twistedPB.Referenceable:
        return twistedPB.Referenceable()


class TwistedUser(twistedPB.Avatar):
    """
    A Twisted avatar.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def perspective_whoami(self) -> str:
        return self.name

    def perspective_divide(self, a: Any, b: Any) -> Any:
        return a / b


@implementer(IRealm)
class TwistedRealm:
    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Any:
        return twistedPB.IPerspective, TwistedUser(avatarId.decode()), lambda: None


class TwistedServerTests(GatewayHarness, TestCase):
    """
    The WebSocket in front of an unmodified C{twisted.spread.pb} server.
    """

    async def serveTwisted(self, root: Any) -> WSClient:
        port = reactor.listenTCP(0, twistedPB.PBServerFactory(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        await self.startGateway(port.getHost().port)
        return await self.socket()

    async def test_rootCalls(self) -> None:
        """
        Before any login, calls reach a Twisted root object: results,
        an exception (-32011), a C{pb.Error} (-32010), an unknown method
        (-32601) and a reference, which needs a session (-32022); the
        socket answers after each.
        """
        client = await self.serveTwisted(TwistedMath())
        self.assertEqual(await client.call("add", [5, 3]), 8)
        self.assertEqual(await client.call("add", {"a": "x", "b": "y"}), "xy")
        cases = [
            ("divide", [1, 0], -32011, "builtins.ZeroDivisionError"),
            ("refuse", [], -32010, "twisted.spread.pb.Error"),
            ("nope", [], -32601, "twisted.spread.flavors.NoSuchMethod"),
            ("counter", [], -32022, None),
        ]
        for method, params, code, remoteType in cases:
            error = await client.error(method, params)
            self.assertEqual(error.code, code, method)
            self.assertEqual(error.data.get("remote_type"), remoteType, method)
            self.assertEqual(await client.call("add", [1, 2]), 3)
        description = await client.call("rpc.describe")
        self.assertIsNone(description)
        self.flushLoggedErrors()

    async def test_portalLogin(self) -> None:
        """
        Password login to a Twisted portal gives the Twisted avatar; a wrong
        password is -32001 and calling the portal's login directly -32002.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(carol=b"pw")
        client = await self.serveTwisted(Portal(TwistedRealm(), [checker]))
        forbidden = await client.error("login", ["carol"])
        self.assertEqual(forbidden.code, -32002)
        wrong = await client.error("rpc.login", {"username": "carol", "password": "nope"})
        self.assertEqual(wrong.code, -32001)
        login = await client.call("rpc.login", {"username": "carol", "password": "pw"})
        self.assertIsNone(login["methods"])
        self.assertEqual(await client.call("whoami"), "carol")
        error = await client.error("divide", [1, 0])
        self.assertEqual((error.code, error.data["remote_type"]),
                         (-32011, "builtins.ZeroDivisionError"))
        # Twisted's Avatar raises a plain AttributeError for an unknown
        # method (not NoSuchMethod, as its Referenceable does): a remote
        # exception to the gateway.
        unknown = await client.error("nope")
        self.assertEqual((unknown.code, unknown.data["remote_type"]),
                         (-32011, "builtins.AttributeError"))
        self.assertEqual(await client.call("whoami"), "carol")
        self.flushLoggedErrors()


# -- every kind of client on one live object -----------------------------------


class EveryClientTests(GatewayHarness, TestCase):
    """
    A native Twisted PB client, a REST client and two WebSocket clients
    watch the same live object.
    """

    async def test_allSeeOneChange(self) -> None:
        """
        The demo board watched by Twisted (as bob), REST (as alice) and two
        anonymous WebSockets: a change made over REST, then one made by the
        Twisted client, reaches all four with the same sequence number.
        """
        twistedJelly.setUnjellyableForClass("pb.live.LiveDict", TwistedBoardMirror)
        self.addCleanup(twistedJelly.unjellyableRegistry.pop, b"pb.live.LiveDict", None)
        await self.startDemo()
        native = twistedPB.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.brokerService.port.getHost().port, native)
        self.addCleanup(native.disconnect)
        bob = await native.login(UsernamePassword(b"bob", b"secret"))
        nativeBoard = await bob.callRemote("board")
        self.assertIsInstance(nativeBoard, TwistedBoardMirror)
        rest = self.restClient()
        await rest.login("alice", "password")
        self.addCleanup(rest.logout)
        restBoard = await rest.call("board")
        sockets = [await self.loggedIn(), await self.loggedIn()]
        for client in sockets:
            self.assertEqual((await client.call("board"))["seq"], 0)

        async def everyoneSees(taskID: str, task: dict[str, Any], seq: int) -> None:
            for client in sockets:
                [update] = await client.notifications("rpc.update", 1)
                self.assertEqual(update["seq"], seq)
                self.assertEqual(update["args"], [seq, taskID, task])
            await waitFor(lambda: nativeBoard.seq == seq, what="the native client's copy")
            self.assertEqual(nativeBoard.value[taskID], task)
            await self.mirrorReaches(rest.token, restBoard.handle, seq)
            await restBoard.refresh()
            self.assertEqual((restBoard.seq, restBoard.state[taskID]), (seq, task))

        viaREST = await rest.call("addTask", "via REST")
        await everyoneSees(viaREST, {"text": "via REST", "done": False, "by": "alice"}, 1)
        viaTwisted = await bob.callRemote("addTask", "via Twisted")
        await everyoneSees(viaTwisted, {"text": "via Twisted", "done": False, "by": "bob"}, 2)


# -- the plain call path, in memory ---------------------------------------------


class ScriptedAvatar:
    """
    The avatar of an in-memory session: each method answers one way, at
    once, except C{hang} (answered when the test fires C{pending}).
    """

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = []

    def callRemote(self, method: str, *args: Any, _timeout: Any = None,
                   **kwargs: Any) -> Deferred[Any]:
        self.calls.append((method, args, kwargs, _timeout))
        cycle: list[Any] = []
        cycle.append(cycle)
        outcomes: dict[str, Any] = {
            "add": lambda: args[0] + args[1],
            "echo": lambda: {"args": list(args), "kwargs": kwargs},
            "none": lambda: None,
            "tuple": lambda: (1, (2.5, "x")),
            "nan": lambda: float("nan"),
            "bytes": lambda: b"\x00\xff",
            "ref": lambda: pb.RemoteReference(None, None, 7, False),  # type: ignore[arg-type]
            "boom": lambda: pb.RemoteError("builtins.ZeroDivisionError", "division by zero"),
            "nope": lambda: pb.RemoteError("pb.errors.NoSuchMethod", "no method nope"),
            "oops": lambda: pb.RemoteError("shop.Oops", "out of stock",
                                           remoteParents=("shop.Oops", "pb.errors.Error")),
            "slow": lambda: pb.CallTimeout("the call timed out"),
            "gone": lambda: pb.DeadReferenceError("the connection is lost"),
            "cycle": lambda: cycle,
        }
        if method == "crash":
            raise TypeError("the avatar broke")
        d: Deferred[Any] = Deferred()
        if method == "hang":
            self.pending.append(d)
            return d
        outcome = outcomes[method]()
        if isinstance(outcome, Exception):
            d.errback(outcome)
        else:
            d.callback(outcome)
        return d


class _Sent:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, data: bytes) -> None:
        self.messages.append(json.loads(data))


class _Factory:
    def __init__(self, table: Any) -> None:
        self.table = table
        self.sockets: set[Any] = set()


class _PBFactory:
    def disconnect(self) -> None:
        pass


class PlainCallTests(SynchronousTestCase):
    """
    A socket answers plain calls (positional JSON arguments, a live
    session) without a coroutine, exactly as its general path answers them.
    """

    def socket(self, **options: Any) -> tuple[Any, Any, ScriptedAvatar]:
        from twisted.internet.task import Clock

        from gateway.sessions import Login, Session, SessionTable
        from gateway.websocket import GatewayWebSocketProtocol

        table = SessionTable(Clock(), GatewayOptions(staticDir=None, **options))
        avatar = ScriptedAvatar()
        factory = _Factory(table)
        login = Login(table, _PBFactory(), avatar, None, False)  # type: ignore[arg-type]
        session = Session(table, "gw-test", "secret", "alice", login)
        table._register(session)
        session.touch()
        protocol = GatewayWebSocketProtocol()
        protocol.factory = factory  # type: ignore[assignment]
        protocol.sender = _Sent()  # type: ignore[assignment]
        protocol.session = session
        return protocol, session, avatar

    def answers(self, protocol: Any, message: Any, general: bool) -> tuple[Any, ...]:
        """
        What C{message} is answered with, what the avatar was asked and the
        call outcomes counted, by the plain path (C{onMessage}) or by the
        general one.
        """
        sent, avatar = protocol.sender.messages, protocol.session.login.avatar
        table = protocol.factory.table
        del sent[:], avatar.calls[:]
        before = dict(table.callsByOutcome)
        if general:
            self.successResultOf(Deferred.fromCoroutine(protocol._single(message)))
        else:
            protocol.onMessage(json.dumps(message).encode("utf-8"), False)
        counted = {key: value - before.get(key, 0)
                   for key, value in table.callsByOutcome.items() if value != before.get(key)}
        return list(sent), list(avatar.calls), counted, protocol.inFlight

    def test_sameAnswersAsTheGeneralPath(self) -> None:
        """
        Every kind of request (results that need the codec, remote errors,
        timeouts, a lost connection, an unmappable result, a method that
        raises, bad ids, params and names, notifications) is answered by
        C{onMessage} exactly as the general path answers it, with the same
        calls sent and the same outcomes counted.
        """
        protocol, session, _ = self.socket()
        methods = ["add", "echo", "none", "tuple", "nan", "bytes", "ref", "boom", "nope",
                   "oops", "slow", "gone", "cycle", "crash"]
        messages: list[Any] = [
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": [5, 3]}
            for method in methods
        ]
        messages += [
            {"jsonrpc": "2.0", "id": "s", "method": "echo", "params": [1.5, "x", True, None]},
            {"jsonrpc": "2.0", "id": 2, "method": "echo"},
            {"jsonrpc": "2.0", "id": 3, "method": "echo", "params": [{"$bytes": "AA=="}, [1]]},
            {"jsonrpc": "2.0", "id": 4, "method": "echo", "params": {"a": 1}},
            {"jsonrpc": "2.0", "id": 5, "method": "echo", "params": {"_timeout": 1}},
            {"jsonrpc": "2.0", "id": 6, "method": "echo", "params": "x"},
            {"jsonrpc": "2.0", "id": 7, "method": "echo", "params": [{"$nope": 1}]},
            {"jsonrpc": "2.0", "id": 8, "method": "1x", "params": []},
            {"jsonrpc": "2.0", "id": 9, "method": "rpc.nope", "params": []},
            {"jsonrpc": "2.0", "id": None, "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "id": True, "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "id": 1.5, "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "boom", "params": [1, 2]},
            {"jsonrpc": "1.0", "id": 10, "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "id": 11, "method": 5},
            {"id": 12, "result": 3},
            "add",
        ]
        for message in messages:
            plain = self.answers(protocol, message, general=False)
            general = self.answers(protocol, message, general=True)
            self.assertEqual(plain, general, message)
        self.flushLoggedErrors(TypeError)
        self.assertEqual(len(session.refs), 1)
        # A few answers spelled out, so that both paths cannot drift together.
        expected = {
            "add": ("result", 8),
            "tuple": ("result", [1, [2.5, "x"]]),
            "nan": ("result", {"$float": "nan"}),
            "boom": ("error", (-32011, "remote_exception")),
            "nope": ("error", (-32601, "not_found")),
            "slow": ("error", (-32021, "timeout")),
            "gone": ("error", (-32020, "broker_unavailable")),
            "cycle": ("error", (-32022, "unmappable_result")),
            "crash": ("error", (-32603, "internal_error")),
        }
        for method, (kind, value) in expected.items():
            [answer], _, _, inFlight = self.answers(
                protocol, {"jsonrpc": "2.0", "id": 1, "method": method, "params": [5, 3]},
                general=False,
            )
            got = answer.get("result") if kind == "result" else (
                answer["error"]["code"], answer["error"]["data"]["type"])
            self.assertEqual((method, kind in answer, got, inFlight), (method, True, value, 0))
        self.flushLoggedErrors(TypeError)

    def test_noCoroutine(self) -> None:
        """
        A plain call makes no coroutine (none of the general path's layers
        run) and is answered when the broker answers, with its id.
        """
        protocol, session, avatar = self.socket()
        made: list[Any] = []
        real = Deferred.fromCoroutine
        self.patch(Deferred, "fromCoroutine",
                   lambda coroutine: made.append(coroutine) or real(coroutine))
        protocol.onMessage(b'{"jsonrpc":"2.0","id":"a","method":"hang","params":[1,"b"]}', False)
        self.assertEqual((made, protocol.sender.messages, protocol.inFlight), ([], [], 1))
        self.assertEqual(avatar.calls, [("hang", (1, "b"), {}, session.options.callTimeout)])
        avatar.pending.pop().callback([1, {"two": 2}])
        self.assertEqual(protocol.sender.messages,
                         [{"jsonrpc": "2.0", "id": "a", "result": [1, {"two": 2}]}])
        self.assertEqual((made, protocol.inFlight), ([], 0))
        self.assertEqual(session.table.callsByOutcome, {"ok": 1})

    def test_inFlightAndEndedSession(self) -> None:
        """
        Plain calls count in flight: past C{maxInFlight} a request is
        refused (-32005) until one is answered; a failed call frees its
        place too.  A session that has ended is refused (-32001), and its
        avatar is not called.
        """
        protocol, session, avatar = self.socket(maxInFlight=2)
        for requestID in (1, 2):
            protocol.onMessage(
                json.dumps({"jsonrpc": "2.0", "id": requestID, "method": "hang"}).encode(), False
            )
        protocol.onMessage(b'{"jsonrpc":"2.0","id":3,"method":"add","params":[1,2]}', False)
        [refused] = protocol.sender.messages
        self.assertEqual((refused["id"], refused["error"]["code"]), (3, -32005))
        avatar.pending[0].errback(pb.CallTimeout("late"))
        avatar.pending[1].callback(None)
        self.assertEqual(protocol.inFlight, 0)
        self.assertEqual(
            [(m["id"], m.get("result"), "error" in m) for m in protocol.sender.messages[1:]],
            [(1, None, True), (2, None, False)],
        )
        protocol.onMessage(b'{"jsonrpc":"2.0","id":4,"method":"add","params":[1,2]}', False)
        self.assertEqual(protocol.sender.messages[-1]["result"], 3)
        session.end("logged out")
        calls = len(avatar.calls)
        protocol.onMessage(b'{"jsonrpc":"2.0","id":5,"method":"add","params":[1,2]}', False)
        answer = protocol.sender.messages[-1]
        self.assertEqual((answer["id"], answer["error"]["code"]), (5, -32001))
        self.assertEqual(len(avatar.calls), calls)
