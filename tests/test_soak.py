"""
A bounded soak: REST, WebSocket, SSE and native PB clients together at a
steady load against a broker and a gateway running as processes.

Quick by default (10 s of load, for CI); C{PBGW_SOAK_SECONDS=600} runs the
10-minute soak by hand.  It asserts zero failed requests, gateway RSS growth
under 10 % after warm-up, and that when every client has left the gateway
shows no sessions, handles or waiting calls and the broker has logged every
avatar out.  The figures are printed (C{pytest -s}) for
C{docs/reliability.md}.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from typing import Any

from test_faults import ALICE, BOB, Deployment, Socket, fetch, metric
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

import pb

SECONDS = float(os.environ.get("PBGW_SOAK_SECONDS", "10"))
# Each client waits this long between its requests: a steady load, not a
# flood, so that the figures mean the same on a loaded machine.
PAUSE = 0.01


class Load:
    """
    What the clients did: requests and failures by kind, and whether to go
    on.
    """

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.failures: list[str] = []
        self.updates: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def ok(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def failed(self, kind: str, what: Any) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.failures.append(f"{kind}: {what!r}"[:500])

    def updated(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.updates[kind] += count


def _restClient(url: str, load: Load, credentials: dict[str, Any]) -> None:
    """
    Log in, call, use a reference and a cache, release them, log out; again.
    """

    def call(method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        try:
            reply = fetch(url, method, path, body, token=token, timeout=30)
        except Exception as e:
            load.failed("rest", (path, e))
            return None
        if reply.status != 200:
            load.failed("rest", (path, reply))
            return None
        load.ok("rest")
        return reply.body

    while not load.stopping.is_set():
        login = call("POST", "/api/login", credentials)
        if login is None:
            time.sleep(PAUSE)
            continue
        token = login["token"]
        for _ in range(5):
            call("POST", "/api/call/add", [2, 3], token)
            time.sleep(PAUSE)
        ref = call("POST", "/api/call/counter", [], token)
        if ref is not None:
            handle = ref["result"]["$ref"]
            call("POST", f"/api/refs/{handle}/increment", [1], token)
            call("DELETE", f"/api/refs/{handle}", None, token)
        stats = call("POST", "/api/call/stats", [], token)
        if stats is not None:
            handle = stats["result"]["$cache"]
            call("GET", f"/api/caches/{handle}", None, token)
            call("DELETE", f"/api/caches/{handle}", None, token)
        if "username" in credentials:
            call("POST", "/api/call/store", ["k", {"$bytes": "aGVsbG8="}], token)
            call("POST", "/api/call/retrieve", ["k"], token)
        call("POST", "/api/logout", None, token)
        time.sleep(PAUSE)


def _webSocketClient(url: str, load: Load, credentials: dict[str, Any]) -> None:
    """
    One socket for the whole soak: log in, follow the live statistics, call
    the perspective and a reference; log out at the end.
    """
    try:
        ws = Socket(url)
        ws.call("rpc.login", credentials)
        ws.call("stats")
        ref = ws.call("counter")["$ref"]
    except Exception as e:
        load.failed("websocket", ("setup", e))
        return
    try:
        while not load.stopping.is_set():
            for method, params in [("add", [2, 3]),
                                   ("rpc.call", {"ref": ref, "method": "increment"})]:
                try:
                    response = ws.request(method, params, timeout=30)
                except Exception as e:
                    load.failed("websocket", (method, e))
                    return
                if "error" in response:
                    load.failed("websocket", (method, response))
                else:
                    load.ok("websocket")
            updates = [n for n in ws.notifications if n.get("method") == "rpc.update"]
            load.updated("websocket", len(updates))
            ws.notifications.clear()
            time.sleep(PAUSE)
        ws.call("rpc.logout")
    except Exception as e:
        load.failed("websocket", ("logout", e))
    finally:
        ws.close()


def _eventStreamClient(url: str, load: Load) -> None:
    """
    Follow the live statistics over Server-Sent Events until the end.
    """
    token = None
    try:
        reply = fetch(url, "POST", "/api/login", BOB)
        token = reply.body["token"]
        handle = fetch(url, "POST", "/api/call/stats", [], token=token).body["result"]["$cache"]
        host, _, port = url.partition("://")[2].partition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", f"/api/caches/{handle}/events",
                           headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        if response.status != 200:
            load.failed("sse", response.status)
            return
        load.ok("sse")
        while not load.stopping.is_set():
            line = response.readline()
            if not line:
                load.failed("sse", "the stream ended")
                return
            if line.startswith(b"event: "):
                load.updated("sse")
        connection.close()
    except Exception as e:
        load.failed("sse", e)
    finally:
        if token is not None:
            fetch(url, "POST", "/api/logout", token=token)


class SoakTests(TestCase):
    """
    All four kinds of client at once, for C{PBGW_SOAK_SECONDS}.
    """

    timeout = SECONDS * 2 + 120

    async def sleep(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def nativeClient(self, port: int, load: Load) -> None:
        """
        A native PB client of the broker (no gateway), calling steadily.
        """
        factory = pb.PBClientFactory(clock=reactor)
        reactor.connectTCP("127.0.0.1", port, factory)
        try:
            avatar = await factory.login(UsernamePassword(b"alice", b"password"))
            counter = await avatar.callRemote("counter")
            while not load.stopping.is_set():
                try:
                    self.assertEqual(await avatar.callRemote("add", 2, 3), 5)
                    await counter.callRemote("increment")
                    load.ok("pb")
                    load.ok("pb")
                except Exception as e:
                    load.failed("pb", e)
                await self.sleep(PAUSE)
        finally:
            factory.disconnect()

    async def brokerSessions(self, stats: Any) -> int:
        await self.sleep(0)
        return int(stats.value["sessions"])

    async def test_soak(self) -> None:
        """
        REST clients (password and anonymous logins, calls, references,
        caches, logouts), WebSocket clients (live updates, calls, reference
        calls), an SSE stream and a native PB client, together: no request
        fails; the gateway's RSS grows under 10 % after warm-up; afterwards
        the gateway holds no session, handle or waiting call and the broker
        has logged every avatar out (its only session is the observer's).
        """
        deployment = Deployment(self).start()
        url = deployment.url
        # An observer on the broker itself: the demo's live statistics.
        observer = pb.PBClientFactory(clock=reactor)
        reactor.connectTCP("127.0.0.1", deployment.pbPort, observer)
        self.addCleanup(observer.disconnect)
        # Held for the whole test: dropping the avatar's reference logs it out.
        self.observerAvatar = await observer.login(Anonymous())
        stats = await self.observerAvatar.callRemote("stats")

        load = Load()
        threads = [
            threading.Thread(target=_restClient, args=(url, load, ALICE)),
            threading.Thread(target=_restClient, args=(url, load, {"anonymous": True})),
            threading.Thread(target=_webSocketClient, args=(deployment.wsURL, load, BOB)),
            threading.Thread(target=_webSocketClient,
                             args=(deployment.wsURL, load, {"anonymous": True})),
            threading.Thread(target=_eventStreamClient, args=(url, load)),
        ]
        for thread in threads:
            thread.start()
        nativeDone = Deferred.fromCoroutine(self.nativeClient(deployment.pbPort, load))
        started = time.monotonic()
        warmUp = max(3.0, SECONDS * 0.25)
        await self.sleep(warmUp)
        rssAfterWarmUp = deployment.gateway.rssKiB()
        samples = [rssAfterWarmUp]
        requestsAtWarmUp = sum(load.requests.values())
        while time.monotonic() - started < SECONDS:
            await self.sleep(min(5.0, SECONDS / 4))
            samples.append(deployment.gateway.rssKiB())
        rssAtEnd = deployment.gateway.rssKiB()
        elapsed = time.monotonic() - started
        during = (metric(url, "pbgw_sessions"), metric(url, "pbgw_handles"))
        load.stopping.set()
        for thread in threads:
            while thread.is_alive():
                await self.sleep(0.05)
        await nativeDone

        total = sum(load.requests.values())
        summary = {
            "seconds": round(elapsed, 1),
            "requests": dict(load.requests),
            "total": total,
            "per_second": round((total - requestsAtWarmUp) / (elapsed - warmUp), 1),
            "live_updates_received": dict(load.updates),
            "failures": len(load.failures),
            "gateway_rss_kib_after_warm_up": rssAfterWarmUp,
            "gateway_rss_kib_at_end": rssAtEnd,
            "gateway_rss_kib_max": max(samples),
            "growth_percent": round(100 * (rssAtEnd - rssAfterWarmUp) / rssAfterWarmUp, 1),
            "sessions_and_handles_during_load": during,
        }
        print("\n[soak] " + json.dumps(summary))
        self.assertEqual(load.failures, [])
        for kind in ["rest", "websocket", "sse", "pb"]:
            self.assertGreater(load.requests[kind], 0, kind)
        self.assertGreater(load.updates["sse"], 0)
        self.assertGreater(load.updates["websocket"], 0)
        self.assertLess(rssAtEnd, rssAfterWarmUp * 1.10, summary)

        # Everyone left: nothing held on the gateway, every avatar logged out.
        deadline = time.monotonic() + 10
        while True:
            figures = [metric(url, name) for name in
                       ["pbgw_sessions", "pbgw_handles", "pbgw_pb_calls_waiting"]]
            sessions = await self.brokerSessions(stats)
            if figures == [0, 0, 0] and sessions == 1:
                break
            if time.monotonic() > deadline:
                self.fail(f"left behind: gateway {figures}, broker sessions {sessions}")
            await self.sleep(0.2)
        print(f"[soak] after: gateway sessions/handles/waiting {figures}, "
              f"broker sessions {sessions} (the observer)")
