"""
End-to-end tests of the REST bridge over real loopback sockets: the demo
service on our broker, the reference examples on an unmodified Twisted PB
server, every row of the error table, every value tag, and the real C{curl}.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools import requireTool
from treq.client import HTTPClient
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.reflect import qual
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

import pb
from gateway.client import Cache, Copy, GatewayClient, GatewayClientError, Ref
from gateway.service import GatewayService
from gateway.sessions import GatewayOptions
from pb.demo import Counter, DemoRealm, DemoUser, SharedData
from pb.login import AsReferenceable
from pb.service import BrokerService

try:
    from openapi_spec_validator import validate as validateOpenAPI
except ImportError:  # pragma: no cover - the test extra installs it
    validateOpenAPI = None

LOOPBACK = "tcp:0:interface=127.0.0.1"
ALICE = {"username": "alice", "password": "password"}
BOB = {"username": "bob", "password": "secret"}
TOKEN = re.compile(r"gw-[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{32,}\Z")
NO_BODY: Any = object()


# -- the reference examples, served by Twisted's own twisted.spread.pb ------


class TwistedMathService(twistedPB.Root):
    """
    The reference math example.
    """

    def remote_add(self, a: Any, b: Any) -> Any:
        return a + b

    def remote_multiply(self, a: Any, b: Any) -> Any:
        return a * b

    def remote_divide(self, a: Any, b: Any) -> Any:
        if b == 0:
            raise ValueError("Division by zero")
        return a / b

    def remote_opaque(self) -> Any:
        # Twisted sends an instance of an unregistered class as an
        # Unpersistable ("... deemed insecure").
        return Opaque()


class Opaque:
    pass


class TwistedSharedData(twistedPB.Copyable, twistedPB.RemoteCopy):
    """
    The reference data-service example's Copyable.
    """

    def __init__(self, name: Any = None, value: Any = None) -> None:
        self.name = name
        self.value = value


twistedPB.setUnjellyableForClass(TwistedSharedData, TwistedSharedData)


class TwistedCounter(twistedPB.Referenceable):
    def __init__(self) -> None:
        self.count = 0

    def remote_increment(self) -> int:
        self.count += 1
        return self.count


class TwistedUserAvatar(twistedPB.Avatar):
    """
    The reference authenticated example's avatar plus the data service.
    """

    def __init__(self, realm: TwistedRealm, name: str) -> None:
        self.realm = realm
        self.name = name
        self.data: dict[str, Any] = {}

    def perspective_getMessage(self) -> str:
        return f"Hello, {self.name}!"

    def perspective_getTime(self) -> str:
        return time.ctime()

    def perspective_store(self, key: str, data: Any) -> str:
        self.data[key] = data
        return f"Stored {key} for {self.name}"

    def perspective_retrieve(self, key: str) -> Any:
        return self.data[key]

    def perspective_list_keys(self) -> list[str]:
        return list(self.data)

    def perspective_counter(self) -> TwistedCounter:
        return TwistedCounter()

    def logout(self) -> None:
        self.realm.loggedOut.append(self.name)


@implementer(IRealm)
class TwistedRealm:
    def __init__(self) -> None:
        self.loggedOut: list[str] = []

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Any:
        avatar = TwistedUserAvatar(self, avatarId.decode("utf-8"))
        return twistedPB.IPerspective, avatar, avatar.logout


class TrackingTwistedFactory(twistedPB.PBServerFactory):
    """
    Twisted's server factory, remembering its brokers so a test can look at
    the server side of a connection.
    """

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.brokers: list[twistedPB.Broker] = []

    def buildProtocol(self, addr: Any) -> Any:
        broker = super().buildProtocol(addr)
        self.brokers.append(broker)
        return broker


class PlainRoot(pb.Root):
    """
    A plain root (no portal) whose C{hang} never answers.
    """

    def remote_hang(self) -> Deferred[None]:
        return Deferred()

    def remote_ping(self, *args: Any) -> str:
        return "pong"

    def remote_counter(self) -> Counter:
        return Counter()


@implementer(IBodyProducer)
class ChunkedBody:
    """
    A request body of unknown length: the agent sends it chunked.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes) -> None:
        self.data = data

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@attrs.frozen
class Reply:
    status: int
    body: Any
    raw: bytes
    headers: Any


# -- shared fixtures ---------------------------------------------------------


class GatewayTestCase(TestCase):
    """
    Brokers and gateways on loopback port 0, stopped after each test, and an
    HTTP client whose connections are closed after each test.
    """

    url: str

    def setUp(self) -> None:
        pool = HTTPConnectionPool(reactor)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)

    @staticmethod
    def _stop(service: Any) -> Any:
        if service.running:
            return service.stopService()
        return None

    async def startBroker(self, service: Any) -> BrokerService:
        broker = BrokerService(reactor, LOOPBACK, service)
        broker.startService()
        self.addCleanup(self._stop, broker)
        await broker.whenListening()
        return broker

    async def startTwistedBroker(self, root: Any) -> TrackingTwistedFactory:
        factory = TrackingTwistedFactory(root)
        port = await serverFromString(reactor, LOOPBACK).listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(self._closeTwisted, factory)
        factory.port = port.getHost().port
        return factory

    @staticmethod
    def _closeTwisted(factory: TrackingTwistedFactory) -> None:
        for broker in factory.brokers:
            if broker.transport is not None:
                broker.transport.loseConnection()

    async def startGateway(self, brokerPort: int, **options: Any) -> str:
        """
        A gateway in front of the broker on C{brokerPort}; its URL (also
        C{self.url}).
        """
        gateway = GatewayService(
            reactor,
            LOOPBACK,
            GatewayOptions(broker=f"tcp:host=127.0.0.1:port={brokerPort}", **options),
        )
        gateway.startService()
        self.addCleanup(self._stop, gateway)
        port = await gateway.whenListening()
        self.gateway = gateway
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        return self.url

    def client(self) -> GatewayClient:
        return GatewayClient(self.url, self.http)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = NO_BODY,
        *,
        token: str | None = None,
        raw: Any = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Reply:
        """
        One HTTP request: C{body} is sent as JSON, C{raw} as it is.
        """
        allHeaders = dict(headers or {})
        if token is not None:
            allHeaders[b"authorization"] = [b"Bearer " + token.encode("utf-8")]
        data = raw if raw is not None else None if body is NO_BODY else json.dumps(body).encode()
        response = await self.http.request(method, self.url + path, data=data, headers=allHeaders)
        content = await response.content()
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        return Reply(response.code, parsed, content, response.headers)

    async def login(self, credentials: dict[str, Any] | None = None) -> str:
        reply = await self.request("POST", "/api/login", credentials or ALICE)
        self.assertEqual(reply.status, 200, reply.raw)
        token: str = reply.body["token"]
        return token

    async def call(self, token: str | None, method: str, *args: Any, root: bool = False) -> Any:
        """
        The result of a successful call (arguments already in JSON form).
        """
        path = f"/api/root/{method}" if root else f"/api/call/{method}"
        reply = await self.request("POST", path, list(args), token=token)
        self.assertEqual(reply.status, 200, reply.raw)
        return reply.body["result"]

    def assertError(
        self, reply: Reply, status: int, type: str, code: str | None = None
    ) -> dict[str, Any]:
        """
        C{reply} is the documented JSON error, without a traceback.
        """
        self.assertEqual(reply.status, status, reply.raw)
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertNotIn(b"Traceback", reply.raw)
        self.assertIsInstance(reply.body, dict, reply.raw)
        self.assertEqual(set(reply.body), {"error"})
        error: dict[str, Any] = reply.body["error"]
        self.assertLessEqual({"type", "message", "code"}, set(error))
        self.assertLessEqual(set(error), {"type", "message", "code", "remote_type"})
        self.assertEqual(error["type"], type)
        self.assertIsInstance(error["message"], str)
        if code is not None:
            self.assertEqual(error["code"], code)
        return error

    async def eventually(self, predicate: Callable[[], Any], what: str) -> None:
        """
        Wait (up to 5 s) until C{predicate()} is true.
        """
        deadline = time.monotonic() + 5
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting until {what}")
            await deferLater(reactor, 0.01, lambda: None)

    async def sleep(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)


