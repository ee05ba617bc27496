"""
Hostile input: generated and hand-made requests, WebSocket messages and
frames, and PB bytes, against a live gateway and broker.

The invariants: a request is answered with a documented error, never a
500 except a documented remote error (the service's own exception), never a
traceback; a bad WebSocket message is answered with a JSON-RPC error and
leaves the socket open (a frame the WebSocket protocol forbids closes that
socket with its close code, and nothing else); bad PB bytes close that one
connection, never execute or import anything, and the broker goes on
serving its other connections.  After each barrage the session that took it,
another session and new logins still work.

C{PBGW_FUZZ_SCALE=N} multiplies the number of generated examples (default
1, about 2,000 inputs in all, for CI); each test prints what it tried.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_faults import ALICE, BOB, Reply, fetch
from test_security import GatewayCase
from tools import requireTool
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed

import pb
from pb import banana
from pb.demo import DemoRealm
from pb.factory import PBServerFactory
from pb.service import BrokerService, makePortal

SCALE = int(os.environ.get("PBGW_FUZZ_SCALE", "1"))
LOOPBACK = "tcp:0:interface=127.0.0.1"

# 500 is documented for an exception the remote method raised, 502 for an
# answer JSON cannot carry; everything else the gateway answers is below 500.
DOCUMENTED_5XX = {(500, "remote_exception"), (502, "unmappable_result")}
# The JSON-RPC codes the gateway documents (docs/websocket.md).
RPC_CODES = {-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004,
             -32005, -32010, -32011, -32020, -32021}

SETTINGS = {
    "deadline": None,
    "database": None,
    "derandomize": False,
    "suppress_health_check": list(HealthCheck),
}


def _report(what: str, count: int) -> None:
    print(f"[fuzz] {what}: {count} inputs")


# -- strategies --------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
_TAGS = ["$bytes", "$tuple", "$set", "$frozenset", "$datetime", "$date", "$time",
         "$timedelta", "$decimal", "$float", "$dict", "$ref", "$copy", "$cache",
         "$unpersistable", "$nope", "$"]


def _tagged(children: Any) -> Any:
    return st.one_of(
        st.builds(lambda tag, value: {tag: value}, st.sampled_from(_TAGS), children),
        st.builds(lambda kind, state: {"$copy": kind, "state": state},
                  st.sampled_from(["pb.demo.SharedData", "os.system", "x", ""]), children),
    )


json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        _tagged(children),
    ),
    max_leaves=12,
)

_NAMES = st.one_of(
    st.sampled_from(["add", "divide", "counter", "board", "stats", "store", "retrieve",
                     "addTask", "removeTask", "setDone", "whoami", "joinChat", "say",
                     "increment", "value", "reset", "login", "loginAnonymous", "pb:describe",
                     "_private", "__init__", "remote_add", ""]),
    st.text(max_size=12),
)


# -- REST ---------------------------------------------------------------------------


class RESTFuzzTests(GatewayCase):
    """
    The REST API under generated and hand-made requests.
    """

    async def startWithHandles(self, **options: Any) -> None:
        # Generated logins fail by the hundred: throttling them (tested in
        # test_security.py) would lock this client out of the checks after.
        await self.start(loginMaxFailures=10**9, **options)
        # The broker, in this process, logs the service's own exceptions
        # (remote errors the invariants allow).
        self.addCleanup(self.flushLoggedErrors)
        self.token = await self.login(ALICE)
        self.control = await self.login(BOB)
        self.ref = (await self.call(self.token, "counter"))["$ref"]
        self.cache = (await self.call(self.token, "board"))["$cache"]
        self.othersRef = (await self.call(self.control, "counter"))["$ref"]

    def checkReply(self, reply: Reply, path: str, what: Any) -> None:
        """
        The invariants of every answer: no traceback, no 5xx but the
        documented ones, and errors of the API in their JSON form (the
        dashboard's folder answers its own 404 page).
        """
        self.assertNotIn(b"Traceback", reply.raw, what)
        self.assertNotIn(b'File "', reply.raw, what)
        if reply.status >= 500:
            error = reply.body.get("error", {}) if isinstance(reply.body, dict) else {}
            self.assertIn((reply.status, error.get("type")), DOCUMENTED_5XX, (what, reply))
        if reply.status >= 400 and path.startswith(("/api/", "/healthz", "/readyz", "/metrics")):
            self.assertIsInstance(reply.body, dict, (what, reply))
            self.assertIn("error", reply.body, (what, reply))

    async def stillWorks(self) -> None:
        """
        The fuzzed session (unless it was logged out), another session, a
        new login and the health routes all still work.
        """
        for token in [self.token, self.control, await self.login(ALICE)]:
            reply = await self.fetch("POST", "/api/call/add", [2, 3], token=token)
            if token is self.token and reply.errorCode == "session_ended":
                continue
            self.assertEqual(reply.body, {"result": 5}, reply)
        self.assertEqual((await self.fetch("GET", "/readyz")).status, 200)
        reply = await self.fetch("POST", f"/api/refs/{self.othersRef}/increment", [1],
                                 token=self.control)
        self.assertEqual(reply.status, 200, reply)

    async def test_generatedRequests(self) -> None:
        """
        Hypothesis-generated methods, paths (templates with generated
        names and handles, and arbitrary ones), headers and bodies (JSON
        values with well- and ill-formed tags, or arbitrary bytes): every
        answer keeps the invariants, and the gateway serves on.
        """
        await self.startWithHandles()
        handles = st.one_of(st.sampled_from([self.ref, self.cache, self.othersRef, "r", "c"]),
                            st.text(max_size=20))
        paths = st.one_of(
            st.builds("/api/call/{}".format, _NAMES.map(lambda n: quote(n, safe=""))),
            st.builds("/api/root/{}".format, _NAMES.map(lambda n: quote(n, safe=""))),
            st.builds("/api/refs/{}/{}".format, handles.map(lambda h: quote(h, safe="")),
                      _NAMES.map(lambda n: quote(n, safe=""))),
            st.builds("/api/refs/{}".format, handles.map(lambda h: quote(h, safe=""))),
            st.builds("/api/caches/{}".format, handles.map(lambda h: quote(h, safe=""))),
            st.sampled_from(["/api/login", "/api/describe", "/api/openapi.json", "/healthz",
                             "/metrics", "/api", "/api/", "/api/call/", "//api//call//add",
                             "/api/call/add/extra", "/ws"]),
            st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=30)
            .map(lambda p: "/" + quote(p, safe="/?=&%")),
        )
        tokens = st.one_of(st.none(), st.just(self.token), st.text(
            st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=60))
        headerValues = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]),
                               max_size=40)
        headers = st.dictionaries(
            st.sampled_from(["Content-Type", "Accept", "Last-Event-ID", "Origin", "X-Junk",
                             "Content-Encoding", "Authorization", "Range"]),
            headerValues, max_size=3,
        )
        bodies = st.one_of(
            st.none(),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.builds(lambda a, k: json.dumps({"args": a, "kwargs": k}).encode(),
                      st.lists(json_values, max_size=3),
                      st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
            st.binary(max_size=64),
        )
        methods = st.sampled_from(["GET", "POST", "POST", "POST", "DELETE", "PUT", "HEAD",
                                   "OPTIONS", "PATCH"])
        count = [0]

        @settings(max_examples=250 * SCALE, **SETTINGS)
        @given(methods, paths, tokens, headers, bodies)
        def request(method: str, path: str, token: str | None, extra: dict[str, str],
                    body: bytes | None) -> None:
            if path.endswith("/events") or path.startswith("/api/logout"):
                return
            count[0] += 1
            if method == "POST" and path == "/api/login":
                token = None
            reply = fetch(self.url, method, path, token=token, raw=body, headers=extra,
                          timeout=20)
            what = (method, path, token, extra, body)
            if method == "HEAD":
                return
            self.checkReply(reply, path, what)

        await deferToThread(request)
        _report("REST generated requests", count[0])
        await self.stillWorks()
        self.flushLoggedErrors()

    async def test_handMadeRequests(self) -> None:
        """
        Invalid UTF-8, deep nesting, huge numbers, wrong tags, unknown and
        other sessions' handles, bad tokens and odd methods: each a
        documented 4xx (or a documented remote error), never a 500 of the
        gateway.
        """
        await self.startWithHandles()
        deep = 100_000
        cases: list[tuple[str, str, bytes | None, str | None, set[str]]] = [
            ("POST", "/api/call/add", b'["\xff\xfe", 1]', None, {"bad_json"}),
            ("POST", "/api/call/add", b'["\xc0\xaf", 1]', None, {"bad_json"}),
            ("POST", "/api/call/add", b"\xef\xbb\xbf[1, 2]", None, {"bad_json", "ok"}),
            ("POST", "/api/call/add", b'["\\ud800", 1]', None, {"unsendable_value"}),
            ("POST", "/api/call/add", b"[" * deep + b"]" * deep, None, {"bad_json", "too_deep"}),
            ("POST", "/api/call/add", b'{"args": ' + b"[" * 300 + b"]" * 300 + b"}", None,
             {"too_deep"}),
            ("POST", "/api/call/add", json.dumps([{"$tuple": []}]).encode().replace(
                b"[]", b"[" + b'{"$tuple": [' * 300 + b"]}" * 300 + b"]"), None,
             {"too_deep", "bad_json"}),
            ("POST", "/api/call/add", b"[" + b"9" * 5000 + b", 1]", None, {"bad_json"}),
            ("POST", "/api/call/add", f"[{2**448}, 1]".encode(), None, {"value_too_large"}),
            ("POST", "/api/call/add", f"[{-(2**448)}, 1]".encode(), None, {"value_too_large"}),
            ("POST", "/api/call/add", b"[1e400, 1]", None, {"ok", "bad_json", "bad_value"}),
            ("POST", "/api/call/add", b"[NaN, 1]", None, {"bad_json"}),
            ("POST", "/api/call/add", b"[-Infinity, 1]", None, {"bad_json"}),
            ("POST", "/api/call/add", b'[1, 2', None, {"bad_json"}),
            ("POST", "/api/call/add", b'{"args": [1, 2], "args": [3]}', None,
             {"ok", "bad_shape", "bad_json", "bad_arguments"}),
            ("POST", "/api/call/add", b"\x00" * 100, None, {"bad_json"}),
            ("POST", "/api/call/store", b'["k", "' + b"x" * 700_000 + b'"]', None,
             {"value_too_large"}),
        ]
        tags = [
            {"$bytes": 5}, {"$bytes": "***"}, {"$set": 1}, {"$set": [[1]]}, {"$dict": [[1]]},
            {"$dict": 1}, {"$ref": 5}, {"$ref": "rnope"}, {"$cache": "cnope"},
            {"$ref": self.othersRef}, {"$copy": "x"}, {"$copy": 5, "state": {}},
            {"$copy": "os.system", "state": {}}, {"$copy": "pb.demo.SharedData", "state": 7},
            {"$datetime": "yesterday"}, {"$datetime": "2026-11-26T10:00:00+01:00"},
            {"$date": "2026-13-45"}, {"$time": 5}, {"$timedelta": "x"},
            {"$timedelta": 1e300}, {"$decimal": "1e999999999"}, {"$decimal": "NaN"},
            {"$decimal": []}, {"$float": "nan2"}, {"$float": 1}, {"$bytes": "", "$set": []},
            {"$unpersistable": "x"}, {"$nope": 1}, {"$": 1}, {"$tuple": {"a": 1}},
        ]
        for tag in tags:
            cases.append(("POST", "/api/call/store", json.dumps(["k", tag]).encode(), None,
                          {"bad_value", "unknown_tag", "unknown_handle", "unsafe_value",
                           "unsendable_value", "value_too_large", "bad_shape",
                           # Some are fine after all (a huge finite decimal).
                           "ok"}))
        cases += [
            ("POST", "/api/refs/rnope/increment", b"[]", None, {"unknown_handle"}),
            ("POST", f"/api/refs/{self.othersRef}/increment", b"[]", None, {"unknown_handle"}),
            ("DELETE", f"/api/refs/{self.othersRef}", None, None, {"unknown_handle"}),
            ("GET", "/api/caches/" + quote("../../etc/passwd", safe=""), None, None,
             {"unknown_handle", "no_route"}),
            ("POST", "/api/call/add", b"[1, 2]", "Bearer", {"no_token", "bad_token"}),
            ("POST", "/api/call/add", b"[1, 2]", "Basic YWxpY2U6cGFzc3dvcmQ=",
             {"no_token", "bad_token"}),
            ("POST", "/api/call/add", b"[1, 2]", "Bearer " + "x" * 10_000,
             {"bad_token"}),
            ("POST", "/api/call/add", b"[1, 2]", "Bearer " + self.token + "x", {"bad_token"}),
            ("POST", "/api/call/add", b"[1, 2]", "Bearer " + self.token.split(".")[0],
             {"bad_token"}),
            ("POST", "/api/call/" + quote("add\x00", safe=""), b"[1, 2]", None, {"no_such_method"}),
            ("POST", "/api/call/__class__", b"[]", None, {"no_such_method"}),
            ("POST", "/api/call/add?x=%ff&y", b"[1, 2]", None, {"ok"}),
            ("POST", "/api/root/login", b'["alice"]', None, {"login_root"}),
            ("POST", "/api/login", b'{"username": 5, "password": []}', None, {"bad_login"}),
            ("POST", "/api/login", b'{"username": "alice\\u0000", "password": "x"}', None,
             {"login_failed"}),
            ("POST", "/api/login", json.dumps({"username": "a" * 100_000, "password": "x"})
             .encode(), None, {"login_failed", "value_too_large"}),
            ("TRACE", "/api/call/add", None, "", {"method_not_allowed", "no_route"}),
            ("PROPFIND", "/", None, None, {"method_not_allowed", "no_route"}),
        ]
        for method, path, body, auth, expected in cases:
            headers = {}
            if auth is None:
                token = self.token
            else:
                token = None
                if auth:
                    headers["Authorization"] = auth
            reply = await self.fetch(method, path, raw=body, token=token, headers=headers)
            what = (method, path, (body or b"")[:80], auth)
            self.checkReply(reply, path, what)
            code = "ok" if reply.status == 200 else reply.errorCode
            self.assertIn(code, expected, (what, reply))
        _report("REST hand-made requests", len(cases))
        await self.stillWorks()
        self.flushLoggedErrors()

    async def test_schemathesis(self) -> None:
        """
        Schemathesis generates requests for every operation of the
        gateway's own OpenAPI document (perspective methods included, from
        introspection): every answer keeps the invariants.
        """
        try:
            import schemathesis
        except ImportError:  # the test extra installs it
            requireTool(False, "schemathesis (pip)")
        await self.startWithHandles()
        count = [0]
        operations: list[str] = []

        def run() -> None:
            schema = schemathesis.openapi.from_url(
                f"{self.url}/api/openapi.json", headers={"Authorization": f"Bearer {self.token}"}
            )
            for result in schema.get_all_operations():
                operation = result.ok()
                if operation.path in ("/api/logout",) or operation.path.endswith("/events"):
                    continue
                operations.append(operation.label)

                @settings(max_examples=6 * SCALE, **SETTINGS)
                @given(operation.as_strategy())
                def check(case: Any) -> None:
                    count[0] += 1
                    response = case.call(
                        base_url=self.url, timeout=20,
                        headers={"Authorization": f"Bearer {self.token}"},
                    )
                    self.checkReply(
                        Reply(response.status_code, response.headers, response.content, 0.0),
                        case.formatted_path, (case.method, case.formatted_path, case.body),
                    )

                check()

        await deferToThread(run)
        _report(f"schemathesis requests over {len(operations)} operations", count[0])
        self.assertGreater(len(operations), 20)
        await self.stillWorks()
        self.flushLoggedErrors()


# -- WebSocket ------------------------------------------------------------------------


class WebSocketFuzzTests(GatewayCase):
    """
    The WebSocket under generated messages and malformed frames.
    """

    async def test_generatedMessages(self) -> None:
        """
        Generated JSON-RPC messages (well- and ill-formed: any id, method,
        params, extra keys, batches, non-objects, invalid JSON) on one
        logged-in socket: each is answered (a result or a documented
        JSON-RPC error) or, for a notification, ignored; after each, a
        sentinel request is answered on the same socket; another session's
        socket works throughout.
        """
        await self.start()
        ws = await self.socket()
        await deferToThread(ws.call, "rpc.login", ALICE)
        other = await self.socket()
        await deferToThread(other.call, "rpc.login", BOB)
        methods = st.one_of(
            st.sampled_from(["rpc.login", "rpc.call", "rpc.release", "rpc.describe",
                             "rpc.subscribe", "rpc.expose", "rpc.nope", "rpc."]),
            _NAMES,
        )
        ids = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans(),
                        st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
        requests = st.fixed_dictionaries(
            {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2])},
            optional={"id": ids, "method": st.one_of(methods, json_values),
                      "params": json_values, "result": json_values, "error": json_values},
        )
        messages = st.one_of(
            requests.map(json.dumps),
            st.lists(requests, min_size=0, max_size=3).map(json.dumps),
            json_values.map(json.dumps),
            st.text(max_size=40),
        )
        count = [0]

        @settings(max_examples=200 * SCALE, **SETTINGS)
        @given(messages)
        def exchange(message: str) -> None:
            if "rpc.logout" in message:
                return
            count[0] += 1
            ws.answers.clear()
            ws.send(message)
            ws._nextID += 1
            sentinel = f"sentinel-{ws._nextID}"
            ws.send({"jsonrpc": "2.0", "id": sentinel, "method": "rpc.describe"})
            deadline = time.monotonic() + 20
            seen: list[Any] = []
            while sentinel not in ws.answers:
                seen.append(ws.receive(max(0.01, deadline - time.monotonic())))
            self.assertIn("result", ws.answers[sentinel], message)
            for received in seen:
                for response in received if isinstance(received, list) else [received]:
                    self.assertIsInstance(response, dict, (message, received))
                    if "error" in response and "method" not in response:
                        self.assertIn(response["error"]["code"], RPC_CODES, (message, response))
                        self.assertNotIn("Traceback", json.dumps(response))
            ws.notifications.clear()

        await deferToThread(exchange)
        _report("WebSocket generated messages", count[0])
        self.assertEqual(await deferToThread(ws.call, "add", [2, 3]), 5)
        self.assertEqual(await deferToThread(other.call, "add", [2, 3]), 5)
        self.flushLoggedErrors()

    async def test_frames(self) -> None:
        """
        A binary frame, a fragmented message and pings are answered on the
        same socket; a text frame of invalid UTF-8 closes that socket with
        1007, frames the protocol forbids (unmasked, reserved bits, unknown
        opcodes, a stray continuation, a long control frame) with 1002; the
        session, other sockets and the gateway go on.
        """
        await self.start()
        token = await self.login(ALICE)
        other = await self.socket()
        await deferToThread(other.call, "rpc.login", BOB)
        ws = await self.socket()
        await deferToThread(ws.call, "rpc.login", {"token": token})
        await deferToThread(ws.send, b'{"jsonrpc": "2.0", "id": 1, "method": "add"}')
        answer = await deferToThread(ws.receive)
        self.assertEqual(answer["error"]["code"], -32600)
        fragments = ['{"jsonrpc": "2.0", "id": 2, ', '"method": "add", ', '"params": [1, 2]}']
        await deferToThread(ws.connection.send, fragments)
        self.assertEqual((await deferToThread(ws.receive))["result"], 3)
        pong = await deferToThread(ws.connection.ping, b"hello")
        await deferToThread(pong.wait, 10)
        await deferToThread(ws.send, b"\xff\xfe")
        self.assertEqual((await deferToThread(ws.receive))["error"]["code"], -32600)
        await deferToThread(ws.connection.send, b'{"jsonrpc": "2.0", "id": 3, "method": "\xff"}',
                            text=True)
        with self.assertRaises(ConnectionClosed) as closed:
            await deferToThread(ws.receive)
        assert closed.exception.rcvd is not None
        self.assertEqual(closed.exception.rcvd.code, 1007)

        bad = [
            ("unmasked", _frame(0x1, b"[]", mask=False)),
            ("reserved bits", _frame(0x1, b"[]", rsv=0x40)),
            ("unknown opcode", _frame(0x3, b"[]")),
            ("stray continuation", _frame(0x0, b"[]")),
            ("long ping", _frame(0x9, b"x" * 126)),
            ("fragmented ping", _frame(0x9, b"x", fin=False)),
        ]
        for what, frame in bad:
            code = await deferToThread(_closeCodeAfter, self.port, token, frame)
            self.assertEqual(code, 1002, what)
        ws = await self.socket()
        await deferToThread(ws.call, "rpc.login", {"token": token})
        self.assertEqual(await deferToThread(ws.call, "add", [1, 2]), 3)
        self.assertEqual(await deferToThread(other.call, "add", [1, 2]), 3)
        _report("WebSocket malformed frames", 3 + len(bad))


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
           rsv: int = 0) -> bytes:
    """
    One WebSocket frame, built by hand.
    """
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    size = len(payload)
    maskBit = 0x80 if mask else 0
    if size < 126:
        head += bytes([maskBit | size])
    elif size < 65536:
        head += bytes([maskBit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([maskBit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _closeCodeAfter(port: int, token: str, frame: bytes) -> int | None:
    """
    Open a socket by hand, send C{frame}; the close code the gateway sends
    (None if it drops the connection without one).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += raw.recv(4096)
        data = data.split(b"\r\n\r\n", 1)[1]
        raw.sendall(frame)
        while True:
            code = _closeCode(data)
            if code is not None:
                return code
            try:
                chunk = raw.recv(4096)
            except (ConnectionResetError, TimeoutError):
                return None
            if not chunk:
                return None
            data += chunk


