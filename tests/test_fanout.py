"""
Tests for fan-out without waste: sessions that share a PB identity share
one PB subscription per live object, and the gateway fans updates out.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from gateway.client import Cache, GatewayClient
from gateway.service import GatewayService
from gateway.sessions import GatewayOptions
from pb.demo import DemoRealm
from pb.service import BrokerService

LOOPBACK = "tcp:0:interface=127.0.0.1"


async def waitFor(predicate: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class FanOutTests(TestCase):
    """
    Anonymous sessions are one PB identity: one login, one observer per live
    object, however many dashboards watch.
    """

    async def startGateway(self, **options: Any) -> None:
        self.realm = DemoRealm(clock=reactor)
        broker = BrokerService(reactor, LOOPBACK, self.realm)
        broker.startService()
        self.addCleanup(broker.stopService)
        port = (await broker.whenListening()).getHost().port  # type: ignore[attr-defined]
        self.gateway = GatewayService(
            reactor, LOOPBACK,
            GatewayOptions(broker=f"tcp:host=127.0.0.1:port={port}", **options),
        )
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        httpPort = (await self.gateway.whenListening()).getHost().port  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{httpPort}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def client(self, user: str | None = None) -> GatewayClient:
        client = GatewayClient(self.url, self.http)
        if user is None:
            await client.login(anonymous=True)
        else:
            await client.login(user, {"alice": "password", "bob": "secret"}[user])
        return client

    async def test_anonymousSessionsShareOneSubscription(self) -> None:
        """
        Five anonymous sessions watching the board cost the broker one login
        and one observer; a change reaches every one of them.
        """
        await self.startGateway()
        clients = [await self.client() for _ in range(5)]
        boards: list[Cache] = [await c.call("board") for c in clients]
        self.assertEqual(len(self.realm.board.observers), 1)
        self.assertEqual(self.gateway.table.loginCount(), 1)
        self.assertEqual(len({b.handle for b in boards}), 1)
        alice = await self.client("alice")
        await alice.call("addTask", "shared")
        mirror = self.gateway.table._anonymous.caches[boards[0].handle]  # type: ignore[union-attr]
        await waitFor(lambda: mirror.seq == 1)
        for board in boards:
            refreshed = await board.refresh()
            self.assertEqual([t["text"] for t in refreshed.state.values()], ["shared"])
            self.assertEqual(refreshed.seq, 1)
        await alice.call("board")
        self.assertEqual(len(self.realm.board.observers), 2, "alice has her own")

    async def test_releaseWhenNoSessionHoldsIt(self) -> None:
        """
        A shared cache is released (the broker stops observing) only when the
        last session holding it releases it or ends.
        """
        await self.startGateway()
        first, second = await self.client(), await self.client()
        board = await first.call("board")
        await second.call("board")
        await board.release()
        self.assertEqual(len(self.realm.board.observers), 1)
        await second.logout()
        await waitFor(lambda: len(self.realm.board.observers) == 0)

    async def test_sessionsStayScoped(self) -> None:
        """
        Sharing a login does not share handles a session was not given.
        """
        await self.startGateway()
        first, second = await self.client(), await self.client()
        counter = await first.call("counter")
        from gateway.client import GatewayClientError

        with self.assertRaises(GatewayClientError) as raised:
            await second._request("POST", f"/api/refs/{counter.handle}/value")
        self.assertEqual(raised.exception.status, 404)

    async def test_notShared(self) -> None:
        """
        With shareAnonymous off, each anonymous session is its own login.
        """
        await self.startGateway(shareAnonymous=False)
        for client in [await self.client() for _ in range(3)]:
            await client.call("board")
        self.assertEqual(len(self.realm.board.observers), 3)
        self.assertEqual(self.gateway.table.loginCount(), 3)
