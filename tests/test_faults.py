"""
Fault tests: a broker and a gateway as real processes on loopback, killed,
frozen and restarted under their clients.

The broker and the gateway are C{pb-gateway broker} and C{pb-gateway
gateway} subprocesses; the clients are plain C{http.client} requests and the
C{websockets} library's sync client, so nothing in this process shares a
reactor with the processes under test.  Faults are signals: C{SIGKILL} (a
crash), C{SIGSTOP} (a frozen or unreachable peer: its kernel still accepts
connections, nothing answers), C{SIGCONT}.  Every bound asserted here is
generous next to the configured timeouts, so that a loaded two-core machine
passes, while a hang or a leak still fails.

The helpers at the top (L{Process}, L{Deployment}, L{fetch}, L{Socket}) are
shared with C{test_soak.py} and C{test_tls.py}.
"""

from __future__ import annotations

import http.client
import inspect
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import pb

REPO = Path(__file__).resolve().parent.parent
ALICE = {"username": "alice", "password": "password"}
BOB = {"username": "bob", "password": "secret"}
BROKER_LOST = "broker connection lost"


# -- real processes ------------------------------------------------------------


def freePort() -> int:
    """
    A loopback port nobody listens on (for a process restarted in place).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def waitFor(check: Callable[[], Any], what: str, timeout: float = 15.0,
            interval: float = 0.05) -> Any:
    """
    Poll C{check()} until it returns something true; that value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    # The processes are configured by their arguments and by the test's own
    # PBGW_ variables only, and write their log lines as they happen.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBGW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Process:
    """
    One C{pb-gateway} subcommand in the background.  A thread collects its
    output, which a failing test prints; the test kills it at cleanup
    (continuing it first if it was stopped).
    """

    def __init__(self, test: unittest.TestCase, name: str, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = _environment(env)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.popen: subprocess.Popen[str] | None = None
        test.addCleanup(self.kill)
        test.addCleanup(self._report)

    def start(self, ready: str, timeout: float = 30.0) -> re.Match[str]:
        """
        Start the process and wait until a line of its output matches
        C{ready}; the match.
        """
        with self._lock:
            self.lines.append(f"--- start {self.name} {' '.join(self.args)}")
            first = len(self.lines)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gateway", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=REPO, env=self.env,
        )
        reader = threading.Thread(target=self._read, args=(self.popen,), daemon=True)
        reader.start()
        pattern = re.compile(ready)

        def matched() -> re.Match[str] | None:
            if self.popen is not None and self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.output()}")
            with self._lock:
                for line in self.lines[first:]:
                    found = pattern.search(line)
                    if found:
                        return found
            return None

        return waitFor(matched, f"{self.name} to print {ready!r}", timeout)

    def _read(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, number: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(number)

    def kill(self) -> None:
        """
        Kill the process (a crash: no clean shutdown) and reap it.
        """
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGCONT)
        popen.kill()
        popen.wait(10)

    def rssKiB(self) -> int:
        """
        The process's resident set size (C{VmRSS}), in KiB.
        """
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def openFiles(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _report(self) -> None:
        # pytest shows what a test wrote to stderr only when it fails.
        sys.stderr.write(f"\n==== output of {self.name} ====\n{self.output()}\n")


class Deployment:
    """
    A broker (the demo service) and a gateway in front of it.  Ports are
    chosen by the kernel and read from the output (or fixed by the test);
    a process restarted in place listens where it did before.
    """

    def __init__(self, test: unittest.TestCase, *, gatewayArgs: list[str] | None = None,
                 gatewayEnv: dict[str, str] | None = None, brokerArgs: list[str] | None = None,
                 pbPort: int = 0, httpPort: int = 0, pbListen: str | None = None,
                 httpListen: str | None = None, brokerEndpoint: str | None = None,
                 scheme: str = "http") -> None:
        self.pbPort = pbPort
        self.httpPort = httpPort
        self.scheme = scheme
        self.pbListen = pbListen or f"tcp:{pbPort}:interface=127.0.0.1"
        self.httpListen = httpListen or f"tcp:{httpPort}:interface=127.0.0.1"
        # "{port}" in the endpoint stands for the broker's port.
        self.brokerEndpoint = brokerEndpoint or "tcp:host=127.0.0.1:port={port}"
        self.brokerArgs = brokerArgs or []
        self.gatewayArgs = gatewayArgs or []
        self.broker = Process(test, "broker", [])
        self.gateway = Process(test, "gateway", [], gatewayEnv)

    def startBroker(self) -> None:
        self.broker.args = ["broker", "--pb", self.pbListen, *self.brokerArgs]
        found = self.broker.start(r"PB broker listening on [\d.]+:(\d+)")
        self.pbPort = int(found.group(1))
        self.pbListen = self.pbListen.replace(":0:", f":{self.pbPort}:", 1)

    def startGateway(self) -> None:
        self.gateway.args = ["gateway", "--broker", self.brokerEndpoint.format(port=self.pbPort),
                             "--http", self.httpListen, *self.gatewayArgs]
        found = self.gateway.start(r"pb-gateway is ready at https?://[^:/]+:(\d+)/")
        self.httpPort = int(found.group(1))
        self.httpListen = self.httpListen.replace(":0:", f":{self.httpPort}:", 1)

    def start(self) -> Deployment:
        self.startBroker()
        self.startGateway()
        return self

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpPort}"

    @property
    def wsURL(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.httpPort}/ws"