def _closeCode(data: bytes) -> int | None:
    """
    The code of the close frame (opcode 8) among the frames in C{data}.
    """
    position = 0
    while position + 2 <= len(data):
        opcode = data[position] & 0x0F
        size = data[position + 1] & 0x7F
        start = position + 2
        if size == 126:
            size, start = struct.unpack("!H", data[start:start + 2])[0], start + 2
        elif size == 127:
            size, start = struct.unpack("!Q", data[start:start + 8])[0], start + 8
        if opcode == 0x8 and size >= 2 and len(data) >= start + 2:
            return int(struct.unpack("!H", data[start:start + 2])[0])
        position = start + size
    return None


# -- PB -----------------------------------------------------------------------------


def _sexps() -> Any:
    atoms = st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"message", b"answer", b"error", b"decref", b"decache", b"uncache",
                         b"cachemessage", b"version", b"didNotUnderstand", b"root",
                         b"login", b"loginAnonymous", b"respond", b"list", b"tuple",
                         b"dictionary", b"reference", b"dereference", b"module", b"class",
                         b"function", b"instance", b"unicode", b"local", b"remote", b"cached",
                         b"lcache", b"unpersistable", b"copy", b"os.system",
                         b"twisted.spread.pb.CopyableFailure", b"pb.demo.SharedData"]),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
    )
    return st.recursive(atoms, lambda children: st.lists(children, max_size=6), max_leaves=25)


