"""
Tests for writing at once: L{pb.broker.writeNow} on real TCP connections,
and the gateway's L{WriteBatch}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pb
from gateway._writes import WriteBatch
from pb.broker import writeNow


class Collect(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.waiting: Deferred[bytes] | None = None
        self.want = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.waiting is not None and len(self.received) >= self.want:
            waiting, self.waiting = self.waiting, None
            waiting.callback(self.received)

    def until(self, size: int) -> Deferred[bytes]:
        self.want = size
        self.waiting = Deferred()
        if len(self.received) >= size:
            self.dataReceived(b"")
        return self.waiting


class WriteNowTests(TestCase):
    """
    On an idle TCP connection the bytes go out from C{writeNow} itself; on
    a busy one they queue behind what is there, in order.
    """

    async def connected(self) -> tuple[Any, Collect]:
        servers: list[Protocol] = []

        def build() -> Protocol:
            protocol = Protocol()
            servers.append(protocol)
            return protocol

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build))
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Collect))
        self.addCleanup(client.transport.loseConnection)
        while not servers or servers[0].transport is None:
            await Deferred.fromCoroutine(self._turn())
        self.addCleanup(servers[0].transport.loseConnection)
        return servers[0].transport, client

    async def _turn(self) -> None:
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.01, lambda: None)

    async def test_idleSentAtOnce(self) -> None:
        transport, client = await self.connected()
        queued: list[bytes] = []
        transport.write = queued.append
        writeNow(transport, b"hello")
        self.assertEqual(queued, [])
        self.assertEqual(await client.until(5), b"hello")

    async def test_busyQueuesInOrder(self) -> None:
        """
        With bytes already queued on the transport, C{writeNow} queues
        behind them.
        """
        transport, client = await self.connected()
        transport.write(b"first ")
        writeNow(transport, b"second")
        self.assertEqual(await client.until(12), b"first second")

    def test_otherTransports(self) -> None:
        transport = StringTransport()
        writeNow(transport, b"x")
        self.assertEqual(transport.value(), b"x")


class WriteBatchTests(SynchronousTestCase):
    def test_heldUntilOutermostRelease(self) -> None:
        """
        Writes are held per transport while a hold is in effect and written
        at the outermost release, joined, in order.
        """
        batch = WriteBatch()
        one, two = StringTransport(), StringTransport()
        self.assertFalse(batch.add(one, b"now"))
        batch.hold()
        batch.hold()
        self.assertTrue(batch.add(one, b"a"))
        self.assertTrue(batch.add(two, b"b"))
        self.assertTrue(batch.add(one, b"c"))
        batch.release()
        self.assertEqual((one.value(), two.value()), (b"", b""))
        batch.release()
        self.assertEqual((one.value(), two.value()), (b"ac", b"b"))
        batch.hold()
        batch.release()
        self.assertEqual(one.value(), b"ac")

    def test_gatewayBrokersBatch(self) -> None:
        """
        The gateway's connections to the broker hold the sockets' writes
        while they handle data.
        """
        from twisted.internet.task import Clock

        from gateway._writes import BatchingBroker
        from gateway.sessions import GatewayOptions, SessionTable

        table = SessionTable(Clock(), GatewayOptions())
        broker = table.newFactory().buildProtocol(None)
        assert isinstance(broker, BatchingBroker)
        self.assertIs(broker.writes, table.writes)
        socket = StringTransport()
        broker.makeConnection(StringTransport())
        held: list[bool] = []
        broker._expressionReceived = lambda expression: held.append(  # type: ignore[method-assign]
            table.writes.add(socket, b"update"))
        broker.dataReceived(pb.banana.encode([b"pb", b"none"]))
        self.assertEqual(held, [True])
        self.assertEqual(socket.value(), b"update")