class DemoTestCase(GatewayTestCase):
    """
    A gateway in front of the demo service on our broker.
    """

    async def startDemo(self, **options: Any) -> None:
        self.realm = DemoRealm(clock=reactor)
        self.broker = await self.startBroker(self.realm)
        assert self.broker.port is not None
        await self.startGateway(self.broker.port.getHost().port, **options)

    def serverObjects(self) -> list[Any]:
        """
        Every object the broker currently lends to the gateway.
        """
        return [
            local.object
            for connection in self.broker.factory.connections
            for local in connection.localObjects.values()
        ]

    def serverAvatar(self, username: str) -> DemoUser:
        for lent in self.serverObjects():
            avatar = getattr(lent, "object", None)
            if isinstance(lent, AsReferenceable) and getattr(avatar, "name", None) == username:
                assert isinstance(avatar, DemoUser)
                return avatar
        raise AssertionError(f"{username} has no avatar on the broker")


# -- the demo service --------------------------------------------------------


class DemoServiceTests(DemoTestCase):
    """
    The gateway in front of the demo service: sessions, calls, references,
    caches and the operational routes.
    """

    async def test_passwordLogin(self) -> None:
        """
        A password login answers an unguessable token, the idle timeout and
        the perspective's methods from introspection; every login gets a new
        token.
        """
        await self.startDemo(sessionIdleTimeout=321.0)
        reply = await self.request("POST", "/api/login", ALICE)
        self.assertEqual(reply.status, 200, reply.raw)
        self.assertEqual(set(reply.body), {"token", "expires_in", "methods"})
        self.assertRegex(reply.body["token"], TOKEN)
        self.assertEqual(reply.body["expires_in"], 321.0)
        names = {method["name"] for method in reply.body["methods"]}
        self.assertLessEqual({"add", "divide", "getMessage", "store", "counter", "board"}, names)
        add = next(method for method in reply.body["methods"] if method["name"] == "add")
        self.assertEqual([param["name"] for param in add["params"]], ["a", "b"])
        self.assertEqual(add["doc"], "Add two numbers.")
        again = await self.login()
        self.assertNotEqual(again, reply.body["token"])
        self.assertEqual(await self.call(reply.body["token"], "whoami"), "alice")
        self.assertEqual(self.realm.sessions, 2)

    async def test_anonymousLogin(self) -> None:
        """
        An anonymous login gets a guest: math works, the users' methods are
        not offered.
        """
        await self.startDemo()
        reply = await self.request("POST", "/api/login", {"anonymous": True})
        self.assertEqual(reply.status, 200, reply.raw)
        self.assertRegex(reply.body["token"], TOKEN)
        names = {method["name"] for method in reply.body["methods"]}
        self.assertIn("add", names)
        self.assertNotIn("getMessage", names)
        token = reply.body["token"]
        self.assertEqual(await self.call(token, "whoami"), "guest")
        self.assertEqual(await self.call(token, "multiply", 6, 7), 42)

    async def test_math(self) -> None:
        """
        add, multiply and divide answer 200 with their result, in both body
        forms (a bare array and C{{"args", "kwargs"}}).
        """
        await self.startDemo()
        token = await self.login()
        self.assertEqual(await self.call(token, "add", 5, 3), 8)
        self.assertEqual(await self.call(token, "multiply", 2.5, 4), 10.0)
        self.assertEqual(await self.call(token, "divide", 1, 4), 0.25)
        reply = await self.request(
            "POST", "/api/call/add", {"args": [1], "kwargs": {"b": 2}}, token=token
        )
        self.assertEqual((reply.status, reply.body), (200, {"result": 3}))

    async def test_divideByZero(self) -> None:
        """
        A non-pb.Error exception raised by the remote method is a 500
        remote_exception naming the remote type and message, never a 200.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request("POST", "/api/call/divide", [1, 0], token=token)
        error = self.assertError(reply, 500, "remote_exception", "builtins.ValueError")
        self.assertEqual(error["remote_type"], "builtins.ValueError")
        self.assertEqual(error["message"], "Division by zero")
        self.flushLoggedErrors(ValueError)

    async def test_pbError(self) -> None:
        """
        A pb.Error raised by the remote method (addTask with no text) is a
        422 remote_error carrying its message.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request("POST", "/api/call/addTask", ["  "], token=token)
        error = self.assertError(reply, 422, "remote_error", "pb.errors.Error")
        self.assertEqual(error["message"], "a task needs some text")
        self.assertEqual(len(self.realm.board), 0)

    async def test_messageAndTime(self) -> None:
        """
        The authenticated example's getMessage and getTime.
        """
        await self.startDemo()
        token = await self.login(BOB)
        self.assertEqual(await self.call(token, "getMessage"), "Hello, bob!")
        stamp = await self.call(token, "getTime")
        time.strptime(stamp, "%a %b %d %H:%M:%S %Y")

    async def test_dataService(self) -> None:
        """
        store/retrieve/list_keys with a C{$copy} of pb.demo.SharedData: the
        broker holds a real SharedData and retrieve gives the same JSON.
        """
        await self.startDemo()
        token = await self.login()
        shared = {
            "$copy": "pb.demo.SharedData",
            "state": {"name": "greeting", "value": {"$bytes": "aGk="}},
        }
        self.assertEqual(await self.call(token, "store", "k", shared), "Stored k for alice")
        stored = self.serverAvatar("alice").data["k"]
        self.assertIsInstance(stored, SharedData)
        self.assertEqual((stored.name, stored.value), ("greeting", b"hi"))
        self.assertEqual(await self.call(token, "retrieve", "k"), shared)
        await self.call(token, "store", "other", 1)
        self.assertEqual(await self.call(token, "list_keys"), ["k", "other"])

    async def test_counterReference(self) -> None:
        """
        A returned Referenceable is a handle: calls on it reach the object;
        DELETE releases it (the broker drops the Counter), after which the
        handle is unknown (404).
        """
        await self.startDemo()
        token = await self.login()
        handle = (await self.call(token, "counter"))["$ref"]
        reply = await self.request("POST", f"/api/refs/{handle}/increment", [5], token=token)
        self.assertEqual(reply.body, {"result": 5})
        reply = await self.request("POST", f"/api/refs/{handle}/increment", token=token)
        self.assertEqual(reply.body, {"result": 6})
        self.assertEqual(await self.call(token, "counter"), {"$ref": handle})
        self.assertTrue(any(isinstance(lent, Counter) for lent in self.serverObjects()))

        reply = await self.request("DELETE", f"/api/refs/{handle}", token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": None}))
        await self.eventually(
            lambda: not any(isinstance(lent, Counter) for lent in self.serverObjects()),
            "the broker saw the decref",
        )
        reply = await self.request("POST", f"/api/refs/{handle}/value", token=token)
        self.assertError(reply, 404, "not_found", "unknown_handle")
        reply = await self.request("DELETE", f"/api/refs/{handle}", token=token)
        self.assertError(reply, 404, "not_found", "unknown_handle")

    async def test_boardCache(self) -> None:
        """
        A returned Cacheable is a cache handle whose GET follows changes made
        through another session; DELETE releases it and the broker's live
        object loses its observer.
        """
        await self.startDemo()
        alice = await self.login()
        bob = await self.login(BOB)
        board = await self.call(alice, "board")
        handle = board["$cache"]
        self.assertEqual(
            board, {"$cache": handle, "type": "pb.live.LiveDict", "state": {}, "seq": 0}
        )
        self.assertEqual(len(self.realm.board.observers), 1)

        taskId = await self.call(bob, "addTask", "buy milk")
        snapshots: list[Any] = []

        async def poll() -> None:
            while True:
                reply = await self.request("GET", f"/api/caches/{handle}", token=alice)
                self.assertEqual(reply.status, 200, reply.raw)
                snapshots.append(reply.body)
                if reply.body["seq"] > 0:
                    return
                await self.sleep(0.01)

        await poll()
        self.assertEqual(
            snapshots[-1]["state"], {taskId: {"text": "buy milk", "done": False, "by": "bob"}}
        )
        self.assertEqual(snapshots[-1]["$cache"], handle)

        reply = await self.request("DELETE", f"/api/caches/{handle}", token=alice)
        self.assertEqual((reply.status, reply.body), (200, {"result": None}))
        await self.eventually(
            lambda: len(self.realm.board.observers) == 0, "stoppedObserving ran"
        )
        reply = await self.request("GET", f"/api/caches/{handle}", token=alice)
        self.assertError(reply, 404, "not_found", "unknown_handle")

    async def test_pythonClient(self) -> None:
        """
        gateway.client drives the same API: calls, a Ref, a Cache, a Copy,
        and logout.
        """
        await self.startDemo()
        client = self.client()
        await client.login("alice", "password")
        self.assertEqual(await client.call("add", 5, 3), 8)
        counter = await client.call("counter")
        self.assertIsInstance(counter, Ref)
        self.assertEqual(await counter.call("increment", by=2), 2)
        board = await client.call("board")
        self.assertIsInstance(board, Cache)
        await client.call("store", "d", Copy("pb.demo.SharedData", {"name": "n", "value": (1,)}))
        self.assertEqual(
            await client.call("retrieve", "d"),
            Copy("pb.demo.SharedData", {"name": "n", "value": [1]}),
        )
        with self.assertRaises(GatewayClientError) as caught:
            await client.call("addTask", "")
        self.assertEqual((caught.exception.status, caught.exception.type), (422, "remote_error"))
        await client.logout()
        await self.eventually(lambda: self.realm.sessions == 0, "the avatar logged out")

    async def test_logout(self) -> None:
        """
        Logout ends the session: the avatar's logout runs on the broker and
        the token no longer works.
        """
        await self.startDemo()
        token = await self.login()
        other = await self.login(BOB)
        self.assertEqual(self.realm.sessions, 2)
        reply = await self.request("POST", "/api/logout", token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": None}))
        await self.eventually(lambda: self.realm.sessions == 1, "the avatar logged out")
        reply = await self.request("POST", "/api/call/add", [1, 2], token=token)
        self.assertError(reply, 401, "unauthorized", "session_ended")
        self.assertEqual(await self.call(other, "add", 1, 2), 3)

    async def test_describe(self) -> None:
        """
        GET /api/describe without a token describes the broker's root (a
        login here), with one the session's perspective.
        """
        await self.startDemo()
        reply = await self.request("GET", "/api/describe")
        self.assertEqual(reply.status, 200, reply.raw)
        self.assertEqual(reply.body["result"]["kind"], "login")
        token = await self.login()
        reply = await self.request("GET", "/api/describe", token=token)
        self.assertEqual(reply.status, 200, reply.raw)
        description = reply.body["result"]
        self.assertEqual((description["kind"], description["type"]), ("perspective", "DemoUser"))
        self.assertIn("store", [method["name"] for method in description["methods"]])

    async def test_healthAndReadiness(self) -> None:
        """
        /healthz answers while the process runs; /readyz is 200 while the
        broker is reachable and 503 once it is gone.
        """
        await self.startDemo()
        reply = await self.request("GET", "/healthz")
        self.assertEqual((reply.status, reply.body), (200, {"status": "ok"}))
        reply = await self.request("GET", "/readyz")
        self.assertEqual((reply.status, reply.body), (200, {"status": "ready"}))
        await self.broker.stopService()
        # The gateway notices the closed connection a moment later.
        for _ in range(100):
            reply = await self.request("GET", "/readyz")
            if reply.status != 200:
                break
            await self.sleep(0.02)
        self.assertError(reply, 503, "broker_unavailable")
        reply = await self.request("GET", "/healthz")
        self.assertEqual(reply.status, 200)

    async def test_metrics(self) -> None:
        """
        /metrics is Prometheus text counting requests by route and status,
        open sessions and PB calls by outcome.
        """
        await self.startDemo()
        token = await self.login()
        await self.call(token, "add", 1, 2)
        await self.request("POST", "/api/call/add", [1], token=token)
        reply = await self.request("GET", "/metrics")
        self.assertEqual(reply.status, 200)
        self.assertEqual(
            reply.headers.getRawHeaders(b"content-type"), [b"text/plain; version=0.0.4"]
        )
        text = reply.raw.decode("utf-8")
        self.assertIn('pbgw_http_requests_total{method="POST",route="login",status="200"} 1', text)
        self.assertIn('pbgw_http_requests_total{method="POST",route="call",status="400"} 1', text)
        self.assertIn('pbgw_pb_calls_total{outcome="ok"} 1', text)
        self.assertRegex(text, r"(?m)^pbgw_sessions 1$")
        self.assertIn("pbgw_http_request_duration_seconds_bucket", text)

    async def test_openAPI(self) -> None:
        """
        /api/openapi.json is a valid OpenAPI 3.1 document of the routes; with
        a token it also has a path per perspective method.
        """
        await self.startDemo()
        reply = await self.request("GET", "/api/openapi.json")
        self.assertEqual(reply.status, 200, reply.raw)
        document = reply.body
        self.assertTrue(document["openapi"].startswith("3.1"))
        for path in ("/api/login", "/api/logout", "/api/call/{method}", "/api/refs/{handle}",
                     "/api/caches/{handle}", "/healthz", "/readyz", "/metrics"):
            self.assertIn(path, document["paths"])
        self.assertNotIn("/api/call/add", document["paths"])
        token = await self.login()
        withMethods = (await self.request("GET", "/api/openapi.json", token=token)).body
        self.assertIn("/api/call/add", withMethods["paths"])
        self.assertIn("post", withMethods["paths"]["/api/call/add"])
        requireTool(validateOpenAPI is not None, "openapi-spec-validator (pip)")
        assert validateOpenAPI is not None
        validateOpenAPI(document)
        validateOpenAPI(withMethods)

    async def test_curl(self) -> None:
        """
        The real curl logs in and calls a method.
        """
        curl = shutil.which("curl")
        requireTool(curl is not None, "curl (apt-get install curl)")
        assert curl is not None
        await self.startDemo()

        async def runCurl(*args: str) -> Any:
            out, err, code = await getProcessOutputAndValue(
                curl, ["-sS", "-H", "Content-Type: application/json", *args]
            )
            self.assertEqual(code, 0, err)
            return json.loads(out)

        login = await runCurl("-X", "POST", f"{self.url}/api/login", "-d", json.dumps(ALICE))
        self.assertRegex(login["token"], TOKEN)
        result = await runCurl(
            "-X", "POST", f"{self.url}/api/call/add", "-H",
            f"Authorization: Bearer {login['token']}", "-d", "[5, 3]",
        )
        self.assertEqual(result, {"result": 8})


# -- an unmodified Twisted PB server ----------------------------------------


class TwistedServerTests(GatewayTestCase):
    """
    The gateway in front of twisted.spread.pb serving the reference examples.
    """

    async def test_rootMath(self) -> None:
        """
        /api/root/* calls a plain Twisted root: add, and divide by zero as a
        500 with the remote type; what Twisted cannot send arrives as
        C{$unpersistable}.
        """
        factory = await self.startTwistedBroker(TwistedMathService())
        await self.startGateway(factory.port)
        self.assertEqual(await self.call(None, "add", 5, 3, root=True), 8)
        self.assertEqual(await self.call(None, "multiply", "ab", 2, root=True), "abab")
        reply = await self.request("POST", "/api/root/divide", [1, 0])
        error = self.assertError(reply, 500, "remote_exception", "builtins.ValueError")
        self.assertEqual(error["message"], "Division by zero")
        result = await self.call(None, "opaque", root=True)
        self.assertEqual(set(result), {"$unpersistable"})
        self.assertIn("Opaque", result["$unpersistable"])
        reply = await self.request("GET", "/api/describe")
        self.assertEqual((reply.status, reply.body), (200, {"result": None}))
        self.flushLoggedErrors(ValueError, twistedPB.NoSuchMethod)

    async def test_loginAndLogout(self) -> None:
        """
        Behind a Twisted portal: login (no introspection, so C{methods} is
        null), getMessage/getTime, and logout runs the avatar's logout.
        """
        realm = TwistedRealm()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"password")
        factory = await self.startTwistedBroker(Portal(realm, [checker]))
        await self.startGateway(factory.port)
        reply = await self.request("POST", "/api/login", ALICE)
        self.assertEqual(reply.status, 200, reply.raw)
        self.assertIsNone(reply.body["methods"])
        token = reply.body["token"]
        self.assertEqual(await self.call(token, "getMessage"), "Hello, alice!")
        time.strptime(await self.call(token, "getTime"), "%a %b %d %H:%M:%S %Y")
        reply = await self.request("GET", "/api/describe", token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": None}))
        self.assertEqual(realm.loggedOut, [])
        reply = await self.request("POST", "/api/logout", token=token)
        self.assertEqual(reply.status, 200)
        await self.eventually(lambda: realm.loggedOut == ["alice"], "Twisted ran the logout")
        self.flushLoggedErrors(AttributeError)

    async def test_dataService(self) -> None:
        """
        store/retrieve/list_keys with a C{$copy} of a Twisted Copyable: the
        Twisted server holds its own class, and it comes back the same.
        """
        realm = TwistedRealm()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"password")
        factory = await self.startTwistedBroker(Portal(realm, [checker]))
        await self.startGateway(factory.port)
        token = await self.login()
        shared = {
            "$copy": qual(TwistedSharedData),
            "state": {"name": "n", "value": [1, {"$bytes": "AAE="}, {"$set": [2]}]},
        }
        self.assertEqual(await self.call(token, "store", "k", shared), "Stored k for alice")
        self.assertEqual(await self.call(token, "retrieve", "k"), shared)
        self.assertEqual(await self.call(token, "list_keys"), ["k"])
        self.flushLoggedErrors(AttributeError)

    async def test_referenceRelease(self) -> None:
        """
        A Twisted Referenceable becomes a handle; releasing it makes the
        Twisted broker drop the object (it saw the decref).
        """
        realm = TwistedRealm()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"password")
        factory = await self.startTwistedBroker(Portal(realm, [checker]))
        await self.startGateway(factory.port)
        token = await self.login()

        def counters() -> int:
            return sum(
                isinstance(puid, TwistedCounter)
                for broker in factory.brokers
                for puid in (lobj.object for lobj in broker.localObjects.values())
            )

        handle = (await self.call(token, "counter"))["$ref"]
        reply = await self.request("POST", f"/api/refs/{handle}/increment", token=token)
        self.assertEqual(reply.body, {"result": 1})
        self.assertEqual(counters(), 1)
        await self.request("DELETE", f"/api/refs/{handle}", token=token)
        await self.eventually(lambda: counters() == 0, "Twisted saw the decref")
        self.flushLoggedErrors(AttributeError)

    async def test_rootLoginForbidden(self) -> None:
        """
        The portal's login machinery is not callable through /api/root.
        """
        realm = TwistedRealm()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"password")
        factory = await self.startTwistedBroker(Portal(realm, [checker]))
        await self.startGateway(factory.port)
        for method in ("login", "loginAnonymous"):
            reply = await self.request("POST", f"/api/root/{method}", ["alice"])
            self.assertError(reply, 403, "forbidden", "login_root")
        self.assertEqual(realm.loggedOut, [])