def _messages() -> Any:
    """
    Well-formed PB messages to the root object (the login) with generated
    arguments, and arbitrary s-expressions.
    """
    message = st.builds(
        lambda requestID, name, args, kw: [b"message", requestID, b"root", name, 1,
                                           [b"list", *args], [b"dictionary", *kw]],
        st.integers(min_value=-5, max_value=2**40),
        st.sampled_from([b"login", b"loginAnonymous", b"pb:describe", b"nope"]),
        st.lists(_sexps(), max_size=3),
        st.lists(st.lists(_sexps(), min_size=2, max_size=2), max_size=2),
    )
    return st.one_of(message, _sexps())


class _PBTarget:
    """
    Our broker's server side, in memory: a connection to fuzz, and a way to
    check that a fresh connection on the same factory still logs in.
    """

    def __init__(self) -> None:
        portal = makePortal(DemoRealm())
        assert portal is not None
        self.factory = PBServerFactory(portal=portal)

    def connection(self) -> tuple[Any, StringTransport]:
        broker = self.factory.buildProtocol(None)
        transport = StringTransport()
        broker.makeConnection(transport)
        # The client picks the "pb" dialect the server offered.
        broker.dataReceived(banana.encode(b"pb"))
        return broker, transport

    def answers(self, transport: StringTransport) -> list[Any]:
        decoder = banana.Decoder(vocabulary={v: k for k, v in banana.PB_VOCABULARY.items()})
        return list(decoder.feed(transport.value()))

    def stillServes(self) -> bool:
        """
        A new connection asks the root object for a login challenge and
        gets one.
        """
        broker, transport = self.connection()
        transport.clear()
        broker.dataReceived(banana.encode(
            [b"message", 1, b"root", b"login", 1, [b"list", b"alice"], [b"dictionary"]]))
        answers = self.answers(transport)
        broker.connectionLost(None)
        return any(isinstance(a, list) and a[:2] == [b"answer", 1] for a in answers)