# -- clients -------------------------------------------------------------------


class Reply:
    """
    An HTTP answer: status, headers, raw body, the body as JSON (or None),
    and how long it took.
    """

    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes,
                 elapsed: float) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.elapsed = elapsed
        try:
            self.body: Any = json.loads(raw)
        except ValueError:
            self.body = None

    @property
    def errorCode(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.raw[:300]!r} in {self.elapsed:.2f} s>"


def fetch(url: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         raw: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0, context: ssl.SSLContext | None = None,
         source: str | None = None) -> Reply:
    """
    One HTTP request on a new connection (C{body} as JSON, C{raw} as is),
    from the loopback address C{source} if given.
    """
    scheme, _, rest = url.partition("://")
    host, _, port = rest.partition(":")
    sourceAddress = (source, 0) if source is not None else None
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, int(port), timeout=timeout,
                                                 context=context, source_address=sourceAddress)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout,
                                                source_address=sourceAddress)
    allHeaders = dict(headers or {})
    if token is not None:
        allHeaders["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    started = time.monotonic()
    try:
        connection.request(method, path, body=data, headers=allHeaders)
        response = connection.getresponse()
        content = response.read()
    finally:
        connection.close()
    return Reply(response.status, response.headers, content, time.monotonic() - started)


def login(url: str, credentials: dict[str, Any], **kwargs: Any) -> str:
    reply = fetch(url, "POST", "/api/login", credentials, **kwargs)
    if reply.status != 200:
        raise AssertionError(f"login failed: {reply!r}")
    return str(reply.body["token"])


def metric(url: str, name: str, **kwargs: Any) -> float:
    """
    The value of an unlabelled metric of the gateway's C{/metrics}.
    """
    reply = fetch(url, "GET", "/metrics", **kwargs)
    for line in reply.raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name} in {reply.raw.decode()}")


def metricLine(url: str, prefix: str, **kwargs: Any) -> float:
    """
    The value of the metric line starting with C{prefix} (labels included),
    0 when it is absent.
    """
    reply = fetch(url, "GET", "/metrics", **kwargs)
    for line in reply.raw.decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


