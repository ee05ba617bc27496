"""
The memory suite: what an idle WebSocket session costs the gateway, against
bare autobahn and bare PB connections.

Each measurement starts fresh processes (pinned to the servers' CPU), opens
one connection of the kind measured (so that lazily imported code and
first-use caches are not charged to the sessions), reads the resident set
size (C{VmRSS}), opens N more, lets them settle, and reads it again: the
difference over N is the cost of one. The kinds:

  - gateway, alice: N WebSockets logged in with a password, each its own PB
    login (a PB connection from the gateway to the broker);
  - gateway, anonymous: N WebSockets logged in anonymously, which share one
    PB login;
  - bare autobahn: N WebSockets to an autobahn server that does nothing;
  - bare PB: N Twisted PB client connections (C{twisted.spread.pb}, each
    with its root object) to a Twisted PB server, measured in the client
    process, as the gateway is the PB client of its sessions; the server's
    side is in the note.

The clients are the minimal asyncio WebSocket clients of C{bench._clients
watchers} on the load generators' CPU. The gateway runs with its defaults
except the per-user and connection limits, raised far above N. Full mode
also opens 10,000 anonymous sessions on one gateway, once, if the
file-descriptor limits allow.
"""

from __future__ import annotations

import json
import resource
import statistics
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from bench._progress import progress
from bench._servers import (
    HOST,
    MANY_SESSIONS,
    Child,
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

SUITE = "memory"
BUDGET_KIB = 40.0
KINDS = ("alice", "anonymous", "autobahn", "pb")
PER_PROCESS = 5000
READY_TIMEOUT = 300.0


@attrs.frozen
class Settings:
    """
    @ivar repetitions: measurements of each kind.
    @ivar sessions: sessions (connections) per measurement.
    @ivar many: anonymous sessions of the one large measurement (0: none).
    @ivar settleSeconds: the pause before each reading of the memory.
    @ivar together: measure the kinds of a repetition at the same time,
        each on its fresh processes, rather than one after another. A
        process's memory is its own, and the figures come out the same
        (alice 25.0-25.3 KiB a session together, 25.1-25.5 one after
        another); it saves most of a quick run's time.
    """

    repetitions: int
    sessions: int
    many: int
    settleSeconds: float
    together: bool = False


QUICK = Settings(repetitions=3, sessions=300, many=0, settleSeconds=0.2, together=True)
FULL = Settings(repetitions=3, sessions=1000, many=10_000, settleSeconds=1.0)


def _progress(message: str) -> None:
    progress(SUITE, message)


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def _watchers(reactor: Any, url: str, count: int, login: str, cpu: int | None,
                    children: list[Child]) -> list[Child]:
    """
    Start watcher processes that open one socket (the warm-up) and say
    C{WARM}; after L{_proceed} they open C{count} more between them.
    """
    started = []
    for start in range(0, count, PER_PROCESS):
        child = spawn(
            reactor, f"watchers ({login})",
            pythonModule("bench._clients", "watchers", "--url", url, "--login", login,
                         "--warm", "1", "--count", str(min(PER_PROCESS, count - start))),
            cpu,
        )
        children.append(child)
        started.append(child)
    for child in started:
        await child.waitFor(r"^WARM", READY_TIMEOUT)
    return started


async def _proceed(watchers: list[Child]) -> float:
    """
    Let the watchers open their sockets; the seconds the slowest took.
    """
    for child in watchers:
        child.write(b"go\n")
    seconds = 0.0
    for child in watchers:
        match = await child.waitFor(r"^READY \d+ in ([\d.]+) s", READY_TIMEOUT)
        seconds = max(seconds, float(match.group(1)))
    return seconds


@attrs.frozen
class _Measured:
    """
    KiB per session of the measured process, and of its peer (the broker,
    or the PB server) when there is one.
    """

    perSession: float
    peerPerSession: float | None = None
    openSeconds: float = 0.0
    cpuPerSession: float = 0.0


@attrs.define
class _Subject:
    """
    The fresh server processes of one kind of measurement, started ahead of
    it (all kinds start together, which saves most of the start-up time).

    @ivar server: the process measured (the gateway, or the bare server).
    @ivar peer: the gateway's broker, whose growth goes in the notes.
    @ivar children: every process to stop: the servers and the clients
        that hold their sessions.
    """

    kind: str
    children: list[Child]
    server: Child | None = None
    peer: Child | None = None
    url: str = ""
    port: int = 0

    async def measure(self, reactor: Any, count: int, clientCpu: int | None,
                      settle: float) -> _Measured:
        """
        Open C{count} more sessions (connections) and measure what they
        took; they stay open until L{stop}.
        """
        if self.server is None:
            raise RuntimeError(f"the {self.kind} server has not started")
        if self.kind == "pb":
            return await self._measurePB(reactor, self.server, count, clientCpu, settle)
        server, peer = self.server, self.peer
        login = "none" if self.kind == "autobahn" else self.kind
        watchers = await _watchers(reactor, self.url, count, login, clientCpu, self.children)
        await _sleep(reactor, settle)
        before = server.rssKiB()
        peerBefore = peer.rssKiB() if peer is not None else 0
        cpuBefore = server.cpuSeconds()
        seconds = await _proceed(watchers)
        cpu = server.cpuSeconds() - cpuBefore
        await _sleep(reactor, settle)
        after = server.rssKiB()
        peerAfter = peer.rssKiB() if peer is not None else 0
        return _Measured(
            (after - before) / count,
            (peerAfter - peerBefore) / count if peer is not None else None,
            seconds,
            cpu / count,
        )

    async def _measurePB(self, reactor: Any, server: Child, count: int,
                         clientCpu: int | None, settle: float) -> _Measured:
        serverBefore = server.rssKiB()
        clients = spawn(
            reactor, "Twisted PB clients",
            pythonModule("bench._baselines", "pb-clients", "--pb-port", str(self.port),
                         "--count", str(count)),
            clientCpu,
        )
        self.children.append(clients)
        await clients.waitFor(r"^READY", READY_TIMEOUT)
        await _sleep(reactor, settle)
        serverAfter = server.rssKiB()
        figures = json.loads(next(line for line in clients.lines if line.startswith("{")))
        return _Measured((figures["after"] - figures["before"]) / count,
                         (serverAfter - serverBefore) / count)

    async def stop(self) -> None:
        await stopAll(self.children)


async def _start(reactor: Any, kind: str, serverCpu: int | None) -> _Subject:
    subject = _Subject(kind, [])
    try:
        if kind in ("alice", "anonymous"):
            gateway = await startGateway(reactor, serverCpu, *MANY_SESSIONS)
            subject.children += [gateway.broker, gateway.gateway]
            subject.server, subject.peer = gateway.gateway, gateway.broker
            subject.url = gateway.wsURL
        else:
            server, (port,) = await startServer(
                reactor, f"baseline {kind}", pythonModule("bench._baselines", kind), serverCpu,
                r"^PORT (\d+)",
            )
            subject.children.append(server)
            subject.server = server
            subject.port = int(port.group(1))
            subject.url = f"ws://{HOST}:{subject.port}/"
    except BaseException:
        await subject.stop()
        raise
    return subject


async def _startAll(reactor: Any, kinds: Sequence[str], serverCpu: int | None) -> list[_Subject]:
    """
    Start the processes of every kind at once; stop them all if one fails.
    """
    results: list[tuple[bool, Any]] = await DeferredList(
        [Deferred.fromCoroutine(_start(reactor, kind, serverCpu)) for kind in kinds],
        consumeErrors=True,
    )
    subjects: list[_Subject] = [result for ok, result in results if ok]
    failures: list[Failure] = [result for ok, result in results if not ok]
    if failures:
        for subject in subjects:
            await subject.stop()
        failures[0].raiseException()
    return subjects


def _fileLimit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


async def _many(reactor: Any, count: int, serverCpu: int | None,
                clientCpu: int | None) -> Row | None:
    """
    One gateway with C{count} anonymous sessions, if the file-descriptor
    limit lets a process hold them; L{None} (with a note on stderr) if not.
    """
    # The gateway needs a descriptor per session; a watcher process one per
    # socket (PER_PROCESS each). Both may raise their soft limit to the hard one.
    limit = _fileLimit()
    if limit < count + 100:
        _progress(f"{count:,} sessions skipped: the file-descriptor limit is {limit:,}")
        return None
    _progress(f"{count:,} anonymous sessions on one gateway")
    subject = await _start(reactor, "anonymous", serverCpu)
    try:
        measured = await subject.measure(reactor, count, clientCpu, FULL.settleSeconds)
    finally:
        await subject.stop()
    return Row(
        SUITE,
        f"idle WebSocket session, anonymous, {count:,} sessions: gateway RSS vs the budget",
        "KiB",
        round(measured.perSession, 1),
        BUDGET_KIB,
        higherIsBetter=False,
        target=1.0,
        note=f"n=1; all {count:,} opened and logged in, in {measured.openSeconds:.0f} s "
        f"({measured.cpuPerSession * 1000:.1f} ms of gateway CPU each); the limit is the "
        f"file-descriptor limit, {limit:,} per process (soft raised to hard): about "
        f"{limit - 100:,} sessions per gateway process",
    )


async def run(reactor: Any, quick: bool) -> list[Row]:
    """
    Measure each kind, interleaved, and compare the gateway's sessions with
    the budget and with the bare connections.
    """
    settings = QUICK if quick else FULL
    measured: dict[str, list[_Measured]] = {kind: [] for kind in KINDS}
    with loadGeneratorCpu() as (serverCpu, clientCpu):
        _progress(f"servers on CPU {serverCpu}, clients on CPU {clientCpu}")
        if settings.together:
            await _measureTogether(reactor, settings, measured, serverCpu, clientCpu)
        else:
            await _measureInTurn(reactor, settings, measured, serverCpu, clientCpu)
        many = await _many(reactor, settings.many, serverCpu, clientCpu) if settings.many else None
    rows = _rows(measured, settings)
    if many is not None:
        rows.append(many)
    return rows


async def _measureInTurn(
    reactor: Any, settings: Settings, measured: dict[str, list[_Measured]],
    serverCpu: int | None, clientCpu: int | None,
) -> None:
    """
    For every repetition, start fresh processes for every kind and measure
    the kinds one after another (in an order that flips every repetition),
    stopping each once measured.
    """
    for repetition in range(settings.repetitions):
        _progress(f"{settings.sessions:,} sessions: repetition {repetition + 1}/"
                  f"{settings.repetitions}")
        order = KINDS if repetition % 2 == 0 else KINDS[::-1]
        subjects = await _startAll(reactor, order, serverCpu)
        for index, subject in enumerate(subjects):
            try:
                measured[subject.kind].append(await subject.measure(
                    reactor, settings.sessions, clientCpu, settings.settleSeconds
                ))
            except BaseException:
                await together(*(other.stop() for other in subjects[index + 1:]))
                raise
            finally:
                await subject.stop()


async def _measureTogether(
    reactor: Any, settings: Settings, measured: dict[str, list[_Measured]],
    serverCpu: int | None, clientCpu: int | None,
) -> None:
    """
    For every repetition, start fresh processes for every kind, measure the
    kinds at the same time, and stop them.
    """
    for repetition in range(settings.repetitions):
        _progress(f"{settings.sessions:,} sessions: repetition {repetition + 1}/"
                  f"{settings.repetitions}, kinds at once")
        subjects = await _startAll(reactor, KINDS, serverCpu)
        try:
            results = await together(*(
                subject.measure(reactor, settings.sessions, clientCpu, settings.settleSeconds)
                for subject in subjects
            ))
        finally:
            await together(*(subject.stop() for subject in subjects))
        for subject, result in zip(subjects, results, strict=True):
            measured[subject.kind].append(result)


def _median(values: list[_Measured], peer: bool = False, cpu: bool = False) -> float:
    if peer:
        return statistics.median(v.peerPerSession or 0.0 for v in values)
    if cpu:
        return statistics.median(v.cpuPerSession for v in values) * 1000
    return statistics.median(v.perSession for v in values)


def _rows(measured: dict[str, list[_Measured]], settings: Settings) -> list[Row]:
    count = settings.sessions
    n = f"n={settings.repetitions}"
    if settings.together:
        n += " (kinds measured at once)"
    autobahn = [m.perSession for m in measured["autobahn"]]
    pbClient = [m.perSession for m in measured["pb"]]
    bare = [a + p for a, p in zip(autobahn, pbClient, strict=True)]
    alice = [m.perSession for m in measured["alice"]]
    anonymous = [m.perSession for m in measured["anonymous"]]
    brokerAlice = _median(measured["alice"], peer=True)
    return [
        Row(
            SUITE,
            f"idle WebSocket session, alice (own PB login), {count:,} sessions: "
            "gateway RSS vs the budget",
            "KiB",
            round(statistics.median(alice), 1),
            BUDGET_KIB,
            higherIsBetter=False,
            target=1.0,
            note=f"{n}; opening one took {_median(measured['alice'], cpu=True):.2f} ms of "
            f"gateway CPU; the broker's side: {brokerAlice:.1f} KiB per login (not counted)",
        ),
        Row(
            SUITE,
            f"idle WebSocket session, anonymous (shared PB login), {count:,} sessions: "
            "gateway RSS vs the budget",
            "KiB",
            round(statistics.median(anonymous), 1),
            BUDGET_KIB,
            higherIsBetter=False,
            target=1.0,
            note=f"{n}; opening one took {_median(measured['anonymous'], cpu=True):.2f} ms of "
            "gateway CPU",
        ),
        Row(
            SUITE,
            "idle session, alice: gateway vs bare autobahn WebSocket + bare Twisted PB client "
            "connection",
            "KiB",
            round(statistics.median(alice), 1),
            round(statistics.median(bare), 1),
            higherIsBetter=False,
            note=f"{n}; bare: autobahn {statistics.median(autobahn):.1f} KiB + Twisted PB client "
            f"{statistics.median(pbClient):.1f} KiB per connection (Twisted PB server side "
            f"{_median(measured['pb'], peer=True):.1f} KiB); a ratio below 1 is more memory",
            pairedRatio=pairedRatio(bare, alice),
        ),
        Row(
            SUITE,
            "idle session, anonymous: gateway vs bare autobahn WebSocket connection",
            "KiB",
            round(statistics.median(anonymous), 1),
            round(statistics.median(autobahn), 1),
            higherIsBetter=False,
            note=f"{n}; a ratio below 1 is more memory",
            pairedRatio=pairedRatio(autobahn, anonymous),
        ),
    ]