class PBFuzzTests(SynchronousTestCase):
    """
    Random, malformed and truncated banana/jelly bytes into our broker.
    """

    def test_generatedBytes(self) -> None:
        """
        Arbitrary bytes, and arbitrary s-expressions (messages to the login
        with generated arguments among them), each on a fresh connection:
        the broker never raises out of C{dataReceived}; a connection either
        goes on or is aborted; fresh connections keep logging in.
        """
        target = _PBTarget()
        count = [0]

        @settings(max_examples=400 * SCALE, **SETTINGS)
        @given(st.one_of(
            st.binary(max_size=200),
            st.lists(_messages(), min_size=1, max_size=3).map(
                lambda sexps: b"".join(banana.encode(s, banana.PB_VOCABULARY) for s in sexps)),
        ), st.integers(min_value=1, max_value=64))
        def feed(data: bytes, chunk: int) -> None:
            count[0] += 1
            broker, transport = target.connection()
            for start in range(0, len(data), chunk):
                broker.dataReceived(data[start:start + chunk])
                if transport.disconnecting:
                    break
            broker.connectionLost(None)

        feed()
        _report("PB generated byte streams", count[0])
        self.assertTrue(target.stillServes())
        self.flushLoggedErrors()

    def test_truncatedMessages(self) -> None:
        """
        A valid login conversation cut at every byte: the broker waits for
        the rest, and closing the connection there leaves nothing behind.
        """
        target = _PBTarget()
        stream = b"".join(banana.encode(s, banana.PB_VOCABULARY) for s in [
            [b"version", 6],
            [b"message", 1, b"root", b"login", 1, [b"list", [b"unicode", b"alice"]],
             [b"dictionary"]],
            [b"message", 2, b"root", b"loginAnonymous", 1, [b"list", [b"None"]],
             [b"dictionary"]],
        ])
        for cut in range(len(stream)):
            broker, transport = target.connection()
            broker.dataReceived(stream[:cut])
            self.assertFalse(transport.disconnecting, cut)
            broker.connectionLost(None)
            self.assertEqual(broker.localObjects, {})
        _report("PB truncated streams", len(stream))
        self.assertTrue(target.stillServes())

    def test_nothingImportedOrRun(self) -> None:
        """
        Jelly that names modules, classes, functions and instances (Python's
        old pickling atoms) and unknown Copyable types: nothing is imported
        (C{xml.dom.minidom} stays out of C{sys.modules}), no function runs
        (C{os.system} is never called), each call fails or the connection
        closes, and the broker goes on.
        """
        calls: list[Any] = []
        self.patch(os, "system", lambda *a: calls.append(a))
        for name in ["xml.dom.minidom", "xml.dom"]:
            sys.modules.pop(name, None)
        payloads: list[Any] = [
            [b"module", b"xml.dom.minidom"],
            [b"class", b"xml.dom.minidom.Document"],
            [b"function", b"os.system"],
            [b"instance", [b"class", b"xml.dom.minidom.Document"], [b"dictionary"]],
            [b"xml.dom.minidom.Document", [b"dictionary"]],
            [b"os.system", b"touch /tmp/pbgw-pwned"],
            [b"copy", b"xml.dom.minidom.Document", [b"dictionary"]],
            [b"reference", 1, [b"module", b"xml.dom.minidom"]],
            [b"dictionary", [[b"module", b"xml.dom.minidom"], b"x"]],
        ]
        # A failure naming a type is a value (the type stays a name).
        failure = [b"twisted.spread.pb.CopyableFailure",
                   [b"dictionary", [b"type", b"xml.dom.minidom.Document"]]]
        target = _PBTarget()
        for payload in [*payloads, failure]:
            for sexp in [
                payload,
                [b"message", 7, b"root", b"login", 1, [b"list", payload], [b"dictionary"]],
                [b"message", 8, b"root", b"loginAnonymous", 1, [b"list", payload],
                 [b"dictionary"]],
                [b"answer", 1, payload],
                [b"error", 1, payload],
            ]:
                broker, transport = target.connection()
                transport.clear()
                broker.dataReceived(banana.encode(sexp, banana.PB_VOCABULARY))
                for answer in target.answers(transport):
                    if payload is not failure:
                        self.assertNotEqual(answer[:2], [b"answer", 7], sexp)
                        self.assertNotEqual(answer[:2], [b"answer", 8], sexp)
                broker.connectionLost(None)
        self.assertNotIn("xml.dom.minidom", sys.modules)
        self.assertNotIn("xml.dom", sys.modules)
        self.assertEqual(calls, [])
        self.assertFalse(os.path.exists("/tmp/pbgw-pwned"))
        self.assertTrue(target.stillServes())
        _report("PB import/execute payloads", (len(payloads) + 1) * 5)
        self.flushLoggedErrors()