# -- the error table ---------------------------------------------------------

# A malformed payload for every tag the gateway accepts.
MALFORMED_TAGS: list[Any] = [
    {"$bytes": 5},
    {"$bytes": "a"},
    {"$bytes": "not base64!"},
    {"$tuple": "x"},
    {"$tuple": [{"$float": "big"}]},
    {"$set": {"a": 1}},
    {"$set": [[1]]},
    {"$frozenset": 1},
    {"$frozenset": [{"a": 1}]},
    {"$datetime": "yesterday"},
    {"$datetime": "2024-01-01T00:00:00+01:00"},
    {"$datetime": 0},
    {"$date": "2024-02-30"},
    {"$date": None},
    {"$time": "25:00"},
    {"$time": "10:00:00+01:00"},
    {"$timedelta": "1s"},
    {"$timedelta": True},
    {"$timedelta": 1e300},
    {"$decimal": "one"},
    {"$decimal": "NaN"},
    {"$decimal": "-Infinity"},
    {"$decimal": 1.5},
    {"$float": "NaN"},
    {"$float": 1.0},
    {"$float": []},
    {"$dict": {"a": 1}},
    {"$dict": [[1]]},
    {"$dict": [[[1], 2]]},
    {"$ref": 5},
    {"$cache": ["c"]},
    {"$copy": ""},
    {"$copy": 5},
    {"$copy": "pb.demo.SharedData", "junk": 1},
    {"$set": [], "$tuple": []},
    {"$bytes": "", "extra": 1},
]


