"""
Security tests: who can reach what through the gateway, and every limit.

A session reaches only its own handles; tokens and handles are unguessable,
compared in constant time and expire; browsers from other origins cannot
open WebSockets and get no CORS grant; the dashboard is served with a content
security policy; no traceback reaches a client unless the gateway runs with
C{debug}; a broker refuses a credential file others may read; and each limit
(body, frame, in-flight requests, handles, sessions per user, connections,
login attempts) answers with its documented error.

The broker and gateway run in this process on loopback port 0 (so that a
test can look inside them); the clients are C{http.client}, raw sockets and
the C{websockets} sync client, run in threads (C{deferToThread}) while the
reactor serves.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import unittest
from pathlib import Path
from typing import Any

from test_faults import ALICE, BOB, REPO, Deployment, Reply, Socket, fetch, login, waitFor
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

import gateway.rest
import gateway.sessions
import pb
import pb.introspect
from gateway.rest import CONTENT_SECURITY_POLICY
from gateway.service import GatewayService
from gateway.sessions import GatewayOptions
from pb.credentials import UserFile
from pb.demo import DemoRealm
from pb.service import BrokerService, ServiceError, makePortal

LOOPBACK = "tcp:0:interface=127.0.0.1"
ANONYMOUS = {"anonymous": True}


class HoldingRoot(pb.Root):
    """
    A plain root whose C{hold} calls are answered when the test says so.
    """

    def __init__(self) -> None:
        self.held: list[Deferred[str]] = []

    def remote_hold(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.held.append(d)
        return d

    def remote_add(self, a: int, b: int) -> int:
        return a + b


class GatewayCase(TestCase):
    """
    A broker and a gateway in this process; blocking clients in threads.
    """

    url: str

    async def start(self, service: Any = None, **options: Any) -> str:
        self.realm = service if service is not None else DemoRealm(clock=reactor)
        broker = BrokerService(reactor, LOOPBACK, self.realm)
        broker.startService()
        self.addCleanup(self._stop, broker)
        port = (await broker.whenListening()).getHost().port
        self.gateway = GatewayService(
            reactor, LOOPBACK, GatewayOptions(broker=f"tcp:host=127.0.0.1:port={port}", **options)
        )
        self.gateway.startService()
        self.addCleanup(self._stop, self.gateway)
        self.port = (await self.gateway.whenListening()).getHost().port
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def _stop(self, service: Any) -> None:
        if service is getattr(self, "gateway", None):
            # Let the server side of every client connection close first,
            # and autobahn's batched timers (close handshakes) run out.
            await self.until(lambda: not self.gateway.connections.openConnections(), 5)
            await self.until(lambda: not any(
                "_BatchedTimer" in repr(call) for call in reactor.getDelayedCalls()), 5)
        if service.running:
            await service.stopService()

    async def fetch(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await deferToThread(fetch, self.url, method, path, body, **kwargs)

    async def login(self, credentials: dict[str, Any] = ALICE, **kwargs: Any) -> str:
        reply = await self.fetch("POST", "/api/login", credentials, **kwargs)
        self.assertEqual(reply.status, 200, reply)
        return str(reply.body["token"])

    async def call(self, token: str, method: str, *args: Any) -> Any:
        reply = await self.fetch("POST", f"/api/call/{method}", list(args), token=token)
        self.assertEqual(reply.status, 200, reply)
        return reply.body["result"]

    async def socket(self, **kwargs: Any) -> Socket:
        ws: Socket = await deferToThread(Socket, f"ws://127.0.0.1:{self.port}/ws", **kwargs)
        self.addCleanup(deferToThread, ws.close)
        return ws

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("condition not reached")
            await deferLater(reactor, 0.02, lambda: None)

    def assertError(self, reply: Reply, status: int, code: str) -> dict[str, Any]:
        """
        C{reply} is the documented JSON error, with no traceback.
        """
        self.assertEqual((reply.status, reply.errorCode), (status, code), reply)
        self.assertNotIn(b"Traceback", reply.raw)
        error: dict[str, Any] = reply.body["error"]
        return error


# -- who reaches what --------------------------------------------------------------


class ScopeTests(GatewayCase):
    """
    Handles belong to the session whose call returned them.
    """

    async def test_otherSessionsHandles(self) -> None:
        """
        Another user's session, and another anonymous session sharing the
        same PB login, get 404 C{unknown_handle} for a session's reference
        and cache handles by every route (call, release, state, event
        stream, passing them as arguments, and the WebSocket's rpc.call,
        rpc.release and rpc.subscribe); the owner still uses them.
        """
        await self.start()
        alice = await self.login(ALICE)
        ref = (await self.call(alice, "counter"))["$ref"]
        cache = (await self.call(alice, "board"))["$cache"]
        guest = await self.login(ANONYMOUS)
        guestRef = (await self.call(guest, "counter"))["$ref"]
        others = [await self.login(BOB), await self.login(ANONYMOUS)]
        attempts = [
            ("POST", f"/api/refs/{ref}/increment", [1]),
            ("DELETE", f"/api/refs/{ref}", None),
            ("GET", f"/api/caches/{cache}", None),
            ("GET", f"/api/caches/{cache}/events", None),
            ("DELETE", f"/api/caches/{cache}", None),
            ("POST", "/api/call/store", ["k", {"$ref": ref}]),
            ("POST", "/api/call/store", ["k", {"$cache": cache}]),
        ]
        for token in others:
            for method, path, body in attempts:
                reply = await self.fetch(method, path, body, token=token)
                self.assertError(reply, 404, "unknown_handle")
            reply = await self.fetch("POST", f"/api/refs/{guestRef}/increment", [1], token=token)
            self.assertError(reply, 404, "unknown_handle")
        ws = await self.socket()
        await deferToThread(ws.call, "rpc.login", BOB)
        for method, params in [
            ("rpc.call", {"ref": ref, "method": "increment", "args": [1]}),
            ("rpc.release", {"ref": ref}),
            ("rpc.release", {"cache": cache}),
            ("rpc.subscribe", {"cache": cache}),
            ("store", ["k", {"$ref": ref}]),
        ]:
            response = await deferToThread(ws.request, method, params)
            self.assertEqual(response["error"]["code"], -32003, response)
            self.assertEqual(response["error"]["data"]["code"], "unknown_handle")
        reply = await self.fetch("POST", f"/api/refs/{ref}/increment", [2], token=alice)
        self.assertEqual(reply.body, {"result": 2})
        reply = await self.fetch("GET", f"/api/caches/{cache}", token=alice)
        self.assertEqual(reply.status, 200)
        reply = await self.fetch("POST", f"/api/refs/{guestRef}/increment", [3], token=guest)
        self.assertEqual(reply.body, {"result": 3})

    async def test_handlesUnguessable(self) -> None:
        """
        Handles carry 96 random bits (16 URL-safe characters after their
        kind letter) and never repeat.
        """
        await self.start()
        token = await self.login()
        handles = set()
        for _ in range(40):
            handle = (await self.call(token, "counter"))["$ref"]
            self.assertRegex(handle, r"\Ar[A-Za-z0-9_-]{16,}\Z")
            handles.add(handle)
            await self.fetch("DELETE", f"/api/refs/{handle}", token=token)
        self.assertEqual(len(handles), 40)


class TokenTests(GatewayCase):
    """
    Tokens are unguessable, checked in constant time, and expire.
    """

    async def test_tokensUnguessable(self) -> None:
        """
        A token is C{NAME-ID.SECRET} with a 192-bit secret (32 URL-safe
        characters); logins never get the same one, nor a cookie.
        """
        await self.start()
        tokens = set()
        for _ in range(10):
            reply = await self.fetch("POST", "/api/login", ALICE)
            self.assertIsNone(reply.headers.get("set-cookie"))
            token = reply.body["token"]
            self.assertRegex(token, r"\Agw-[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]{32}\Z")
            tokens.add(token)
            await self.fetch("POST", "/api/logout", token=token)
        self.assertEqual(len(tokens), 10)

    async def test_constantTimeComparison(self) -> None:
        """
        The secret of a token is checked with C{hmac.compare_digest}, for a
        right and a wrong secret alike, and a wrong secret is answered like
        an unknown session (nothing tells a session exists).
        """
        await self.start()
        token = await self.login()
        compared: list[tuple[Any, Any]] = []
        real = gateway.sessions.hmac.compare_digest

        def recording(a: Any, b: Any) -> bool:
            compared.append((a, b))
            return real(a, b)

        self.patch(gateway.sessions.hmac, "compare_digest", recording)
        sessionID, _, secret = token.partition(".")
        wrong = "A" * len(secret)
        reply = await self.fetch("POST", "/api/call/add", [1, 2], token=f"{sessionID}.{wrong}")
        unknown = await self.fetch("POST", "/api/call/add", [1, 2], token=f"gw-nosuchsession.{wrong}")
        self.assertEqual(self.assertError(reply, 401, "bad_token"),
                         self.assertError(unknown, 401, "bad_token"))
        self.assertEqual(compared, [(secret, wrong)])
        reply = await self.fetch("POST", "/api/call/add", [1, 2], token=token)
        self.assertEqual(reply.body, {"result": 3})
        self.assertEqual(compared[-1], (secret, secret))

    async def test_tokensExpire(self) -> None:
        """
        A token used within the idle timeout stays valid; left idle, its
        session ends (401 C{session_ended}) and the broker logs its avatar
        out.
        """
        await self.start(sessionIdleTimeout=1.0)
        token = await self.login()
        for _ in range(4):
            await deferLater(reactor, 0.4, lambda: None)
            self.assertEqual(await self.call(token, "add", 1, 1), 2)
        self.assertEqual(self.realm.sessions, 1)
        await deferLater(reactor, 1.6, lambda: None)
        reply = await self.fetch("POST", "/api/call/add", [1, 1], token=token)
        self.assertError(reply, 401, "session_ended")
        await self.until(lambda: self.realm.sessions == 0)


class BrowserTests(GatewayCase):
    """
    What a web page from another site can do: nothing.
    """

    async def test_webSocketOrigins(self) -> None:
        """
        By default only the gateway's own origin may open a WebSocket
        (cross-site WebSocket hijacking); C{allowedOrigins} adds others;
        C{null} (sandboxed pages, files) is refused.
        """
        await self.start(allowedOrigins=("https://app.example",))
        own = f"http://127.0.0.1:{self.port}"
        for origin in [own, "https://app.example"]:
            ws = await self.socket(origin=Origin(origin))
            await deferToThread(ws.call, "rpc.login", ANONYMOUS)
            self.assertEqual(await deferToThread(ws.call, "add", [1, 2]), 3)
        for origin in ["https://evil.example", "null", "http://127.0.0.1:1",
                       "https://app.example.evil.example"]:
            with self.assertRaises(InvalidStatus) as refused:
                await self.socket(origin=Origin(origin))
            # 403 from the gateway's check; autobahn refuses "null" itself (400).
            self.assertIn(refused.exception.response.status_code, (400, 403), origin)

    async def test_noCORS(self) -> None:
        """
        The REST API grants no cross-origin access: a preflight gets no
        C{Access-Control-Allow-*} headers (so a browser sends no
        C{Authorization} cross-site) and answers carry none either.
        """
        await self.start()
        evil = {"Origin": "https://evil.example"}
        preflight = await self.fetch("OPTIONS", "/api/call/add", headers={
            **evil, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        })
        login = await self.fetch("POST", "/api/login", ALICE, headers=evil)
        self.assertEqual(login.status, 200)
        for reply in [preflight, login]:
            granted = [name for name in reply.headers if name.lower().startswith("access-control")]
            self.assertEqual(granted, [], reply)

    async def test_dashboardHeaders(self) -> None:
        """
        The dashboard's files come with a content security policy and the
        other protective headers; folders are never listed and nothing
        outside the folder is served.
        """
        folder = Path(self.mktemp())
        (folder / "sub").mkdir(parents=True)
        (folder / "index.html").write_text("<!doctype html><title>dashboard</title>")
        (folder / "sub" / "app.js").write_text("export {};")
        await self.start(staticDir=str(folder))
        for path in ["/", "/index.html", "/sub/app.js"]:
            reply = await self.fetch("GET", path)
            self.assertEqual(reply.status, 200, path)
            self.assertEqual(reply.headers["content-security-policy"],
                             CONTENT_SECURITY_POLICY.decode())
            self.assertEqual(reply.headers["x-content-type-options"], "nosniff")
            self.assertEqual(reply.headers["x-frame-options"], "DENY")
            self.assertEqual(reply.headers["referrer-policy"], "no-referrer")
        csp = CONTENT_SECURITY_POLICY.decode()
        for directive in ["default-src 'self'", "script-src 'self'", "object-src 'none'",
                          "frame-ancestors 'none'", "base-uri 'none'"]:
            self.assertIn(directive, csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertNotIn("unsafe-eval", csp)
        listing = await self.fetch("GET", "/sub/")
        self.assertNotIn(b"app.js", listing.raw)
        self.assertEqual(listing.status, 404)
        for path in ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/sub/../../pyproject.toml"]:
            reply = await self.fetch("GET", path)
            self.assertNotIn(b"[project]", reply.raw, path)


class TracebackTests(GatewayCase):
    """
    No traceback leaves the gateway unless it runs with C{debug}.
    """

    def breakDescribe(self) -> None:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a secret detail of the gateway")

        self.patch(pb.introspect, "describeRemote", broken)
        self.patch(gateway.rest, "openAPIDocument", lambda methods: 1 / 0)

    async def assertInternalErrors(self, debug: bool) -> None:
        await self.start(debug=debug)
        self.breakDescribe()
        ws = await self.socket()
        answers = [
            await self.fetch("GET", "/api/describe"),
            await self.fetch("GET", "/api/openapi.json"),
        ]
        response = await deferToThread(ws.request, "rpc.describe")
        for reply in answers:
            self.assertEqual((reply.status, reply.body["error"]["type"]),
                             (500, "internal_error"), reply)
        self.assertEqual(response["error"]["data"]["type"], "internal_error")
        texts = [*(reply.raw.decode() for reply in answers), json.dumps(response)]
        for text in texts:
            if debug:
                self.assertIn("Traceback", text)
            else:
                self.assertNotIn("Traceback", text)
                self.assertNotIn("secret detail", text)
                self.assertNotIn("ZeroDivisionError", text)
                self.assertNotIn('File \\"', text)
        # Remote exceptions carry their type and message, never a traceback.
        token = await self.login()
        reply = await self.fetch("POST", "/api/call/divide", [1, 0], token=token)
        self.assertEqual(reply.body["error"]["type"], "remote_exception")
        self.assertNotIn(b'File "', reply.raw)
        self.flushLoggedErrors(RuntimeError, ZeroDivisionError, ValueError)

    async def test_noTracebacks(self) -> None:
        """
        An internal error of the gateway is a bare 500 C{internal_error}
        (REST) or its JSON-RPC error (WebSocket): no traceback, no message.
        """
        await self.assertInternalErrors(debug=False)

    async def test_debugTracebacks(self) -> None:
        """
        With C{debug} the same errors carry the traceback, for developers.
        """
        await self.assertInternalErrors(debug=True)


class CredentialFileTests(GatewayCase):
    """
    A broker does not start with a credential file group or others may
    access: its digests are enough to log in.
    """

    def usersFile(self, mode: int) -> str:
        path = os.path.abspath(self.mktemp())
        UserFile().add("carol", "a long passphrase").save(path)
        os.chmod(path, mode)
        return path

    def test_loosePermissionsRefused(self) -> None:
        """
        Modes giving group or others any access are refused with a reason
        naming the file and the fix; owner-only modes are accepted.
        """
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602]:
            path = self.usersFile(mode)
            with self.assertRaises(ServiceError) as refused:
                makePortal(DemoRealm(), path)
            self.assertIn(path, str(refused.exception))
            self.assertIn(f"chmod 600 {path}", str(refused.exception))
        for mode in [0o600, 0o400]:
            self.assertIsNotNone(makePortal(DemoRealm(), self.usersFile(mode)))

    def test_brokerCommandRefuses(self) -> None:
        """
        C{pb-gateway broker --users FILE} with a readable file exits with
        status 2 and a one-line reason, before listening.
        """
        path = self.usersFile(0o644)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "broker", "--users", path,
             "--pb", "tcp:0:interface=127.0.0.1"],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )
        self.assertEqual(done.returncode, 2, done)
        lines = done.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        self.assertIn("mode 0644", lines[0])
        self.assertIn("chmod 600", lines[0])
        self.assertNotIn("listening", done.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)


class AccessLogTests(unittest.TestCase):
    """
    The gateway's access log leaves tokens out.
    """

    def test_tokensNotLogged(self) -> None:
        """
        A token in a URL (an event stream; a WebSocket rejoining its
        session, whose upgrade is not an access log line) is written to the
        access log as C{token=-}, and no token appears anywhere in the
        gateway's output.
        """
        deployment = Deployment(self).start()
        token = login(deployment.url, ALICE)
        fetch(deployment.url, "GET", f"/api/caches/cnope/events?token={token}")
        fetch(deployment.url, "GET", f"/api/caches/cnope/events?since=1&token={token}&x=1")
        ws = Socket(f"{deployment.wsURL}?token={token}")
        self.assertEqual(ws.call("add", [1, 2]), 3)
        ws.close()
        fetch(deployment.url, "POST", "/api/logout", token=token)
        output = waitFor(lambda: "POST /api/logout" in (text := deployment.gateway.output())
                         and text, "the access log lines")
        self.assertIn("/api/caches/cnope/events?token=- HTTP/1.1", output)
        self.assertIn("/api/caches/cnope/events?since=1&token=-&x=1", output)
        self.assertNotIn(token.partition(".")[2], output)


    def test_jsonToFile(self) -> None:
        """
        C{--access-log FILE --log-format json}: one JSON object per request
        in the file, tokens left out, none on standard output.
        """
        import shutil
        import tempfile

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "access.log")
        deployment = Deployment(
            self, gatewayArgs=["--access-log", path, "--log-format", "json"]
        ).start()
        token = login(deployment.url, ALICE)
        fetch(deployment.url, "GET", f"/api/caches/cnope/events?token={token}")
        fetch(deployment.url, "POST", "/api/logout", token=token)

        def records() -> list[dict[str, Any]] | None:
            if not os.path.exists(path):
                return None
            with open(path, encoding="utf-8") as f:
                found = [json.loads(line) for line in f.read().splitlines()]
            return found if any(r["uri"] == "/api/logout" for r in found) else None

        found = waitFor(records, "the access log file's lines")
        byURI = {record["uri"]: record for record in found}
        self.assertEqual(byURI["/api/login"]["status"], 200)
        self.assertEqual(byURI["/api/login"]["method"], "POST")
        self.assertEqual(byURI["/api/caches/cnope/events?token=-"]["status"], 404)
        self.assertEqual(byURI["/api/logout"]["client"], "127.0.0.1")
        self.assertEqual({record["log_namespace"] for record in found}, {"gateway.access"})
        output = deployment.gateway.output()
        self.assertNotIn("/api/logout", output)
        self.assertNotIn(token.partition(".")[2], output + json.dumps(found))

    def test_off(self) -> None:
        """
        C{--access-log off}: requests are served and not logged.
        """
        deployment = Deployment(self, gatewayArgs=["--access-log", "off"]).start()
        token = login(deployment.url, ALICE)
        fetch(deployment.url, "POST", "/api/logout", token=token)
        time.sleep(0.5)
        output = deployment.gateway.output()
        self.assertIn("ready at", output)
        self.assertNotIn("/api/login", output)
        self.assertNotIn("/api/logout", output)


# -- limits ---------------------------------------------------------------------------


class LimitTests(GatewayCase):
    """
    Each limit answers with its documented error, and leaves the gateway
    serving everyone else.
    """

    async def test_bodySize(self) -> None:
        """
        A body over C{maxBodySize} is 413 C{body_too_large}, with or without
        a length; one at the limit is read.
        """
        await self.start(maxBodySize=1000)
        token = await self.login()
        exact = b"[1, 2]" + b" " * 994
        reply = await self.fetch("POST", "/api/call/add", raw=exact, token=token)
        self.assertEqual(reply.body, {"result": 3})
        reply = await self.fetch("POST", "/api/call/add", raw=exact + b" ", token=token)
        self.assertError(reply, 413, "body_too_large")
        chunked = await deferToThread(_chunkedPost, self.port, token, b" " * 5000)
        self.assertIn(b" 413 ", chunked.split(b"\r\n", 1)[0])
        self.assertIn(b"body_too_large", chunked)

    async def test_frameSize(self) -> None:
        """
        A WebSocket message over C{maxMessageSize} closes that socket with
        1009; another socket of the same session goes on.
        """
        await self.start(maxMessageSize=1000)
        token = await self.login()
        big = await self.socket()
        other = await self.socket()
        await deferToThread(other.call, "rpc.login", {"token": token})
        message = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "add",
                              "params": [1, 2], "pad": "x" * 2000})
        await deferToThread(big.send, message)
        with self.assertRaises(ConnectionClosed) as closed:
            await deferToThread(big.receive, 10)
        assert closed.exception.rcvd is not None
        self.assertEqual(closed.exception.rcvd.code, 1009)
        self.assertEqual(await deferToThread(other.call, "add", [1, 2]), 3)

    async def test_inFlight(self) -> None:
        """
        Past C{maxInFlight} unanswered requests a socket's request is
        refused at once with -32005; the others are answered when ready.
        """
        root = HoldingRoot()
        await self.start(root, maxInFlight=2)
        ws = await self.socket()
        for n in (1, 2):
            await deferToThread(ws.send, {"jsonrpc": "2.0", "id": n, "method": "hold"})
        await self.until(lambda: len(root.held) == 2)
        refused = await deferToThread(ws.request, "add", [1, 2])
        self.assertEqual(refused["error"]["code"], -32005, refused)
        self.assertEqual(refused["error"]["data"]["code"], "too_many_in_flight")
        for d in root.held:
            d.callback("done")
        await deferToThread(ws.receive)
        await deferToThread(ws.receive)
        self.assertEqual({ws.answers.pop(n)["result"] for n in (1, 2)}, {"done"})
        self.assertEqual(await deferToThread(ws.call, "add", [1, 2]), 3)

    async def test_handles(self) -> None:
        """
        A session holding C{maxHandles} handles (references and caches
        together) gets 429 C{too_many_handles} for a new one, until it
        releases one; other sessions are not affected.
        """
        await self.start(maxHandles=2)
        token = await self.login()
        ref = (await self.call(token, "counter"))["$ref"]
        self.assertIn("$cache", await self.call(token, "board"))
        reply = await self.fetch("POST", "/api/call/stats", token=token)
        self.assertError(reply, 429, "too_many_handles")
        other = await self.login(BOB)
        self.assertIn("$cache", await self.call(other, "stats"))
        await self.fetch("DELETE", f"/api/refs/{ref}", token=token)
        self.assertIn("$cache", await self.call(token, "stats"))

    async def test_loginThrottle(self) -> None:
        """
        C{loginMaxFailures} failed logins lock the user name and the client
        address out: 429 C{login_throttled} with C{Retry-After} (REST) or
        -32005 with C{retry_after} (WebSocket), even for the right password;
        other users from other addresses still log in.
        """
        await self.start(loginMaxFailures=3, loginLockout=60.0)
        wrong = {"username": "alice", "password": "wrong"}
        for _ in range(3):
            reply = await self.fetch("POST", "/api/login", wrong, source="127.0.0.2")
            self.assertError(reply, 401, "login_failed")
        checks = [(ALICE, "127.0.0.3"), (BOB, "127.0.0.2")]  # the user; the address
        for credentials, source in checks:
            reply = await self.fetch("POST", "/api/login", credentials, source=source)
            self.assertError(reply, 429, "login_throttled")
            retryAfter = int(reply.headers["retry-after"])
            self.assertTrue(55 <= retryAfter <= 60, retryAfter)
        await self.login(BOB, source="127.0.0.3")
        ws = await self.socket()
        response = await deferToThread(ws.request, "rpc.login", ALICE)
        self.assertEqual(response["error"]["code"], -32005, response)
        self.assertEqual(response["error"]["data"]["code"], "login_throttled")
        self.assertGreater(response["error"]["data"]["retry_after"], 50)

    async def test_sessionsPerUser(self) -> None:
        """
        A user holding C{maxSessionsPerUser} sessions gets 429
        C{too_many_sessions} (and the broker logs the refused login out);
        anonymous sessions count per client address.  Logging out makes
        room.
        """
        await self.start(maxSessionsPerUser=2)
        tokens = [await self.login(ALICE), await self.login(ALICE)]
        reply = await self.fetch("POST", "/api/login", ALICE)
        self.assertError(reply, 429, "too_many_sessions")
        ws = await self.socket()
        response = await deferToThread(ws.request, "rpc.login", ALICE)
        self.assertEqual(response["error"]["data"]["code"], "too_many_sessions")
        await self.until(lambda: self.realm.sessions == 2)
        await self.login(BOB)
        await self.fetch("POST", "/api/logout", token=tokens[0])
        await self.login(ALICE)
        for _ in range(2):
            await self.login(ANONYMOUS, source="127.0.0.2")
        reply = await self.fetch("POST", "/api/login", ANONYMOUS, source="127.0.0.2")
        self.assertError(reply, 429, "too_many_sessions")
        await self.login(ANONYMOUS, source="127.0.0.3")

    async def test_connections(self) -> None:
        """
        Past C{maxConnections} open connections (HTTP or WebSocket) a new
        one is answered 503 C{too_many_connections} with C{Retry-After} and
        closed; when one closes there is room again.
        """
        await self.start(maxConnections=3)
        ws = await self.socket()
        await deferToThread(ws.call, "rpc.login", ANONYMOUS)
        idle = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(2)]
        for connection in idle:
            self.addCleanup(connection.close)
        await self.until(lambda: self.gateway.connections.openConnections() == 3)
        reply = await self.fetch("GET", "/healthz")
        self.assertError(reply, 503, "too_many_connections")
        self.assertEqual(reply.headers["retry-after"], "1")
        self.assertEqual(await deferToThread(ws.call, "add", [1, 2]), 3)
        idle.pop().close()
        await self.until(lambda: self.gateway.connections.openConnections() == 2)
        reply = await self.fetch("GET", "/metrics")
        self.assertIn(b"\npbgw_connections 3\n", reply.raw)


def _chunkedPost(port: int, token: str, body: bytes) -> bytes:
    """
    POST C{body} in chunks without a length; the raw answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"POST /api/call/add HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
        )
        for start in range(0, len(body), 1000):
            piece = body[start:start + 1000]
            raw.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        raw.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        return answer