class PBSocketFuzzTests(GatewayCase):
    """
    The same over real sockets, next to a live client.
    """

    async def test_garbageConnections(self) -> None:
        """
        Connections that send garbage (random bytes, a bad dialect, a huge
        length prefix, a message cut short) to a broker on loopback: each is
        closed by the broker or by us, the broker's live client keeps
        calling, and no connection is left on the broker.
        """
        realm = DemoRealm(clock=reactor)
        broker = BrokerService(reactor, LOOPBACK, realm)
        broker.startService()
        self.addCleanup(broker.stopService)
        port = (await broker.whenListening()).getHost().port
        factory = pb.PBClientFactory(clock=reactor)
        reactor.connectTCP("127.0.0.1", port, factory)
        self.addCleanup(factory.disconnect)
        from twisted.cred.credentials import Anonymous

        avatar = await factory.login(Anonymous())
        rng = random.Random(1234)
        garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                   for _ in range(40 * SCALE)]
        garbage += [
            banana.encode(b"klingon"),
            banana.encode(b"pb") + b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x82",
            banana.encode(b"pb") + b"\x01\x7f\x7f\x7f\x82",
            banana.encode(b"pb") + b"\x80" * 5000,
            banana.encode(b"pb") + banana.encode([b"message", 1, b"root", b"login", 1,
                                                  [b"list", b"alice"], [b"dictionary"]])[:-3],
        ]
        for data in garbage:
            await deferToThread(_sendAndClose, port, data)
            self.assertEqual(await avatar.callRemote("add", 1, 2), 3)
        await self.until(lambda: len(broker.factory.connections) == 1, 10)
        self.assertEqual(realm.sessions, 1)
        _report("PB garbage connections", len(garbage))
        self.flushLoggedErrors()
        await deferLater(reactor, 0, lambda: None)


def _sendAndClose(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.recv(64)  # the dialect offer
        try:
            raw.sendall(data)
            raw.settimeout(0.3)
            while raw.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass

