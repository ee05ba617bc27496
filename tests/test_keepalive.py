"""
Tests for the PB keep-alive: a silent peer is detected within the configured
time, against our broker and Twisted's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.spread import pb as twistedPB
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

import pb


class Root(pb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


class TwistedRoot(twistedPB.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


class KeepAliveTests(SynchronousTestCase):
    """
    L{pb.BrokerOptions.keepAliveInterval} probes an idle peer and drops it
    when it stays silent.
    """

    def connect(self, serverFactory: Any) -> tuple[Clock, Any, Any]:
        clock = Clock()
        options = pb.BrokerOptions(keepAliveInterval=5, keepAliveTimeout=3)
        clientFactory = pb.PBClientFactory(options=options, clock=clock)
        client, _server, pump = connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None),
            clock=clock,
        )
        pump.flush()
        return clock, client, pump

    def assertDetects(self, serverFactory: Any) -> None:
        clock, client, pump = self.connect(serverFactory)
        for _ in range(20):
            clock.advance(1)
            pump.flush()
        self.assertFalse(client.disconnected, "an answering peer must stay connected")
        # The peer goes silent: nothing it sends arrives any more.
        for _ in range(9):
            clock.advance(1)
        self.assertTrue(client.disconnected, "a silent peer must be dropped")

    def test_ourBroker(self) -> None:
        """
        Our broker answers the probe; when it stops answering the client
        drops the connection within interval + timeout.
        """
        self.assertDetects(pb.PBServerFactory(Root()))

    def test_twistedBroker(self) -> None:
        """
        Twisted's broker answers the probe with C{didNotUnderstand} too.
        """
        self.assertDetects(twistedPB.PBServerFactory(TwistedRoot()))

    def test_callsStillWork(self) -> None:
        """
        Probing does not disturb calls.
        """
        clock, client, pump = self.connect(pb.PBServerFactory(Root()))
        for _ in range(12):
            clock.advance(1)
            pump.flush()
        results: list[Any] = []
        client.remoteForName("root").callRemote("add", 2, 3).addBoth(results.append)
        pump.flush()
        self.assertEqual(results, [5])