class ConnectionBookkeepingTests(TestCase):
    """
    L{ConnectionLimit} drops closed connections' transports without a scan
    per new connection.
    """

    def test_amortisedPruning(self) -> None:
        """
        Opening many connections scans the held transports O(log n) times,
        not once per connection; closed ones are dropped by those scans and
        the count stays right; at the limit every connection is checked.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from gateway._connections import ConnectionLimit, _Refused

        site = Factory.forProtocol(Protocol)
        limit = ConnectionLimit(site, 0, Clock())
        scans: list[int] = []
        prune = limit._prune

        def counting() -> None:
            scans.append(len(limit._transports))
            prune()

        limit._prune = counting  # type: ignore[method-assign]
        transports = []
        for _ in range(5000):
            transport = StringTransport()
            transport.connected = True
            limit.buildProtocol(None).makeConnection(transport)
            transports.append(transport)
        self.assertLess(len(scans), 12)
        for transport in transports[:4000]:
            transport.connected = False
        self.assertEqual(limit.openConnections(), 1000)
        limit.limit = 1001
        limit.buildProtocol(None).makeConnection(StringTransport())
        self.assertIsInstance(limit.buildProtocol(None), _Refused)
        transports[-1].connected = False
        self.assertNotIsInstance(limit.buildProtocol(None), _Refused)


class TrustedProxyTests(GatewayCase):
    """
    Behind a trusted proxy the client's address comes from
    C{X-Forwarded-For}; from anyone else the header is ignored.
    """

    async def test_perAddressLimitsBehindProxy(self) -> None:
        """
        With 127.0.0.1 trusted, anonymous sessions count per forwarded
        address (REST and WebSocket), and the per-address login lockout
        locks out only the forwarded address that failed; a client that is
        not a trusted proxy (127.0.0.2) cannot pose as another address.
        """
        await self.start(maxSessionsPerUser=1, loginMaxFailures=2,
                         trustedProxies=("127.0.0.1",))

        def forwarded(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": f"198.51.100.77, {address}"}

        await self.login(ANONYMOUS, headers=forwarded("203.0.113.1"))
        await self.login(ANONYMOUS, headers=forwarded("203.0.113.2"))
        reply = await self.fetch("POST", "/api/login", ANONYMOUS,
                                 headers=forwarded("203.0.113.1"))
        self.assertError(reply, 429, "too_many_sessions")
        self.assertIn("address 203.0.113.1", reply.body["error"]["message"])
        ws = await self.socket(additional_headers=forwarded("203.0.113.3"))
        self.assertIn("token", await deferToThread(ws.call, "rpc.login", ANONYMOUS))
        ws = await self.socket(additional_headers=forwarded("203.0.113.3"))
        response = await deferToThread(ws.request, "rpc.login", ANONYMOUS)
        self.assertEqual(response["error"]["data"]["code"], "too_many_sessions")
        # Not a trusted proxy: the header is ignored, its own address counts.
        await self.login(ANONYMOUS, source="127.0.0.2", headers=forwarded("203.0.113.9"))
        reply = await self.fetch("POST", "/api/login", ANONYMOUS, source="127.0.0.2",
                                 headers=forwarded("203.0.113.10"))
        self.assertError(reply, 429, "too_many_sessions")
        self.assertIn("address 127.0.0.2", reply.body["error"]["message"])
        # Failed logins lock out the forwarded address, not the proxy.
        wrong = {"username": "nobody", "password": "x"}
        for _ in range(2):
            reply = await self.fetch("POST", "/api/login", wrong, headers=forwarded("203.0.113.4"))
            self.assertError(reply, 401, "login_failed")
        reply = await self.fetch("POST", "/api/login", BOB, headers=forwarded("203.0.113.4"))
        self.assertError(reply, 429, "login_throttled")
        await self.login(BOB, headers=forwarded("203.0.113.5"))