class Socket:
    """
    A JSON-RPC client on one WebSocket (the C{websockets} sync client):
    answers by id, notifications kept in order.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        if "proxy" in inspect.signature(connect).parameters:
            kwargs.setdefault("proxy", None)  # never through an HTTP(S)_PROXY of the machine
        # Entered as websockets asks; closing it is close()'s job.
        self.connection: ClientConnection = connect(
            url, open_timeout=10, close_timeout=2, compression=None, **kwargs
        ).__enter__()
        self.notifications: list[dict[str, Any]] = []
        self.answers: dict[Any, dict[str, Any]] = {}
        self._nextID = 0

    def close(self) -> None:
        self.connection.close()

    def send(self, message: Any) -> None:
        self.connection.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def receive(self, timeout: float = 10.0) -> dict[str, Any] | list[Any]:
        """
        The next message (raises C{TimeoutError} or C{ConnectionClosed}).
        """
        message: dict[str, Any] | list[Any] = json.loads(self.connection.recv(timeout))
        if isinstance(message, dict) and "id" not in message:
            self.notifications.append(message)
        elif isinstance(message, dict):
            self.answers[message["id"]] = message
        return message

    def request(self, method: str, params: Any = None, timeout: float = 10.0) -> dict[str, Any]:
        """
        Send a request; its whole response (notifications meanwhile are kept).
        """
        self._nextID += 1
        requestID = self._nextID
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": requestID, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        deadline = time.monotonic() + timeout
        while requestID not in self.answers:
            self.receive(max(0.01, deadline - time.monotonic()))
        return self.answers.pop(requestID)

    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        response = self.request(method, params, timeout)
        if "error" in response:
            raise AssertionError(f"{method} failed: {response['error']}")
        return response["result"]

    def notification(self, method: str, timeout: float = 10.0) -> dict[str, Any]:
        """
        The first notification named C{method} (waiting for it).
        """
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications:
                if message.get("method") == method:
                    self.notifications.remove(message)
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} notification within {timeout} s")
            self.receive(remaining)


# -- the tests -------------------------------------------------------------------


def report(what: str, **figures: float) -> None:
    """
    Print measured figures (shown with C{pytest -s}; docs/reliability.md).
    """
    shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in figures.items())
    print(f"[faults] {what}: {shown}")


def _brokerStats(url: str, token: str, *names: str) -> list[Any]:
    """
    Figures of the demo's live C{stats} object (refreshed every second),
    through the gateway.
    """
    reply = fetch(url, "POST", "/api/call/stats", [], token=token)
    assert reply.status == 200, reply
    return [reply.body["result"]["state"][name] for name in names]


class BrokerCrashTests(unittest.TestCase):
    """
    The broker crashes (C{SIGKILL}) and comes back.
    """

    def test_brokerKilledAndRestarted(self) -> None:
        """
        While the broker is gone, C{/readyz} is 503 at once, calls and logins
        fail fast with 503 (well under the call timeout), and WebSocket
        clients get an C{rpc.session} notification; once it is back, new
        logins and calls work, on the same WebSocket too.
        """
        callTimeout = 5.0
        deployment = Deployment(
            self, pbPort=freePort(), gatewayArgs=["--call-timeout", str(callTimeout)]
        ).start()
        url = deployment.url
        self.assertEqual(fetch(url, "GET", "/readyz").status, 200)
        token = login(url, ALICE)
        self.assertEqual(fetch(url, "POST", "/api/call/add", [1, 2], token=token).body,
                         {"result": 3})
        ws = Socket(deployment.wsURL)
        self.addCleanup(ws.close)
        ws.call("rpc.login", BOB)
        self.assertEqual(ws.call("add", [2, 3]), 5)

        deployment.broker.kill()
        started = time.monotonic()
        waitFor(lambda: fetch(url, "GET", "/readyz").status == 503, "/readyz to be 503", 5)
        red = time.monotonic() - started
        self.assertLess(red, 3.0)
        # Calls of a session whose broker connection is gone: 503 at once.
        reply = fetch(url, "POST", "/api/call/add", [1, 2], token=token)
        self.assertEqual((reply.status, reply.errorCode), (503, "session_lost"), reply)
        self.assertLess(reply.elapsed, callTimeout / 3)
        report("broker killed", readyz_503_after_s=red, call_503_in_s=reply.elapsed)
        # Logins and root calls: the broker refuses connections, 503 at once.
        for path, body in [("/api/login", ALICE), ("/api/root/add", [1, 2])]:
            reply = fetch(url, "POST", path, body)
            self.assertEqual(reply.status, 503, reply)
            self.assertLess(reply.elapsed, callTimeout / 3)
        self.assertNotIn(b"Traceback", reply.raw)
        # The WebSocket client is told, and its next call fails fast.
        notice = ws.notification("rpc.session", timeout=5)
        self.assertEqual(notice["params"], {"state": "ended", "reason": BROKER_LOST})
        started = time.monotonic()
        response = ws.request("add", [1, 2])
        self.assertEqual(response["error"]["code"], -32020, response)
        self.assertLess(time.monotonic() - started, callTimeout / 3)
        self.assertEqual(metric(url, "pbgw_sessions"), 0)
        self.assertEqual(metric(url, "pbgw_handles"), 0)

        deployment.startBroker()
        waitFor(lambda: fetch(url, "GET", "/readyz").status == 200, "/readyz to be 200", 10)
        token = login(url, ALICE)
        self.assertEqual(fetch(url, "POST", "/api/call/add", [4, 5], token=token).body,
                         {"result": 9})
        ws.call("rpc.login", BOB)
        self.assertEqual(ws.call("add", [6, 7]), 13)
        self.assertEqual(metric(url, "pbgw_sessions"), 2)

    def test_gatewayKilledAndRestarted(self) -> None:
        """
        The gateway crashes and comes back: its clients' sockets close, the
        old tokens are unknown to the new gateway (401), clients reconnect
        and log in again, and the broker logged out every avatar of the dead
        gateway's connections.
        """
        deployment = Deployment(self, httpPort=freePort()).start()
        url = deployment.url
        token = login(url, ALICE)
        ws = Socket(deployment.wsURL)
        self.addCleanup(ws.close)
        oldToken = ws.call("rpc.login", BOB)["token"]
        waitFor(lambda: _brokerStats(url, token, "sessions") == [2], "two avatars on the broker")

        deployment.gateway.kill()
        with self.assertRaises(ConnectionClosed):
            waitFor(lambda: ws.receive(5) and False, "the socket to close", 10)
        with self.assertRaises(ConnectionRefusedError):
            fetch(url, "GET", "/healthz")

        deployment.startGateway()
        self.assertEqual(fetch(url, "GET", "/readyz").status, 200)
        reply = fetch(url, "POST", "/api/call/add", [1, 2], token=token)
        self.assertEqual((reply.status, reply.errorCode), (401, "bad_token"), reply)
        ws = Socket(deployment.wsURL)
        self.addCleanup(ws.close)
        response = ws.request("rpc.login", {"token": oldToken})
        self.assertEqual(response["error"]["code"], -32001, response)
        ws.call("rpc.login", BOB)
        self.assertEqual(ws.call("add", [1, 2]), 3)
        token = login(url, ALICE)
        self.assertEqual(fetch(url, "POST", "/api/call/add", [2, 2], token=token).body,
                         {"result": 4})
        # The dead gateway's two logins are gone: only the new two remain,
        # with the new gateway's connection for root calls.
        waitFor(lambda: _brokerStats(url, token, "sessions", "clients") == [2, 3],
                "the broker to log out the dead gateway's avatars")


class FrozenBrokerTests(unittest.TestCase):
    """
    The broker freezes (C{SIGSTOP}): its kernel accepts connections, nothing
    answers.
    """

    def test_frozenBroker(self) -> None:
        """
        Calls end with 504 at the call timeout, concurrently (not one after
        another); logins and readiness fail within the connect timeout; the
        gateway answers everything else at once; sessions, handles, open
        files and memory stay level; after C{SIGCONT} everything works and
        no connection made during the freeze lingers on the broker.
        """
        callTimeout = 2.0
        connectTimeout = 2.0
        deployment = Deployment(self, gatewayArgs=[
            "--call-timeout", str(callTimeout), "--connect-timeout", str(connectTimeout),
        ]).start()
        url = deployment.url
        alice = login(url, ALICE)
        bob = login(url, BOB)
        counter = fetch(url, "POST", "/api/call/counter", [], token=alice).body["result"]["$ref"]
        self.assertEqual(fetch(url, "GET", "/readyz").status, 200)
        waitFor(lambda: _brokerStats(url, alice, "clients") == [3], "three broker connections")
        sessions, handles = metric(url, "pbgw_sessions"), metric(url, "pbgw_handles")
        self.assertEqual((sessions, handles), (2, 2))  # a counter, the stats cache
        timeouts = metricLine(url, 'pbgw_pb_calls_total{outcome="timeout"}')
        files = deployment.gateway.openFiles()
        rss = deployment.gateway.rssKiB()

        deployment.broker.signal(signal.SIGSTOP)
        replies: list[Reply] = []

        def call(token: str, path: str) -> None:
            replies.append(fetch(url, "POST", path, [1, 2], token=token))

        calls = [
            threading.Thread(target=call, args=(token, path))
            for token, path in [(alice, "/api/call/add"), (bob, "/api/call/add"),
                                (alice, f"/api/refs/{counter}/increment")] * 4
        ]
        started = time.monotonic()
        for thread in calls:
            thread.start()
        # Meanwhile the gateway answers what does not need the broker at once.
        waitFor(lambda: metric(url, "pbgw_pb_calls_waiting") == 12, "twelve waiting calls",
                callTimeout * 0.75)
        for path in ["/healthz", "/metrics", "/api/openapi.json"]:
            reply = fetch(url, "GET", path)
            self.assertEqual(reply.status, 200, reply)
            self.assertLess(reply.elapsed, 0.5, path)
        reply = fetch(url, "POST", "/api/call/add", [1, 2], token="gw-nope.nope")
        self.assertEqual(reply.status, 401)
        self.assertLess(reply.elapsed, 0.5)
        for thread in calls:
            thread.join(30)
        elapsed = time.monotonic() - started
        report("broker frozen", call_timeout_s=callTimeout, calls=len(replies),
               all_answered_after_s=elapsed,
               slowest_504_s=max(r.elapsed for r in replies))
        # Timed-out calls leave nothing waiting in the gateway's brokers.
        self.assertEqual(metric(url, "pbgw_pb_calls_waiting"), 0)
        self.assertEqual([(r.status, r.errorCode) for r in replies], [(504, "timeout")] * 12)
        for reply in replies:
            self.assertGreaterEqual(reply.elapsed, callTimeout * 0.9, reply)
        # Twelve calls, concurrently: about one call timeout, not twelve.
        self.assertLess(elapsed, callTimeout * 4)
        # A new login, readiness: bounded by the connect timeout.
        reply = fetch(url, "POST", "/api/login", BOB)
        self.assertEqual(reply.status, 503, reply)
        self.assertLess(reply.elapsed, connectTimeout * 3)
        readiness = fetch(url, "GET", "/readyz")
        self.assertEqual(readiness.status, 503, readiness)
        self.assertLess(readiness.elapsed, connectTimeout * 3)
        report("broker frozen", connect_timeout_s=connectTimeout, login_503_in_s=reply.elapsed,
               readyz_503_in_s=readiness.elapsed)
        # Nothing piled up.
        self.assertEqual(metric(url, "pbgw_sessions"), sessions)
        self.assertEqual(metric(url, "pbgw_handles"), handles)
        self.assertEqual(metricLine(url, 'pbgw_pb_calls_total{outcome="timeout"}'),
                         timeouts + 12)
        self.assertLessEqual(deployment.gateway.openFiles(), files + 2)
        self.assertLess(deployment.gateway.rssKiB(), rss * 1.2)
        report("broker frozen", open_files_before=files,
               open_files_after=deployment.gateway.openFiles(), rss_kib_before=rss,
               rss_kib_after=deployment.gateway.rssKiB())

        deployment.broker.signal(signal.SIGCONT)
        waitFor(lambda: fetch(url, "GET", "/readyz").status == 200, "/readyz to be 200", 10)
        for token in (alice, bob):
            reply = fetch(url, "POST", "/api/call/add", [2, 3], token=token)
            self.assertEqual((reply.status, reply.body), (200, {"result": 5}), reply)
        reply = fetch(url, "POST", f"/api/refs/{counter}/increment", [1], token=alice)
        self.assertEqual(reply.status, 200, reply)
        self.assertEqual(metric(url, "pbgw_sessions"), sessions)
        # The connection the refused login made while the broker was frozen
        # is closed, not left to finish its handshake when it wakes up.
        time.sleep(2.5)
        waitFor(lambda: _brokerStats(url, alice, "clients", "sessions") == [3, 2],
                "three connections on the broker", 3)


class DeadPeerTests(unittest.TestCase):
    """
    Dead peers are detected within the configured time: the broker by the
    PB keep-alive of the gateway's broker link, a browser by WebSocket pings.
    """

    def test_silentBrokerDetected(self) -> None:
        """
        With a ping interval and timeout of 1 s, a frozen broker is noticed
        within about two seconds (the check runs every half interval): its
        sessions end, WebSocket clients are told why, tokens answer 503
        C{session_lost} and C{/readyz} is 503.  After C{SIGCONT} logins work.
        """
        deployment = Deployment(self, gatewayEnv={
            "PBGW_PING_INTERVAL": "1", "PBGW_PING_TIMEOUT": "1", "PBGW_CONNECT_TIMEOUT": "2",
        }).start()
        url = deployment.url
        token = login(url, ALICE)
        ws = Socket(deployment.wsURL)
        self.addCleanup(ws.close)
        ws.call("rpc.login", BOB)
        self.assertEqual(fetch(url, "GET", "/readyz").status, 200)
        # Idle but alive: the keep-alive keeps the link up.
        time.sleep(3)
        self.assertEqual(fetch(url, "POST", "/api/call/add", [1, 1], token=token).status, 200)

        deployment.broker.signal(signal.SIGSTOP)
        started = time.monotonic()
        notice = ws.notification("rpc.session", timeout=15)
        detected = time.monotonic() - started
        report("broker silent", ping_interval_s=1, ping_timeout_s=1, detected_after_s=detected)
        self.assertEqual(notice["params"], {"state": "ended", "reason": BROKER_LOST})
        # interval + timeout + one check period = 2.5 s; generous for load.
        self.assertLess(detected, 7.0)
        self.assertGreater(detected, 1.0)
        # Each session's connection has its own keep-alive: the other one
        # is dropped within the same bound.
        waitFor(lambda: metric(url, "pbgw_sessions") == 0, "every session to end", 10)
        self.assertLess(time.monotonic() - started, 7.0)
        reply = fetch(url, "POST", "/api/call/add", [1, 2], token=token)
        self.assertEqual((reply.status, reply.errorCode), (503, "session_lost"), reply)
        reply = waitFor(lambda: (r := fetch(url, "GET", "/readyz")).status == 503 and r,
                        "/readyz to be 503", 10)
        self.assertLess(reply.elapsed, 6.0)
        self.assertIn(b'"broker_unavailable"', reply.raw)

        deployment.broker.signal(signal.SIGCONT)
        waitFor(lambda: fetch(url, "GET", "/readyz").status == 200, "/readyz to be 200", 10)
        token = login(url, ALICE)
        self.assertEqual(fetch(url, "POST", "/api/call/add", [1, 2], token=token).body,
                         {"result": 3})

    def test_silentBrowserDropped(self) -> None:
        """
        A browser that completes the WebSocket handshake and then never
        answers a ping is dropped within ping interval + ping timeout; its
        session outlives the socket.
        """
        deployment = Deployment(self, gatewayEnv={
            "PBGW_PING_INTERVAL": "1", "PBGW_PING_TIMEOUT": "1",
        }).start()
        token = login(deployment.url, ALICE)
        raw = socket.create_connection(("127.0.0.1", deployment.httpPort), timeout=10)
        self.addCleanup(raw.close)
        raw.sendall(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{deployment.httpPort}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )
        started = time.monotonic()
        received = b""
        # Read (so the kernel's buffers never push back) but never answer.
        while True:
            try:
                chunk = raw.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        dropped = time.monotonic() - started
        report("browser silent", ping_interval_s=1, ping_timeout_s=1, dropped_after_s=dropped)
        self.assertIn(b"101 Switching Protocols", received)
        self.assertIn(b"\x89", received, "the gateway pinged")
        # Autobahn batches its ping timers: the drop may come a little early.
        self.assertGreater(dropped, 0.5)
        self.assertLess(dropped, 8.0)
        reply = fetch(deployment.url, "POST", "/api/call/add", [1, 2], token=token)
        self.assertEqual(reply.body, {"result": 3})


class StalledNegotiationTests(unittest.TestCase):
    """
    L{pb.PBClientFactory.disconnect} closes a connection whose PB
    negotiation has not finished (the peer accepted it and fell silent).
    """

    def test_disconnectBeforeNegotiation(self) -> None:
        """
        A client factory connected to a silent peer: C{disconnect()} closes
        the connection and the root object request fails, so a timed-out
        login or readiness probe leaves no connection behind.
        """
        factory = pb.PBClientFactory(clock=Clock())
        broker = factory.buildProtocol(None)
        transport = StringTransport()
        broker.makeConnection(transport)
        root = factory.getRootObject()
        failures: list[Any] = []
        root.addErrback(failures.append)
        factory.disconnect()
        self.assertTrue(transport.disconnecting)
        broker.connectionLost(None)
        factory.clientConnectionLost(None, Exception("closed"))
        self.assertEqual(len(failures), 1)

    def test_lostBeforeNegotiation(self) -> None:
        """
        A connection lost before PB negotiation (a TLS certificate refused,
        a peer closing at once) fails the waiting root object requests at
        once, even when no one calls C{clientConnectionLost} (a connection
        made through an endpoint).
        """
        factory = pb.PBClientFactory(clock=Clock())
        broker = factory.buildProtocol(None)
        broker.makeConnection(StringTransport())
        failures: list[Any] = []
        factory.getRootObject().addErrback(failures.append)
        factory.login(UsernamePassword(b"alice", b"password")).addErrback(failures.append)
        broker.connectionLost(None)
        self.assertEqual(len(failures), 2)
        self.assertEqual(factory.rootObjectRequests, [])