class ErrorTableTests(DemoTestCase):
    """
    Every row of the documented error table, as JSON without a traceback.
    """

    async def test_badJSON(self) -> None:
        """
        Bodies that are not strict JSON are 400 bad_json: syntax errors,
        invalid UTF-8, NaN/Infinity literals, 10k levels of nesting and a
        5000-digit integer.
        """
        await self.startDemo()
        token = await self.login()
        bodies = [
            b"{",
            b"[1, 2",
            b"[1, 2] x",
            b"\xff\xfe[1]",
            b'["\xc3"]',
            b"[NaN, 1]",
            b"[Infinity, 1]",
            b"[-Infinity, 1]",
            b"[" * 10000 + b"]" * 10000,
            b"[" + b"7" * 5000 + b", 1]",
        ]
        for raw in bodies:
            reply = await self.request("POST", "/api/call/add", raw=raw, token=token)
            self.assertError(reply, 400, "bad_request", "bad_json")
        reply = await self.request("POST", "/api/login", raw=b"{'username': 'alice'}")
        self.assertError(reply, 400, "bad_request", "bad_json")

    async def test_tooDeep(self) -> None:
        """
        JSON the parser accepts but nested deeper than the codec allows is
        400 too_deep.
        """
        await self.startDemo()
        token = await self.login()
        raw = b"[" + b"[" * 300 + b"]" * 300 + b", 1]"
        reply = await self.request("POST", "/api/call/add", raw=raw, token=token)
        self.assertError(reply, 400, "bad_request", "too_deep")

    async def test_badShape(self) -> None:
        """
        A body that is not an array or an object, unknown body keys, args
        that are not a list, kwargs that are not an object and keyword names
        that are not identifiers (or collide with callRemote's own) are 400
        bad_shape.
        """
        await self.startDemo()
        token = await self.login()
        bodies: list[Any] = [
            5,
            "args",
            True,
            {"args": [1, 2], "extra": 1},
            {"arguments": [1, 2]},
            {"args": {"a": 1}},
            {"args": "12"},
            {"kwargs": [1, 2]},
            {"kwargs": {"not an identifier": 1}},
            {"args": [1, 2], "kwargs": {"_timeout": 5}},
            {"args": [1, 2], "kwargs": {"_name": "add"}},
            {"args": [1, 2], "kwargs": {"self": 1}},
        ]
        for body in bodies:
            reply = await self.request("POST", "/api/call/add", body, token=token)
            self.assertError(reply, 400, "bad_request", "bad_shape")
        self.assertEqual(await self.call(token, "add", 1, 2), 3)

    async def test_badLoginBody(self) -> None:
        """
        Login bodies of the wrong shape are 400 bad_login.
        """
        await self.startDemo()
        for body in (NO_BODY, [1], {"username": "alice"}, {"user": "alice", "password": "x"},
                     {"anonymous": "yes"}, {"username": 1, "password": 2}):
            reply = await self.request("POST", "/api/login", body)
            self.assertError(reply, 400, "bad_request", "bad_login")
        self.assertEqual(self.realm.sessions, 0)

    async def test_unknownTag(self) -> None:
        """
        An object with an unknown $-key is 400 unknown_tag (including
        C{$unpersistable}, which only ever travels out).
        """
        await self.startDemo()
        token = await self.login()
        for tag in ({"$nope": 1}, {"$unpersistable": "x"}, {"a": 1, "$": 2}):
            reply = await self.request("POST", "/api/call/store", ["k", tag], token=token)
            error = self.assertError(reply, 400, "bad_request")
            self.assertIn(error["code"], {"unknown_tag", "bad_value"})
        reply = await self.request("POST", "/api/call/store", ["k", {"$nope": 1}], token=token)
        self.assertError(reply, 400, "bad_request", "unknown_tag")
        self.assertEqual(await self.call(token, "list_keys"), [])

    async def test_malformedTags(self) -> None:
        """
        A malformed payload for each tag is 400 bad_value, and nothing is
        stored.
        """
        await self.startDemo()
        token = await self.login()
        seen = set()
        for tagged in MALFORMED_TAGS:
            reply = await self.request("POST", "/api/call/store", ["k", tagged], token=token)
            error = self.assertError(reply, 400, "bad_request", "bad_value")
            self.assertNotEqual(error["message"], "")
            seen.update(key for key in tagged if key.startswith("$"))
        self.assertEqual(
            seen,
            {"$bytes", "$tuple", "$set", "$frozenset", "$datetime", "$date", "$time",
             "$timedelta", "$decimal", "$float", "$dict", "$ref", "$cache", "$copy"},
        )
        self.assertEqual(await self.call(token, "list_keys"), [])

    async def test_badArguments(self) -> None:
        """
        A call with the wrong number or names of arguments is 400
        bad_arguments.
        """
        await self.startDemo()
        token = await self.login()
        for body in ([1], [1, 2, 3], {"args": [1, 2], "kwargs": {"c": 3}},
                     {"args": [1, 2], "kwargs": {"a": 3}}):
            reply = await self.request("POST", "/api/call/add", body, token=token)
            error = self.assertError(reply, 400, "bad_request", "bad_arguments")
            self.assertEqual(error["remote_type"], "pb.errors.ArgumentError")

    async def test_unsendableValues(self) -> None:
        """
        Values PB cannot carry are refused with a 4xx, not a 500: an unknown
        Copyable type, a lone surrogate, an integer past 448 bits.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request(
            "POST", "/api/call/store", ["k", {"$copy": "os.system", "state": {}}], token=token
        )
        self.assertError(reply, 400, "bad_request", "unsafe_value")
        reply = await self.request("POST", "/api/call/store", raw=b'["k", "\\ud800"]', token=token)
        self.assertError(reply, 400, "bad_request", "unsendable_value")
        reply = await self.request("POST", "/api/call/add", [2**500, 1], token=token)
        self.assertError(reply, 413, "payload_too_large", "value_too_large")
        self.assertEqual(await self.call(token, "add", 2**440, 1), 2**440 + 1)

    async def test_unauthorized(self) -> None:
        """
        No token, a malformed or unknown token, and bad credentials are 401
        with a Bearer challenge.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request("POST", "/api/call/add", [1, 2])
        self.assertError(reply, 401, "unauthorized", "no_token")
        self.assertEqual(
            reply.headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="pb-gateway"']
        )
        for bad in (token + "x", token.split(".")[0], "gw-nobody.secret", "x"):
            reply = await self.request("POST", "/api/call/add", [1, 2], token=bad)
            self.assertError(reply, 401, "unauthorized", "bad_token")
        reply = await self.request(
            "POST", "/api/call/add", [1, 2], headers={b"authorization": [b"Basic YWxpY2U6cA=="]}
        )
        self.assertError(reply, 401, "unauthorized", "no_token")
        for credentials in ({"username": "alice", "password": "wrong"},
                            {"username": "mallory", "password": "password"}):
            reply = await self.request("POST", "/api/login", credentials)
            self.assertError(reply, 401, "unauthorized", "login_failed")
        self.assertEqual(self.realm.sessions, 1)

    async def test_expiredSession(self) -> None:
        """
        A session idle longer than sessionIdleTimeout ends (the avatar logs
        out on the broker) and its token is then 401 session_ended; use
        within the timeout keeps it alive.
        """
        await self.startDemo(sessionIdleTimeout=0.3)
        token = await self.login()
        for _ in range(3):
            await self.sleep(0.15)
            self.assertEqual(await self.call(token, "add", 1, 1), 2)
        await self.sleep(0.5)
        await self.eventually(lambda: self.realm.sessions == 0, "the expired avatar logged out")
        reply = await self.request("POST", "/api/call/add", [1, 2], token=token)
        self.assertError(reply, 401, "unauthorized", "session_ended")

    async def test_forbidden(self) -> None:
        """
        Against a portal broker, /api/root/* is 403: the root object is the
        login machinery.
        """
        await self.startDemo()
        for method in ("login", "loginAnonymous", "anything", "add"):
            reply = await self.request("POST", f"/api/root/{method}", ["alice"])
            self.assertError(reply, 403, "forbidden", "login_root")
        self.assertEqual(self.realm.sessions, 0)

    async def test_notFound(self) -> None:
        """
        Unknown routes, unknown or malformed method names, unknown handles
        and another session's handles are all 404.
        """
        await self.startDemo()
        alice = await self.login()
        bob = await self.login(BOB)
        for method, path in [("GET", "/api/nope"), ("POST", "/api/nope"), ("POST", "/api/call/"),
                             ("GET", "/api/refs/x/y/z"), ("DELETE", "/api/login/x")]:
            reply = await self.request(method, path, token=alice)
            self.assertError(reply, 404, "not_found", "no_route")
        for path in ("/api/call/nope", "/api/call/no%20such", "/api/call/1add"):
            reply = await self.request("POST", path, [], token=alice)
            self.assertError(reply, 404, "not_found", "no_such_method")
        bobCounter = (await self.call(bob, "counter"))["$ref"]
        bobBoard = (await self.call(bob, "board"))["$cache"]
        for method, path in [
            ("POST", "/api/refs/rnope/increment"),
            ("DELETE", "/api/refs/rnope"),
            ("GET", "/api/caches/cnope"),
            ("DELETE", "/api/caches/cnope"),
            ("POST", f"/api/refs/{bobCounter}/increment"),
            ("DELETE", f"/api/refs/{bobCounter}"),
            ("GET", f"/api/caches/{bobBoard}"),
            ("DELETE", f"/api/caches/{bobBoard}"),
        ]:
            reply = await self.request(method, path, token=alice)
            self.assertError(reply, 404, "not_found", "unknown_handle")
        for argument in ({"$ref": bobCounter}, {"$cache": bobBoard}):
            reply = await self.request("POST", "/api/call/store", ["k", argument], token=alice)
            self.assertError(reply, 404, "not_found", "unknown_handle")
        counterRef = await self.request("POST", f"/api/refs/{bobCounter}/increment", token=bob)
        self.assertEqual(counterRef.body, {"result": 1})
        reply = await self.request("POST", f"/api/refs/{bobCounter}/nope", token=bob)
        self.assertError(reply, 404, "not_found", "no_such_method")

    async def test_methodNotAllowed(self) -> None:
        """
        A known route with the wrong HTTP method is 405 with an Allow header.
        """
        await self.startDemo()
        for method, path, allow in [
            ("GET", "/api/login", b"POST"),
            ("GET", "/api/call/add", b"POST"),
            ("PUT", "/api/call/add", b"POST"),
            ("GET", "/api/refs/r1", b"DELETE"),
            ("POST", "/api/caches/c1", b"DELETE"),
            ("POST", "/healthz", b"GET"),
            ("DELETE", "/metrics", b"GET"),
        ]:
            reply = await self.request(method, path, [])
            self.assertError(reply, 405, "method_not_allowed", "method_not_allowed")
            self.assertIn(allow, reply.headers.getRawHeaders(b"allow")[0], (method, path))

    async def test_payloadTooLarge(self) -> None:
        """
        A body over maxBodySize is 413, whether its length is announced or it
        arrives chunked; a body under the limit is served.
        """
        await self.startDemo(maxBodySize=1024)
        token = await self.login()
        padded = b"[1," + b" " * 1000 + b"2]"
        self.assertLess(len(padded), 1024)
        reply = await self.request("POST", "/api/call/add", raw=padded, token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": 3}))
        big = b"[1," + b" " * 2000 + b"2]"
        reply = await self.request("POST", "/api/call/add", raw=big, token=token)
        self.assertError(reply, 413, "payload_too_large", "body_too_large")
        reply = await self.request("POST", "/api/call/add", raw=ChunkedBody(big), token=token)
        self.assertError(reply, 413, "payload_too_large", "body_too_large")
        reply = await self.request("POST", "/api/call/add", raw=ChunkedBody(padded), token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": 3}))

    async def test_remoteExceptions(self) -> None:
        """
        pb.Error from the remote method is 422; other exceptions are 500
        remote_exception (never 200); the session survives both.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request("POST", "/api/call/setDone", ["404"], token=token)
        self.assertError(reply, 422, "remote_error", "pb.errors.Error")
        reply = await self.request("POST", "/api/call/retrieve", ["missing"], token=token)
        error = self.assertError(reply, 500, "remote_exception", "builtins.KeyError")
        self.assertIn("missing", error["message"])
        self.assertEqual(await self.call(token, "add", 1, 2), 3)
        self.flushLoggedErrors(KeyError)

    async def test_brokerUnreachable(self) -> None:
        """
        A gateway whose broker endpoint is a closed port answers 503 to
        logins, root calls and /readyz, yet stays healthy.
        """
        port = await serverFromString(reactor, LOOPBACK).listen(Factory.forProtocol(Protocol))
        closed = port.getHost().port
        await port.stopListening()
        await self.startGateway(closed, connectTimeout=2.0)
        reply = await self.request("POST", "/api/login", ALICE)
        self.assertError(reply, 503, "broker_unavailable")
        reply = await self.request("POST", "/api/root/add", [1, 2])
        self.assertError(reply, 503, "broker_unavailable")
        reply = await self.request("GET", "/readyz")
        self.assertError(reply, 503, "broker_unavailable")
        reply = await self.request("GET", "/api/describe")
        self.assertError(reply, 503, "broker_unavailable")
        self.assertEqual((await self.request("GET", "/healthz")).status, 200)

    async def test_brokerLost(self) -> None:
        """
        When the broker goes away under a session, its calls are 503.
        """
        await self.startDemo()
        token = await self.login()
        await self.broker.stopService()
        await self.eventually(lambda: not self.gateway.table.sessions, "the session ended")
        reply = await self.request("POST", "/api/call/add", [1, 2], token=token)
        self.assertError(reply, 503, "broker_unavailable", "session_lost")

    async def test_callTimeout(self) -> None:
        """
        A call the broker never answers is 504 after callTimeout; the
        connection stays usable.
        """
        broker = await self.startBroker(PlainRoot())
        assert broker.port is not None
        await self.startGateway(broker.port.getHost().port, callTimeout=0.3)
        started = time.monotonic()
        reply = await self.request("POST", "/api/root/hang", [])
        self.assertError(reply, 504, "timeout")
        self.assertGreaterEqual(time.monotonic() - started, 0.25)
        self.assertEqual(await self.call(None, "ping", root=True), "pong")
        metrics = (await self.request("GET", "/metrics")).raw.decode()
        self.assertIn('pbgw_pb_calls_total{outcome="timeout"} 1', metrics)

    async def test_plainRootBroker(self) -> None:
        """
        In front of a plain root: login is 401 no_login, handles cannot be
        passed to root calls (400 no_session), and a root method returning a
        reference is 502 unmappable_result.
        """
        broker = await self.startBroker(PlainRoot())
        assert broker.port is not None
        await self.startGateway(broker.port.getHost().port)
        reply = await self.request("POST", "/api/login", ALICE)
        self.assertError(reply, 401, "unauthorized", "no_login")
        reply = await self.request("POST", "/api/root/ping", [{"$ref": "r1"}])
        self.assertError(reply, 400, "bad_request", "no_session")
        reply = await self.request("POST", "/api/root/counter")
        self.assertError(reply, 502, "unmappable_result", "no_session")
        self.assertEqual(await self.call(None, "ping", root=True), "pong")

    async def test_tooManyHandles(self) -> None:
        """
        A session holding maxHandles handles gets 429 for a call returning
        another; releasing one makes room.
        """
        await self.startDemo(maxHandles=2)
        token = await self.login()
        counter = (await self.call(token, "counter"))["$ref"]
        await self.call(token, "board")
        reply = await self.request("POST", "/api/call/stats", token=token)
        self.assertError(reply, 429, "too_many_requests", "too_many_handles")
        self.assertEqual(await self.call(token, "add", 1, 2), 3)
        await self.request("DELETE", f"/api/refs/{counter}", token=token)
        stats = await self.call(token, "stats")
        self.assertEqual(stats["type"], "pb.live.LiveDict")

    async def test_randomBodies(self) -> None:
        """
        Random bytes and random JSON posted to /api/call/add never get a 5xx
        other than the remote method's own exception, every error is the
        documented JSON, and the session still works afterwards.
        """
        await self.startDemo()
        token = await self.login()
        tags = st.sampled_from(
            ["$bytes", "$tuple", "$set", "$frozenset", "$datetime", "$date", "$time",
             "$timedelta", "$decimal", "$float", "$dict", "$ref", "$cache", "$copy", "$x",
             "state", "args", "kwargs", "a", "b"]
        )
        scalars = (
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=8)
        )
        values = st.recursive(
            scalars,
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(tags | st.text(max_size=3), inner, max_size=2),
            max_leaves=8,
        )
        keywords = st.sampled_from(["a", "b", "c", "self", "_name", "_timeout", "pbanswer"])
        bodies = (
            st.binary(max_size=64)
            | values.map(lambda v: json.dumps(v).encode())
            | st.lists(values, max_size=3).map(lambda v: json.dumps(v).encode())
            | st.lists(values, min_size=2, max_size=2).map(lambda v: json.dumps(v).encode())
            | st.tuples(values, values).map(
                lambda v: json.dumps({"args": [v[0]], "kwargs": {"b": v[1]}}).encode()
            )
            | st.fixed_dictionaries(
                {"args": st.lists(values, max_size=3)},
                optional={"kwargs": st.dictionaries(keywords, values, max_size=2)},
            ).map(lambda v: json.dumps(v).encode())
        )

        statuses: list[int] = []

        def post(raw: bytes) -> Reply:
            reply: Reply = blockingCallFromThread(
                reactor,
                lambda: Deferred.fromCoroutine(
                    self.request("POST", "/api/call/add", raw=raw, token=token)
                ),
            )
            return reply

        @settings(max_examples=80, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(bodies)
        def check(raw: bytes) -> None:
            reply = post(raw)
            statuses.append(reply.status)
            self.assertNotIn(b"Traceback", reply.raw)
            if reply.status == 200:
                self.assertEqual(set(reply.body), {"result"})
                return
            error = reply.body["error"]
            self.assertLessEqual({"type", "message", "code"}, set(error))
            if reply.status >= 500:
                self.assertEqual((reply.status, error["type"]), (500, "remote_exception"))
            else:
                self.assertIn(reply.status, {400, 404, 413, 422})

        await deferToThread(check)
        self.assertGreaterEqual(len(statuses), 80)
        self.assertEqual(await self.call(token, "add", 1, 2), 3)
        self.flushLoggedErrors(TypeError)


# -- every value tag through the gateway -----------------------------------


class ValueTagTests(DemoTestCase):
    """
    Each tagged value stored on the demo broker arrives as the Python value
    it names and comes back unchanged (tuples as arrays).
    """

    async def test_scalarTags(self) -> None:
        """
        $bytes, $datetime, $date, $time, $timedelta, $decimal and $float
        round-trip, and the broker holds the named Python types.
        """
        await self.startDemo()
        token = await self.login()
        cases: list[tuple[Any, Callable[[Any], bool]]] = [
            ({"$bytes": "AP8Q"}, lambda v: v == b"\x00\xff\x10"),
            ({"$bytes": ""}, lambda v: v == b""),
            ({"$datetime": "2024-02-29T12:34:56.789012"},
             lambda v: v == datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)),
            ({"$date": "2024-02-29"}, lambda v: type(v) is datetime.date),
            ({"$time": "23:59:58.000001"}, lambda v: v == datetime.time(23, 59, 58, 1)),
            ({"$timedelta": 90061.5}, lambda v: v == datetime.timedelta(days=1, seconds=3661.5)),
            ({"$timedelta": -1.0}, lambda v: v == datetime.timedelta(seconds=-1)),
            ({"$decimal": "1.10"}, lambda v: str(v) == "1.10" and type(v) is decimal.Decimal),
            ({"$decimal": "-12345678901234567890.000000001"},
             lambda v: v == decimal.Decimal("-12345678901234567890.000000001")),
            ({"$float": "nan"}, lambda v: math.isnan(v)),
            ({"$float": "inf"}, lambda v: v == math.inf),
            ({"$float": "-inf"}, lambda v: v == -math.inf),
            (1.5, lambda v: v == 1.5),
            (2**400, lambda v: v == 2**400),
            ("é ☃ \U0001f600", lambda v: v == "é ☃ \U0001f600"),
            (None, lambda v: v is None),
        ]
        avatar = self.serverAvatar("alice")
        for index, (tagged, check) in enumerate(cases):
            key = f"k{index}"
            await self.call(token, "store", key, tagged)
            self.assertTrue(check(avatar.data[key]), (tagged, avatar.data[key]))
            self.assertEqual(await self.call(token, "retrieve", key), tagged)

    async def test_containerTags(self) -> None:
        """
        $tuple (back as an array), $set, $frozenset and $dict (int keys,
        $-keys) round-trip; plain string-keyed $dicts come back as objects.
        """
        await self.startDemo()
        token = await self.login()
        avatar = self.serverAvatar("alice")
        cases: list[tuple[Any, Any, Any]] = [
            ({"$tuple": [1, "a", {"$tuple": []}]}, (1, "a", ()), [1, "a", []]),
            ({"$set": [3]}, {3}, {"$set": [3]}),
            ({"$set": []}, set(), {"$set": []}),
            ({"$frozenset": ["x"]}, frozenset({"x"}), {"$frozenset": ["x"]}),
            ({"$set": [{"$frozenset": [1]}]}, {frozenset({1})}, {"$set": [{"$frozenset": [1]}]}),
            ({"$dict": [[1, "one"], [2, "two"]]}, {1: "one", 2: "two"},
             {"$dict": [[1, "one"], [2, "two"]]}),
            ({"$dict": [["$ref", 1], ["plain", 2]]}, {"$ref": 1, "plain": 2},
             {"$dict": [["$ref", 1], ["plain", 2]]}),
            ({"$dict": [[{"$tuple": [1, 2]}, None]]}, {(1, 2): None},
             {"$dict": [[[1, 2], None]]}),
            ({"$dict": [["a", 1]]}, {"a": 1}, {"a": 1}),
            ({"nested": [{"$bytes": "AA=="}, {"$set": [True]}]},
             {"nested": [b"\x00", {True}]}, {"nested": [{"$bytes": "AA=="}, {"$set": [True]}]}),
        ]
        for index, (tagged, python, back) in enumerate(cases):
            key = f"k{index}"
            await self.call(token, "store", key, tagged)
            self.assertEqual(avatar.data[key], python)
            self.assertEqual(type(avatar.data[key]), type(python))
            self.assertEqual(await self.call(token, "retrieve", key), back)

    async def test_tupleKeyComesBackAsArrayKey(self) -> None:
        """
        A $dict with a tuple key comes back with the key as an array (tuples
        go out untagged) -- which cannot be sent back as a key.
        """
        await self.startDemo()
        token = await self.login()
        await self.call(token, "store", "t", {"$dict": [[{"$tuple": [1]}, 2]]})
        back = await self.call(token, "retrieve", "t")
        self.assertEqual(back, {"$dict": [[[1], 2]]})
        reply = await self.request("POST", "/api/call/store", ["u", back], token=token)
        self.assertError(reply, 400, "bad_request", "bad_value")

    async def test_copyTag(self) -> None:
        """
        $copy of a type the broker knows builds that type there and comes
        back as the same $copy (the gateway mirrors it generically).
        """
        await self.startDemo()
        token = await self.login()
        shared = {"$copy": "pb.demo.SharedData",
                  "state": {"name": "n", "value": {"$tuple": [1, {"$decimal": "2.5"}]}}}
        await self.call(token, "store", "c", shared)
        stored = self.serverAvatar("alice").data["c"]
        self.assertIsInstance(stored, SharedData)
        self.assertEqual(stored.value, (1, decimal.Decimal("2.5")))
        self.assertEqual(
            await self.call(token, "retrieve", "c"),
            {"$copy": "pb.demo.SharedData",
             "state": {"name": "n", "value": [1, {"$decimal": "2.5"}]}},
        )

    async def test_refTag(self) -> None:
        """
        A $ref argument passes the referenced object itself; retrieving it
        gives back the same handle.
        """
        await self.startDemo()
        token = await self.login()
        ref = await self.call(token, "counter")
        await self.call(token, "store", "r", ref)
        avatar = self.serverAvatar("alice")
        self.assertIs(avatar.data["r"], avatar.perspective_counter())
        self.assertEqual(await self.call(token, "retrieve", "r"), ref)

    async def test_cacheTag(self) -> None:
        """
        A $cache argument passes the cached object itself; retrieving it
        gives back the same cache handle with its current state.
        """
        await self.startDemo()
        token = await self.login()
        handle = (await self.call(token, "board"))["$cache"]
        await self.call(token, "store", "b", {"$cache": handle})
        self.assertIs(self.serverAvatar("alice").data["b"], self.realm.board)
        taskId = await self.call(token, "addTask", "water plants")
        for _ in range(250):
            snapshot = (await self.request("GET", f"/api/caches/{handle}", token=token)).body
            if snapshot["seq"] > 0:
                break
            await self.sleep(0.02)
        back = await self.call(token, "retrieve", "b")
        self.assertEqual(back, snapshot)
        self.assertEqual(back["$cache"], handle)
        self.assertEqual(back["type"], "pb.live.LiveDict")
        self.assertEqual(back["state"][taskId]["text"], "water plants")
        self.assertEqual(back["seq"], 1)


# -- the call route without Klein -----------------------------------------------


class HangingAvatar(pb.Avatar):
    """
    A perspective whose C{hang} answers only when the test says so.
    """

    def __init__(self) -> None:
        self.hanging: list[Deferred[None]] = []

    def perspective_hang(self) -> Deferred[None]:
        answer: Deferred[None] = Deferred()
        self.hanging.append(answer)
        return answer


class HangingRealm(pb.Realm):
    def __init__(self) -> None:
        super().__init__()
        self.avatar = HangingAvatar()

    def avatarFactory(self, avatarId: Any) -> HangingAvatar:  # type: ignore[override]
        return self.avatar


class CallRouteTests(DemoTestCase):
    """
    C{POST /api/call/<method>} is answered without Klein (L{GatewayResource}),
    with the same answers; everything else still goes through Klein.
    """

    def countKleinRequests(self) -> list[bytes]:
        """
        The paths of the requests the Klein application renders from now on.
        """
        seen: list[bytes] = []
        resource = self.gateway.site.resource
        render = resource.klein.render

        def counting(request: Any) -> Any:
            seen.append(request.path)
            return render(request)

        resource.klein.render = counting
        return seen

    async def test_callWithoutKlein(self) -> None:
        """
        A call with a plain method name is answered, with its headers and
        metrics, without Klein; malformed names and other HTTP methods go to
        Klein and get its answers.
        """
        await self.startDemo()
        token = await self.login()
        seen = self.countKleinRequests()
        reply = await self.request("POST", "/api/call/add", [5, 3], token=token)
        self.assertEqual((reply.status, reply.body), (200, {"result": 8}))
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(reply.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        reply = await self.request("POST", "/api/call/divide", {"args": [1, 0]}, token=token)
        self.assertError(reply, 500, "remote_exception", "builtins.ValueError")
        self.flushLoggedErrors(ValueError)
        reply = await self.request("POST", "/api/call/add", [1, 2])
        self.assertError(reply, 401, "unauthorized")
        self.assertEqual(reply.headers.getRawHeaders(b"www-authenticate"),
                         [b'Bearer realm="pb-gateway"'])
        self.assertEqual(seen, [])
        reply = await self.request("POST", "/api/call/1add", [], token=token)
        self.assertError(reply, 404, "not_found", "no_such_method")
        reply = await self.request("GET", "/api/call/add", token=token)
        self.assertError(reply, 405, "method_not_allowed")
        self.assertEqual(seen, [b"/api/call/1add", b"/api/call/add"])
        metrics = (await self.request("GET", "/metrics")).raw.decode()
        self.assertIn('pbgw_http_requests_total{method="POST",route="call",status="200"} 1',
                      metrics)
        self.assertIn('pbgw_http_requests_total{method="POST",route="call",status="401"} 1',
                      metrics)

    async def test_clientGoneMidCall(self) -> None:
        """
        A client that disconnects while its call is waiting for the broker
        cancels the call; nothing is written or logged for it, and the
        gateway serves the next one.
        """
        realm = HangingRealm()
        broker = BrokerService(reactor, LOOPBACK, realm, anonymous=True)
        broker.startService()
        self.addCleanup(self._stop, broker)
        await broker.whenListening()
        assert broker.port is not None
        await self.startGateway(broker.port.getHost().port)
        token = await self.login({"anonymous": True})
        host, port = self.url[len("http://"):].split(":")
        body = b"[]"
        request = (
            b"POST /api/call/hang HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        received: list[bytes] = []

        class Client(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(request)

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        from twisted.internet.endpoints import TCP4ClientEndpoint

        client = await TCP4ClientEndpoint(reactor, host, int(port)).connect(
            Factory.forProtocol(Client))
        await self.eventually(lambda: realm.avatar.hanging, "the broker has the call")
        self.assertEqual(self.gateway.table.waitingCalls(), 1)
        client.transport.abortConnection()
        await self.eventually(lambda: self.gateway.table.waitingCalls() == 0,
                              "the call is given up")
        realm.avatar.hanging[0].callback(None)
        await self.sleep(0.05)
        self.assertEqual(received, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        reply = await self.request("POST", "/api/call/nope", [], token=token)
        self.assertError(reply, 404, "not_found", "no_such_method")

    async def test_refusedCopyState(self) -> None:
        """
        A copy whose state the broker's class cannot take (not an object) is
        400 C{unsafe_value}, and the session goes on.
        """
        await self.startDemo()
        token = await self.login()
        reply = await self.request("POST", "/api/call/store",
                                   ["k", {"$copy": "pb.demo.SharedData", "state": 7}],
                                   token=token)
        error = self.assertError(reply, 400, "bad_request", "unsafe_value")
        self.assertEqual(error["message"],
                         "pb.demo.SharedData expects a dictionary state, not int")
        self.assertEqual(error["remote_type"], "pb.errors.UnsafeValue")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(await self.call(token, "add", 1, 2), 3)


class BrokerThrottleTests(GatewayTestCase):
    """
    The broker's own login lockout reaches web users as 429.
    """

    async def test_brokerLockout(self) -> None:
        """
        With the broker stricter than the gateway, the broker's
        L{pb.LoginThrottled} is answered 429 C{login_throttled}.
        """
        broker = BrokerService(reactor, LOOPBACK, DemoRealm(clock=reactor),
                               options=pb.BrokerOptions(loginMaxFailures=2))
        broker.startService()
        self.addCleanup(self._stop, broker)
        port = (await broker.whenListening()).getHost().port
        await self.startGateway(port, loginMaxFailures=50)
        for _ in range(2):
            reply = await self.request("POST", "/api/login", {"username": "alice",
                                                              "password": "wrong"})
            self.assertError(reply, 401, "unauthorized", "login_failed")
        reply = await self.request("POST", "/api/login", ALICE)
        error = self.assertError(reply, 429, "too_many_requests", "login_throttled")
        self.assertIn("too many failed logins", error["message"])
        self.assertEqual(await self.login(BOB) is not None, True)
