"""
The fan-out suite: one change to a shared live object delivered to 100 and
1,000 WebSocket clients, through the gateway and by a bare autobahn
broadcast.

Through the gateway: the clients log in anonymously (anonymous sessions share
one PB login, so the broker has one observer and the gateway fans each update
out) and call C{board} once, which subscribes them to the demo's shared
to-do board. A driver in this process, a native C{pb} client logged in to the
broker as alice, then flips a task's C{done} flag with C{setDone} (an
C{observe_set} update) one change at a time, each sent once every client has
the previous one.

The baseline is an autobahn server (C{python -m bench._baselines autobahn
--trigger-port 0}) whose clients call C{board} to subscribe; the driver
writes each message to its trigger port and it sends it to every subscriber
with C{sendMessage}: the same bytes the gateway sends for such a change (an
C{rpc.update} notification of the same shape and length).

Measured per change: the server process's CPU per recipient (C{/proc/PID/stat}
around a burst of changes; the gateway process only, the broker's is in the
note), and the delivery latency from the driver's timestamp just before the
change to each client's receipt (C{time.monotonic}, one clock for every
process on the machine). The clients are minimal asyncio WebSocket clients
(C{bench._clients watchers}, a few microseconds per message, so that the
latencies are the servers') in one or two processes on the load generators'
CPU, 500 at most each. A burst has at least C{recipients} deliveries, so
that the CPU time read in clock ticks (10 ms) is precise to a few percent.

The gateway runs with C{--ping-interval 0}: autobahn's keep-alive pings,
one per socket every 20 s, would otherwise land in some bursts and not in
others; the baseline sends none either.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

import pb
from bench._clients import percentile
from bench._load import resultOf
from bench._progress import progress
from bench._servers import (
    HOST,
    MANY_SESSIONS,
    Child,
    Gateway,
    loadGeneratorCpu,
    pythonModule,
    spawn,
    startGateway,
    startServer,
    stopAll,
    together,
)
from bench.pb_core import Row, pairedRatio

__all__ = ["FULL", "QUICK", "Settings", "run"]

SUITE = "fanout"
SIZES = (100, 1000)
PER_PROCESS = 500
# Sockets each watchers process opens at once: two processes together stay
# within Twisted's listening backlog of 50, so none waits a second to retry.
# Nothing is measured while they connect.
CONNECT_CONCURRENCY = 25
TARGETS = ("gateway", "autobahn")
CHANGE_TIMEOUT = 30.0
READY_TIMEOUT = 180.0


@attrs.frozen
class Settings:
    """
    @ivar repetitions: bursts of changes per server and size.
    @ivar changes: the fewest changes per burst.
    @ivar recipients: the fewest deliveries per burst (changes x clients).
    """

    repetitions: int
    changes: int
    recipients: int

    def changesFor(self, size: int) -> int:
        return max(self.changes, -(-self.recipients // size))


QUICK = Settings(repetitions=3, changes=5, recipients=5_000)
FULL = Settings(repetitions=5, changes=20, recipients=20_000)


def _progress(message: str) -> None:
    progress(SUITE, message)


def updateMessage(seq: int, done: bool) -> bytes:
    """
    The notification the gateway sends for C{setDone} on the board's task
    C{"1"}: what the autobahn baseline broadcasts.
    """
    update = {
        "jsonrpc": "2.0",
        "method": "rpc.update",
        "params": {
            "cache": "cBENCHbenchBENCHbench",
            "seq": seq,
            "method": "observe_set",
            "args": [seq, "1", {"text": "fan-out benchmark", "done": done, "by": "alice"}],
        },
    }
    return json.dumps(update, separators=(",", ":")).encode("utf-8")


class _Watchers:
    """
    The client processes of one server: they announce when all their
    sockets have the k-th update.
    """

    def __init__(self, reactor: Any, children: list[Child]) -> None:
        self.reactor = reactor
        self.children = children
        self.got: dict[int, int] = {}
        self._waiting: dict[int, Deferred[None]] = {}
        for child in children:
            child.listeners.append(self._line)

    def _line(self, line: str) -> None:
        if line.startswith("GOT "):
            index = int(line.split()[1])
            self.got[index] = self.got.get(index, 0) + 1
            waiter = self._waiting.get(index)
            if waiter is not None and self.got[index] == len(self.children):
                del self._waiting[index]
                waiter.callback(None)

    async def delivered(self, index: int) -> None:
        """
        Wait until every socket has the C{index}-th update.
        """
        if self.got.get(index, 0) >= len(self.children):
            return
        d: Deferred[None] = Deferred()
        self._waiting[index] = d
        d.addTimeout(CHANGE_TIMEOUT, self.reactor)
        try:
            await d
        except Exception:
            raise RuntimeError(
                f"update {index} did not reach every client within {CHANGE_TIMEOUT:g} s"
            ) from None

    async def results(self) -> list[dict[str, Any]]:
        return [await resultOf(child, 60) for child in self.children]


async def _watchers(reactor: Any, url: str, size: int, cpu: int | None,
                    children: list[Child]) -> _Watchers:
    started = []
    for start in range(0, size, PER_PROCESS):
        count = min(PER_PROCESS, size - start)
        child = spawn(
            reactor, f"watchers ({count})",
            pythonModule("bench._clients", "watchers", "--url", url, "--count", str(count),
                         "--login", "anonymous", "--subscribe",
                         "--concurrency", str(CONNECT_CONCURRENCY)),
            cpu,
        )
        children.append(child)
        started.append(child)
    for child in started:
        await child.waitFor(r"^READY", READY_TIMEOUT)
    return _Watchers(reactor, started)


class _Trigger(Protocol):
    pass


@attrs.define
class _Burst:
    """
    One burst: the server's CPU seconds (and the broker's) and the driver's
    timestamps of its changes, by update index.
    """

    cpu: float
    brokerCpu: float
    sent: dict[int, float]


@attrs.define
class _Target:
    """
    One server with its watchers and its way of making a change.
    """

    name: str
    server: Child
    broker: Child | None
    watchers: _Watchers
    change: Any
    updates: int = 0
    bursts: list[_Burst] = attrs.Factory(list)

    async def burst(self, changes: int) -> None:
        sent: dict[int, float] = {}
        cpuBefore = self.server.cpuSeconds()
        brokerBefore = self.broker.cpuSeconds() if self.broker is not None else 0.0
        for _ in range(changes):
            self.updates += 1
            sent[self.updates] = time.monotonic()
            await self.change(self.updates)
            await self.watchers.delivered(self.updates)
        cpu = self.server.cpuSeconds() - cpuBefore
        brokerCpu = (self.broker.cpuSeconds() - brokerBefore) if self.broker is not None else 0.0
        self.bursts.append(_Burst(cpu, brokerCpu, sent))


async def _gatewayDriver(reactor: Any, brokerPort: int) -> tuple[Any, pb.PBClientFactory]:
    """
    alice's avatar, over a native PB connection to the broker.
    """
    factory = pb.PBClientFactory(clock=reactor)
    await pb.connect(HOST, brokerPort, factory, reactor=reactor)
    avatar = await factory.login(UsernamePassword(b"alice", b"password"))
    return avatar, factory


@attrs.frozen
class _Servers:
    """
    The gateway and the autobahn baseline for one number of clients, with
    the autobahn's port and trigger port.
    """

    gateway: Gateway
    autobahn: Child
    port: int
    triggerPort: int


async def _startServers(reactor: Any, serverCpu: int | None, children: list[Child]) -> _Servers:
    """
    Start a gateway and an autobahn baseline side by side; every process
    started is added to C{children} at once.
    """

    async def startAutobahn() -> tuple[Child, int, int]:
        autobahn, (port, trigger) = await startServer(
            reactor, "baseline autobahn",
            pythonModule("bench._baselines", "autobahn", "--trigger-port", "0"), serverCpu,
            r"^PORT (\d+)", r"^TRIGGER (\d+)",
        )
        children.append(autobahn)
        return autobahn, int(port.group(1)), int(trigger.group(1))

    async def startGatewayHere() -> Gateway:
        gateway = await startGateway(reactor, serverCpu, "--ping-interval", "0", *MANY_SESSIONS)
        children.extend([gateway.gateway, gateway.broker])
        return gateway

    (autobahn, port, triggerPort), gateway = await together(startAutobahn(), startGatewayHere())
    return _Servers(gateway, autobahn, port, triggerPort)


async def _measureSize(reactor: Any, size: int, settings: Settings, servers: _Servers,
                       clientCpu: int | None, children: list[Child]) -> list[Row]:
    """
    Connect C{size} clients to each of C{servers} and measure bursts of
    changes, interleaved; the client processes are added to C{children}.
    """
    driverFactory: pb.PBClientFactory | None = None
    trigger: Any = None
    gateway = servers.gateway
    try:
        avatar, driverFactory = await _gatewayDriver(reactor, gateway.brokerPort)
        taskID = await avatar.callRemote("addTask", "fan-out benchmark")
        trigger = await TCP4ClientEndpoint(reactor, HOST, servers.triggerPort).connect(
            Factory.forProtocol(_Trigger)
        )

        async def gatewayChange(index: int) -> None:
            await avatar.callRemote("setDone", taskID, index % 2 == 1)

        async def autobahnChange(index: int) -> None:
            trigger.transport.write(updateMessage(index + 1, index % 2 == 1) + b"\n")

        _progress(f"{size:,} clients: connecting")
        gatewayWatchers, autobahnWatchers = await together(
            _watchers(reactor, gateway.wsURL, size, clientCpu, children),
            _watchers(reactor, f"ws://{HOST}:{servers.port}/", size, clientCpu, children),
        )
        targets = {
            "gateway": _Target(
                "gateway", gateway.gateway, gateway.broker, gatewayWatchers, gatewayChange
            ),
            "autobahn": _Target(
                "autobahn", servers.autobahn, None, autobahnWatchers, autobahnChange
            ),
        }
        for target in targets.values():
            await target.burst(2)  # warm-up
            target.bursts.clear()
        for repetition in range(settings.repetitions):
            _progress(f"{size:,} clients: repetition {repetition + 1}/{settings.repetitions}")
            for name in TARGETS if repetition % 2 == 0 else TARGETS[::-1]:
                await targets[name].burst(settings.changesFor(size))
        arrivals = {
            name: [socket for result in await target.watchers.results()
                   for socket in _checked(result, target.updates)]
            for name, target in targets.items()
        }
    finally:
        if trigger is not None:
            trigger.transport.loseConnection()
        if driverFactory is not None:
            driverFactory.disconnect()
    return _rows(size, settings, targets, arrivals)


def _checked(result: dict[str, Any], updates: int) -> list[list[float]]:
    if result["snapshots"]:
        raise RuntimeError(f"{result['snapshots']} clients were resynchronised (too slow)")
    for socket in result["arrivals"]:
        if len(socket) != updates:
            raise RuntimeError(f"a client got {len(socket)} updates of {updates}")
    arrivals: list[list[float]] = result["arrivals"]
    return arrivals


def _latencies(burst: _Burst, arrivals: list[list[float]]) -> list[float]:
    return [
        (socket[index - 1] - sent) * 1000
        for index, sent in burst.sent.items()
        for socket in arrivals
    ]


def _rows(size: int, settings: Settings, targets: dict[str, _Target],
          arrivals: dict[str, list[list[float]]]) -> list[Row]:
    changes = settings.changesFor(size)
    perRecipient: dict[str, list[float]] = {}
    p50: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    for name, target in targets.items():
        perRecipient[name] = [burst.cpu / (changes * size) * 1e6
                              for burst in target.bursts]
        latencies = [_latencies(burst, arrivals[name]) for burst in target.bursts]
        p50[name] = [percentile(values, 0.5) for values in latencies]
        p99[name] = [percentile(values, 0.99) for values in latencies]
    gateway = targets["gateway"]
    brokerPerChange = (
        sum(burst.brokerCpu for burst in gateway.bursts) / (len(gateway.bursts) * changes) * 1e6
    )
    n = f"n={settings.repetitions} bursts of {changes} changes"
    return [
        Row(
            SUITE,
            f"fan-out to {size:,} clients: server CPU per recipient, gateway vs autobahn",
            "µs",
            statistics.median(perRecipient["gateway"]),
            statistics.median(perRecipient["autobahn"]),
            higherIsBetter=False,
            target=0.5,
            note=f"{n}; spread gateway ±{_spreadPercent(perRecipient['gateway'])}, "
            f"autobahn ±{_spreadPercent(perRecipient['autobahn'])}; "
            f"the broker's CPU per change (not counted): {brokerPerChange:,.0f} µs",
            pairedRatio=pairedRatio(perRecipient["autobahn"], perRecipient["gateway"]),
        ),
        Row(
            SUITE,
            f"fan-out to {size:,} clients: delivery p99, gateway vs autobahn",
            "ms",
            statistics.median(p99["gateway"]),
            statistics.median(p99["autobahn"]),
            higherIsBetter=False,
            target=0.5,
            note=f"{n}; p50 gateway {statistics.median(p50['gateway']):.1f} ms, "
            f"autobahn {statistics.median(p50['autobahn']):.1f} ms",
            pairedRatio=pairedRatio(p99["autobahn"], p99["gateway"]),
        ),
    ]


def _spreadPercent(values: list[float]) -> str:
    median = statistics.median(values)
    return f"{(max(values) - min(values)) / 2 / median * 100:.0f}%"


async def run(reactor: Any, quick: bool) -> list[Row]:
    """
    Measure the fan-out to each number of clients, gateway and autobahn
    interleaved.
    """
    settings = QUICK if quick else FULL
    rows: list[Row] = []
    children: dict[int, list[Child]] = {size: [] for size in SIZES}
    with loadGeneratorCpu() as (serverCpu, clientCpu):
        _progress(f"servers on CPU {serverCpu}, clients and driver on CPU {clientCpu}")
        try:
            # Every size's servers start at once (they idle until their turn),
            # and each size's processes stop once it is measured.
            started = await together(*(
                _startServers(reactor, serverCpu, children[size]) for size in SIZES
            ))
            for size, servers in zip(SIZES, started, strict=True):
                try:
                    rows += await _measureSize(
                        reactor, size, settings, servers, clientCpu, children[size]
                    )
                finally:
                    await stopAll(children[size])
        finally:
            await stopAll([child for each in children.values() for child in each])
    return rows
