"""
The PB core benchmark: our C{pb} against Twisted's C{twisted.spread.pb}, in one run.

It times the codecs (jelly + banana encode, banana + unjelly decode of 10,000
small dicts sent as one message) and remote calls (C{add(5, 3)}, one at a time
and 100 in flight) between two processes on 127.0.0.1, for every pairing of our
and Twisted's server and client. Both implementations run interleaved, each
figure is the median of several repetitions, and each is compared with
Twisted's as a speed ratio against the project's targets.

Entry points: L{run} (used by C{python -m bench}); C{python -m bench.pb_core
serve --impl ours|twisted --port 0}, the server process the call benchmarks
spawn; C{python -m bench.pb_core profile}, which profiles our side of each
benchmark with cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.spread import banana as twistedBanana
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB

import pb
from bench._progress import progress
from pb import banana, jelly

__all__ = ["FULL", "QUICK", "Row", "Settings", "main", "run"]

SUITE = "pb_core"
ITEMS = 10_000
CHUNK_SIZE = 4096
CONCURRENCY = 100
IMPLEMENTATIONS = ("ours", "twisted")
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
# The longest any one connection or measurement may take.
CALL_TIMEOUT = 60.0

# Where this checkout lives, so that server processes can import bench.
_ROOT = Path(__file__).resolve().parent.parent
_INCOMING_VOCABULARY = {number: word for word, number in banana.PB_VOCABULARY.items()}

T = TypeVar("T")


@attrs.frozen
class Settings:
    """
    How long and how often to measure.

    @ivar repetitions: how many times each codec figure is measured; the
        median is reported.
    @ivar callRepetitions: how many times each calls/s figure is measured:
        more, shorter rounds than for the codecs, so that a burst of load
        from elsewhere spoils few of them.
    @ivar callSeconds: how long each calls/s measurement runs.
    @ivar warmupSeconds: calls made and discarded before each measurement.
    @ivar oneChunkItems: the number of dicts for the one-chunk decode, which is
        quadratic in Twisted.
    @ivar oneChunkCap: seconds after which Twisted's one-chunk decode is
        abandoned (its figure is then a lower bound).
    @ivar oneChunkRepetitions: repetitions of the one-chunk decode.
    @ivar memoryCalls: calls per measurement between in-memory brokers.
    """

    repetitions: int
    callRepetitions: int
    callSeconds: float
    warmupSeconds: float
    oneChunkItems: int
    oneChunkCap: float
    oneChunkRepetitions: int
    memoryCalls: int


# Quick mode keeps the codec rows' 10,000 dicts (Twisted's decoder does
# relatively better on smaller messages: fewer would change the ratios) and
# shortens everything else.
QUICK = Settings(
    repetitions=3,
    callRepetitions=3,
    callSeconds=0.2,
    warmupSeconds=0.05,
    oneChunkItems=1_000,
    oneChunkCap=10.0,
    oneChunkRepetitions=3,
    memoryCalls=2_000,
)
FULL = Settings(
    repetitions=5,
    callRepetitions=9,
    callSeconds=1.0,
    warmupSeconds=0.25,
    oneChunkItems=ITEMS,
    oneChunkCap=30.0,
    oneChunkRepetitions=3,
    memoryCalls=20_000,
)


@attrs.frozen
class Row:
    """
    One line of the benchmark table.

    @ivar suite: the suite that measured it (its module name).
    @ivar name: what was measured.
    @ivar unit: C{"ms"} or C{"µs"} (lower is better), C{"calls/s"} (higher is
        better) or C{"bytes"}.
    @ivar ours: our figure (the median).
    @ivar baseline: the figure ours is compared with (Twisted's, in this
        suite; the row's name says which).
    @ivar higherIsBetter: whether a larger figure is faster.
    @ivar target: the least speed ratio the project aims for, or L{None}.
    @ivar baselineCapped: the baseline hit a time cap, so the ratio is a
        lower bound.
    @ivar note: anything the reader needs to interpret the row.
    @ivar pairedRatio: the median of the ratios of figures measured next to
        each other in time, when they were; it is the row's ratio, as a
        burst of load from elsewhere spoils both figures of a pair alike
        where it would skew one median.
    """

    suite: str
    name: str
    unit: str
    ours: float
    baseline: float
    higherIsBetter: bool
    target: float | None = None
    baselineCapped: bool = False
    note: str = ""
    pairedRatio: float | None = None

    @property
    def ratio(self) -> float:
        """
        How many times faster ours is (our throughput over the baseline's),
        or our size over the baseline's for sizes.
        """
        if self.pairedRatio is not None:
            return self.pairedRatio
        return self.ratioOfMedians

    @property
    def ratioOfMedians(self) -> float:
        """
        The ratio of the two figures shown, which differs from a paired ratio
        when load from elsewhere came and went during the measurements.
        """
        if self.unit == "bytes" or self.higherIsBetter:
            return self.ours / self.baseline
        return self.baseline / self.ours

    @property
    def verdict(self) -> str:
        """
        C{"PASS"} or C{"MISS"} against the target; empty without one.
        """
        if self.target is None:
            return ""
        return "PASS" if self.ratio >= self.target else "MISS"


# -- the codecs -------------------------------------------------------------


def sampleData(items: int) -> list[dict[str, Any]]:
    """
    The message both codecs encode: a list of small dicts.
    """
    return [
        {"id": i, "name": f"item{i}", "value": i * 1.5, "tags": ["a", "b"], "on": True}
        for i in range(items)
    ]


def chunked(data: bytes, size: int) -> list[bytes]:
    """
    C{data} cut into chunks of C{size} bytes, as a socket might deliver it.
    """
    return [data[i : i + size] for i in range(0, len(data), size)]


class _TwistedBanana(twistedBanana.Banana):
    """
    Twisted's Banana in the C{"pb"} dialect, as a client (which needs no
    transport), collecting the expressions it decodes.
    """

    def __init__(self) -> None:
        super().__init__(isClient=1)
        self.expressions: list[Any] = []
        self.connectionMade()
        self._selectDialect(b"pb")

    def expressionReceived(self, obj: Any) -> None:
        self.expressions.append(obj)


_encodingBroker: list[pb.Broker] = []


def oursEncode(value: Any) -> bytes:
    """
    Our jelly + banana encoding of C{value} as a broker sends it: the
    broker's jellier (L{pb.Broker.serialize}, which may take shortcuts the
    module-level L{jelly.jelly} does not), then banana with the PB vocabulary.
    """
    if not _encodingBroker:
        _encodingBroker.append(pb.Broker(isClient=True))
    return banana.encode(
        _encodingBroker[0].serialize(value), vocabulary=banana.PB_VOCABULARY
    )


def oursModuleEncode(value: Any) -> bytes:
    """
    Our encoding of C{value} through the module-level codec API,
    L{jelly.jelly} and L{banana.encode}.
    """
    return banana.encode(jelly.jelly(value), vocabulary=banana.PB_VOCABULARY)


def twistedEncode(value: Any) -> bytes:
    """
    Twisted's jelly + banana encoding of C{value}. The pieces are joined at
    the end (cheaper than the C{BytesIO} that C{Banana.sendEncoded} uses).
    """
    pieces: list[bytes] = []
    _TwistedBanana()._encode(twistedJelly.jelly(value), pieces.append)
    return b"".join(pieces)


def oursDecode(chunks: Sequence[bytes]) -> Any:
    """
    Feed C{chunks} to our banana decoder and unjelly the one message they hold.
    """
    decoder = banana.Decoder(vocabulary=_INCOMING_VOCABULARY)
    expressions: list[Any] = []
    for chunk in chunks:
        expressions.extend(decoder.feed(chunk))
    (expression,) = expressions
    return jelly.unjelly(expression)


def twistedDecode(chunks: Sequence[bytes]) -> Any:
    """
    Feed C{chunks} to Twisted's Banana and unjelly the one message they hold.
    """
    protocol = _TwistedBanana()
    for chunk in chunks:
        protocol.dataReceived(chunk)
    (expression,) = protocol.expressions
    return twistedJelly.unjelly(expression)


class _TimedOut(Exception):
    """
    A measurement ran past its time cap.
    """


@contextmanager
def _timeLimit(seconds: float) -> Iterator[bool]:
    """
    Raise L{_TimedOut} in the block after it has used C{seconds} of CPU time,
    the measure the codec figures are in (a CPU-bound block reaches it
    however busy the machine is); yields whether the cap could be armed (it
    needs C{SIGPROF} and the main thread).
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def expire(signum: int, frame: Any) -> None:
        raise _TimedOut()

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _timed(function: Callable[[], T]) -> tuple[float, T]:
    """
    Run C{function} once, after a full collection so that garbage left by the
    previous measurement is not charged to it: (CPU seconds, result).

    The codecs are single-threaded and CPU-bound, so their CPU time is their
    wall time on an idle machine, and stays meaningful on a busy one.
    """
    gc.collect()
    start = time.process_time()
    result = function()
    return time.process_time() - start, result


def _progress(message: str) -> None:
    progress(SUITE, message)


def _interleaved(
    cases: dict[str, Callable[[], object]],
    repetitions: int,
    check: Callable[[str, object], None] | None = None,
) -> dict[str, list[float]]:
    """
    Time each case C{repetitions} times, alternating which goes first;
    C{check} is given each case's name and result, outside the timing.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for repetition in range(repetitions):
        for name in names if repetition % 2 == 0 else reversed(names):
            seconds, result = _timed(cases[name])
            times[name].append(seconds)
            if check is not None:
                check(name, result)
    return times


def _spread(values: Sequence[float]) -> str:
    median = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / median * 100:.0f}%"


def _codecRows(settings: Settings) -> list[Row]:
    data = sampleData(ITEMS)
    oursBytes = oursEncode(data)
    twistedBytes = twistedEncode(data)
    same = oursBytes == twistedBytes
    rows = [
        Row(
            SUITE,
            f"wire size of {ITEMS:,} dicts: ours vs Twisted",
            "bytes",
            len(oursBytes),
            len(twistedBytes),
            higherIsBetter=False,
            note="identical bytes" if same else "BYTES DIFFER",
        )
    ]

    if oursModuleEncode(data) != twistedBytes:
        raise RuntimeError("pb.jelly.jelly + pb.banana.encode differ from Twisted's bytes")
    _progress(f"encode, {settings.repetitions} repetitions")
    times = _interleaved(
        {
            "ours": lambda: oursEncode(data),
            "module": lambda: oursModuleEncode(data),
            "twisted": lambda: twistedEncode(data),
        },
        settings.repetitions,
    )
    rows.append(
        _timeRow(
            f"encode {ITEMS:,} dicts (jelly + banana), as a broker does: ours vs Twisted",
            times,
            target=3.0,
        )
    )
    rows.append(
        attrs.evolve(
            _timeRow(
                f"encode {ITEMS:,} dicts with pb.jelly.jelly + pb.banana.encode: vs Twisted",
                {"ours": times["module"], "twisted": times["twisted"]},
                target=None,
            ),
            note=f"n={len(times['module'])}, spread ours {_spread(times['module'])}; "
            "the module-level API (for interest)",
        )
    )

    chunks = chunked(twistedBytes, CHUNK_SIZE)

    def roundTrip(implementation: str, decoded: object) -> None:
        if decoded != data:
            raise RuntimeError(f"{implementation} decode does not round-trip the data")

    # Ours decodes once untimed, as a warm-up: its first decode after the
    # encodes is a tenth slower. Twisted's first is not, so its decodes are
    # checked as they are measured, rather than in an extra second-long one.
    roundTrip("ours", oursDecode(chunks))
    _progress(f"decode in {CHUNK_SIZE // 1024} KiB chunks, {settings.repetitions} repetitions")
    times = _interleaved(
        {"ours": lambda: oursDecode(chunks), "twisted": lambda: twistedDecode(chunks)},
        settings.repetitions,
        check=roundTrip,
    )
    rows.append(
        _timeRow(
            f"decode {ITEMS:,} dicts, {CHUNK_SIZE // 1024} KiB chunks (banana + unjelly): "
            "ours vs Twisted",
            times,
            target=5.0,
        )
    )
    rows.append(_oneChunkRow(settings))
    return rows


def pairedRatio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """
    The median of the ratios of figures measured in the same repetition.
    """
    return statistics.median(
        numerator / denominator
        for numerator, denominator in zip(numerators, denominators, strict=True)
    )


def _timeRow(name: str, times: dict[str, list[float]], target: float | None) -> Row:
    return Row(
        SUITE,
        name,
        "ms",
        statistics.median(times["ours"]) * 1000,
        statistics.median(times["twisted"]) * 1000,
        higherIsBetter=False,
        target=target,
        note=f"n={len(times['ours'])}, spread ours {_spread(times['ours'])}, "
        f"Twisted {_spread(times['twisted'])}",
        pairedRatio=pairedRatio(times["twisted"], times["ours"]),
    )


def _oneChunkRow(settings: Settings) -> Row:
    """
    Decode the whole message fed as one chunk. Twisted copies the rest of its
    buffer for every token, so this takes it quadratic time: it is capped.
    """
    items = settings.oneChunkItems
    data = sampleData(items)
    whole = [oursEncode(data)]
    _progress(
        f"decode in one chunk ({items:,} dicts), {settings.oneChunkRepetitions} repetitions, "
        f"Twisted capped at {settings.oneChunkCap:g} s"
    )
    oursTimes: list[float] = []
    twistedTimes: list[float] = []
    capped = False
    for _repetition in range(settings.oneChunkRepetitions):
        seconds, _ = _timed(lambda: oursDecode(whole))
        oursTimes.append(seconds)
        if capped:
            continue
        gc.collect()
        start = time.process_time()
        try:
            with _timeLimit(settings.oneChunkCap):
                twistedDecode(whole)
        except _TimedOut:
            capped = True
            twistedTimes = [settings.oneChunkCap]
            _progress(f"Twisted's one-chunk decode passed {settings.oneChunkCap:g} s: abandoned")
            continue
        twistedTimes.append(time.process_time() - start)
    note = f"n={len(oursTimes)}/{len(twistedTimes)}, Twisted capped at {settings.oneChunkCap:g} s of CPU"
    if items != ITEMS:
        note += f"; quick mode: {items:,} dicts, not {ITEMS:,}"
    if capped:
        note += "; Twisted hit the cap: the ratio is a lower bound"
    return Row(
        SUITE,
        f"decode {items:,} dicts, one chunk: ours vs Twisted (quadratic there)",
        "ms",
        statistics.median(oursTimes) * 1000,
        statistics.median(twistedTimes) * 1000,
        higherIsBetter=False,
        baselineCapped=capped,
        note=note,
    )


# -- remote calls -----------------------------------------------------------


class OurRoot(pb.Root):
    """
    The root object our server publishes.
    """

    def remote_add(self, a: int, b: int) -> int:
        return a + b


class TwistedRoot(twistedPB.Root):
    """
    The root object Twisted's server publishes.
    """

    def remote_add(self, a: int, b: int) -> int:
        return a + b


def serverFactory(implementation: str) -> Any:
    """
    The PB server factory of C{implementation} (C{"ours"} or C{"twisted"}).
    """
    if implementation == "ours":
        return pb.PBServerFactory(OurRoot())
    return twistedPB.PBServerFactory(TwistedRoot())


def serve(reactor: Any, implementation: str, port: int) -> Deferred[Any]:
    """
    Listen on 127.0.0.1 and print C{PORT <number>} once listening. The server
    stops when its standard input closes, so it never outlives its parent.
    """
    endpoint = serverFromString(reactor, f"tcp:{port}:interface={HOST}")

    def listening(listeningPort: Any) -> None:
        print(f"PORT {listeningPort.getHost().port}", flush=True)

    def waitForEOF() -> None:
        sys.stdin.buffer.read()
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=waitForEOF, name="stdin-eof", daemon=True).start()
    return endpoint.listen(serverFactory(implementation)).addCallback(listening)


@attrs.define
class ServerProcess:
    """
    A benchmark server running in a child process.

    @ivar port: where it listens; 0 until L{waitForPort} has read it.
    """

    implementation: str
    process: subprocess.Popen[bytes]
    port: int = 0

    @classmethod
    def start(
        cls, implementation: str, cpu: int | None, profilePath: str | None = None
    ) -> ServerProcess:
        """
        Start a server and wait until it listens.
        """
        server = cls.launch(implementation, cpu, profilePath)
        server.waitForPort()
        return server

    @classmethod
    def launch(
        cls, implementation: str, cpu: int | None, profilePath: str | None = None
    ) -> ServerProcess:
        """
        Start a server, on C{cpu} from the outset, without waiting for it, so
        that servers (and other work) can start side by side; L{waitForPort}
        waits.
        """
        command = [
            sys.executable,
            "-m",
            "bench.pb_core",
            "serve",
            "--impl",
            implementation,
            "--port",
            "0",
        ]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        if profilePath is not None:
            command += ["--profile", profilePath]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT
        )
        if cpu is not None:
            # Its imports then stay off the other CPU; --cpu pins it after them.
            os.sched_setaffinity(process.pid, {cpu})
        return cls(implementation, process)

    def waitForPort(self) -> None:
        """
        Wait until the server says where it listens.

        @raise RuntimeError: it did not within L{STARTUP_TIMEOUT} (it is then
            stopped).
        """
        if self.port:
            return
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError(f"the {self.implementation} server has no output to read")
        ready, _, _ = select.select([stdout], [], [], STARTUP_TIMEOUT)
        line = stdout.readline() if ready else b""
        if not line.startswith(b"PORT "):
            self.process.kill()
            self.process.wait()
            raise RuntimeError(
                f"the {self.implementation} server did not start (it said {line!r})"
            )
        self.port = int(line.split()[1])

    def stop(self) -> None:
        """
        Close the server's standard input and wait for it to exit.
        """
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@attrs.define
class Client:
    """
    A connected PB client of either implementation.
    """

    implementation: str
    factory: Any
    root: Any

    @classmethod
    async def connect(cls, reactor: Any, implementation: str, port: int) -> Client:
        factory: Any
        if implementation == "ours":
            factory = pb.PBClientFactory(clock=reactor)
            await pb.connect(HOST, port, factory, reactor=reactor)
        else:
            factory = twistedPB.PBClientFactory()
            await TCP4ClientEndpoint(reactor, HOST, port).connect(factory)
        root = await factory.getRootObject()
        answer = await root.callRemote("add", 5, 3)
        if answer != 8:
            raise RuntimeError(f"add(5, 3) returned {answer!r} from {implementation}")
        return cls(implementation, factory, root)

    def disconnect(self) -> None:
        self.factory.disconnect()


@attrs.frozen
class Calls:
    """
    The outcome of one calls/s measurement.

    @ivar calls: calls answered.
    @ivar seconds: wall time from the first call to the last answer.
    """

    calls: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


async def sequentialCalls(root: Any, seconds: float) -> Calls:
    """
    Call C{add(5, 3)} one call after another for C{seconds}.
    """
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await root.callRemote("add", 5, 3)
        calls += 1
        if calls % 32 == 0:
            now = time.perf_counter()
            if now >= deadline:
                return Calls(calls, now - start)


class _InFlightLoad:
    """
    Keep C{concurrency} calls of C{add(5, 3)} in flight, each answer sending
    the next, until the deadline; then let the outstanding ones drain.
    """

    def __init__(self, root: Any, concurrency: int, seconds: float) -> None:
        self.root = root
        self.concurrency = concurrency
        self.seconds = seconds
        self.answered = 0
        self.outstanding = 0
        self.failure: Any = None
        self.done: Deferred[Calls] = Deferred()
        self.start = 0.0
        self.deadline = 0.0

    def run(self) -> Deferred[Calls]:
        self.start = time.perf_counter()
        self.deadline = self.start + self.seconds
        for _ in range(self.concurrency):
            self._send()
        return self.done

    def _send(self) -> None:
        self.outstanding += 1
        self.root.callRemote("add", 5, 3).addCallbacks(self._answer, self._failed)

    def _answer(self, result: Any) -> None:
        self.answered += 1
        if self.failure is None and time.perf_counter() < self.deadline:
            self._send()
        self._finished()

    def _failed(self, failure: Any) -> None:
        if self.failure is None:
            self.failure = failure
        self._finished()

    def _finished(self) -> None:
        self.outstanding -= 1
        if self.outstanding:
            return
        if self.failure is not None:
            self.done.errback(self.failure)
        else:
            self.done.callback(Calls(self.answered, time.perf_counter() - self.start))


def inFlightCalls(root: Any, seconds: float, concurrency: int = CONCURRENCY) -> Deferred[Calls]:
    """
    Call C{add(5, 3)} for C{seconds} with C{concurrency} calls in flight.
    """
    return _InFlightLoad(root, concurrency, seconds).run()


def processCpuSeconds(pid: int) -> float | None:
    """
    The CPU time (user and system) process C{pid} has used, from C{/proc}, or
    L{None} where that cannot be read.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields after the command name, which is in parentheses.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@attrs.define
class _Figures:
    """
    Rates and CPU microseconds per call collected for one pairing and mode.
    """

    rates: list[float] = attrs.Factory(list)
    serverMicroseconds: list[float] = attrs.Factory(list)
    clientMicroseconds: list[float] = attrs.Factory(list)

    async def measure(self, server: ServerProcess, run: Callable[[], Awaitable[Calls]]) -> None:
        serverBefore = processCpuSeconds(server.process.pid)
        clientBefore = time.process_time()
        calls = await run()
        clientAfter = time.process_time()
        serverAfter = processCpuSeconds(server.process.pid)
        self.rates.append(calls.rate)
        self.clientMicroseconds.append((clientAfter - clientBefore) / calls.calls * 1e6)
        if serverBefore is not None and serverAfter is not None:
            self.serverMicroseconds.append((serverAfter - serverBefore) / calls.calls * 1e6)

    def cpuNote(self) -> str:
        parts = []
        if self.serverMicroseconds:
            parts.append(f"server {statistics.median(self.serverMicroseconds):.0f}")
        parts.append(f"client {statistics.median(self.clientMicroseconds):.0f}")
        return "CPU µs/call: " + ", ".join(parts)


class MemoryPair:
    """
    A server and a client broker of one implementation joined by in-memory
    transports: calls between them cost the brokers' CPU only, with no
    sockets, system calls or reactor iterations.
    """

    def __init__(self, implementation: str, clock: Any) -> None:
        serving: Any
        connecting: Any
        if implementation == "ours":
            serving = pb.PBServerFactory(OurRoot(), clock=clock)
            connecting = pb.PBClientFactory(clock=clock)
        else:
            serving = twistedPB.PBServerFactory(TwistedRoot())
            connecting = twistedPB.PBClientFactory()
        self._server = serving.buildProtocol(None)
        self._client = connecting.buildProtocol(None)
        self._serverTransport = StringTransport()
        self._clientTransport = StringTransport()
        self._server.makeConnection(self._serverTransport)
        self._client.makeConnection(self._clientTransport)
        self.pump()
        roots: list[Any] = []
        connecting.getRootObject().addCallback(roots.append)
        self.pump()
        (self.root,) = roots

    def pump(self) -> None:
        """
        Deliver what each side wrote to the other until both are quiet.
        """
        while True:
            moved = False
            for transport, receiver in (
                (self._serverTransport, self._client),
                (self._clientTransport, self._server),
            ):
                data = transport.value()
                if data:
                    transport.clear()
                    receiver.dataReceived(data)
                    moved = True
            if not moved:
                return

    def callMicroseconds(self, calls: int, inFlight: int) -> float:
        """
        The CPU microseconds per C{add(5, 3)}, both sides together, with
        C{inFlight} calls sent before the bytes are delivered.
        """
        answers: list[Any] = []
        gc.collect()
        start = time.process_time()
        for _ in range(calls // inFlight):
            for _ in range(inFlight):
                self.root.callRemote("add", 5, 3).addCallback(answers.append)
            self.pump()
        seconds = time.process_time() - start
        if len(answers) != calls // inFlight * inFlight or answers[0] != 8:
            raise RuntimeError(f"in-memory calls went wrong: {len(answers)} answers")
        return seconds / len(answers) * 1e6


def _memoryCallRow(clock: Any, settings: Settings) -> Row:
    calls = settings.memoryCalls
    _progress(f"in-memory calls, {settings.repetitions} repetitions")
    pairs = {implementation: MemoryPair(implementation, clock) for implementation in IMPLEMENTATIONS}
    for pair in pairs.values():
        pair.callMicroseconds(CONCURRENCY * 10, CONCURRENCY)
    micro: dict[str, list[float]] = {implementation: [] for implementation in IMPLEMENTATIONS}
    for repetition in range(settings.repetitions):
        order = IMPLEMENTATIONS if repetition % 2 == 0 else IMPLEMENTATIONS[::-1]
        for implementation in order:
            micro[implementation].append(pairs[implementation].callMicroseconds(calls, CONCURRENCY))
    return Row(
        SUITE,
        f"add(5, 3) in memory, {CONCURRENCY} in flight: CPU per call, both sides, no "
        "sockets: ours vs Twisted",
        "µs",
        statistics.median(micro["ours"]),
        statistics.median(micro["twisted"]),
        higherIsBetter=False,
        note=f"n={settings.repetitions}; {calls:,} calls each; the brokers' own cost (for interest)",
        pairedRatio=pairedRatio(micro["twisted"], micro["ours"]),
    )


def _pinning() -> tuple[int | None, int | None]:
    """
    The CPUs for the server and for this process (the load generator), or
    L{None}s when there are not two to separate them.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


_PAIRS = (
    ("ours", "ours"),
    ("twisted", "twisted"),
    ("ours", "twisted"),
    ("twisted", "ours"),
)


def _pairName(server: str, client: str) -> str:
    names = {"ours": "ours", "twisted": "Twisted"}
    return f"{names[server]} server + {names[client]} client"


def _bounded(reactor: Any, work: Coroutine[Any, Any, T] | Deferred[T]) -> Deferred[T]:
    """
    C{work} as a Deferred that fails with C{TimeoutError} (cancelling the
    work) if it takes longer than L{CALL_TIMEOUT}, so that a stuck server
    cannot hang the benchmark.
    """
    d = work if isinstance(work, Deferred) else Deferred.fromCoroutine(work)
    return d.addTimeout(CALL_TIMEOUT, reactor)


async def _callRows(
    reactor: Any, settings: Settings, servers: dict[str, ServerProcess]
) -> list[Row]:
    """
    Measure the calls of every pairing against C{servers} (launched by the
    caller, who stops them).
    """
    clients: dict[tuple[str, str], Client] = {}
    modes = ("sequential", f"{CONCURRENCY} in flight")
    figures = {(mode, pair): _Figures() for mode in modes for pair in _PAIRS}
    try:
        for process in servers.values():
            process.waitForPort()
        for server, client in _PAIRS:
            clients[server, client] = await _bounded(
                reactor, Client.connect(reactor, client, servers[server].port)
            )
        for repetition in range(settings.callRepetitions):
            _progress(f"calls, repetition {repetition + 1}/{settings.callRepetitions}")
            order = _PAIRS if repetition % 2 == 0 else tuple(reversed(_PAIRS))
            for pair in order:
                root = clients[pair].root
                serverProcess = servers[pair[0]]
                await _bounded(reactor, sequentialCalls(root, settings.warmupSeconds))
                await _bounded(
                    reactor,
                    figures[modes[0], pair].measure(
                        serverProcess, partial(sequentialCalls, root, settings.callSeconds)
                    ),
                )
                await _bounded(reactor, inFlightCalls(root, settings.warmupSeconds))
                await _bounded(
                    reactor,
                    figures[modes[1], pair].measure(
                        serverProcess, partial(inFlightCalls, root, settings.callSeconds)
                    ),
                )
    finally:
        for connected in clients.values():
            connected.disconnect()

    rows = []
    for mode, target in zip(modes, (1.2, 1.5), strict=True):
        baselineRates = figures[mode, ("twisted", "twisted")].rates
        baseline = statistics.median(baselineRates)
        for pair in _PAIRS:
            ours = pair == ("ours", "ours")
            measured = figures[mode, pair]
            note = f"n={len(measured.rates)}, spread {_spread(measured.rates)}; {measured.cpuNote()}"
            if pair == ("twisted", "twisted"):
                note += " (the baseline)"
            elif not ours:
                note += " (for interest)"
            rows.append(
                Row(
                    SUITE,
                    f"add(5, 3) {mode}: {_pairName(*pair)} vs Twisted server + client",
                    "calls/s",
                    statistics.median(measured.rates),
                    baseline,
                    higherIsBetter=True,
                    target=target if ours else None,
                    note=note,
                    pairedRatio=pairedRatio(measured.rates, baselineRates),
                )
            )
    return rows


async def run(reactor: Any, quick: bool) -> list[Row]:
    """
    Run the suite: the codecs in this process, then the calls against server
    processes. The server is pinned to one CPU and this process to another
    (when there are two) for the whole run. The servers start first, on
    their CPU, while this process measures the codecs on its own.
    """
    settings = QUICK if quick else FULL
    serverCpu, clientCpu = _pinning()
    servers: dict[str, ServerProcess] = {}
    previousAffinity: set[int] | None = None
    try:
        for implementation in IMPLEMENTATIONS:
            servers[implementation] = ServerProcess.launch(implementation, serverCpu)
        if clientCpu is not None:
            previousAffinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {clientCpu})
            _progress(f"server pinned to CPU {serverCpu}, load generator to CPU {clientCpu}")
        else:
            _progress("fewer than two CPUs available: nothing pinned")
        rows = _codecRows(settings)
        rows.append(_memoryCallRow(reactor, settings))
        rows += await _callRows(reactor, settings, servers)
    finally:
        for server in servers.values():
            server.stop()
        if previousAffinity is not None:
            os.sched_setaffinity(0, previousAffinity)
    return rows


# -- profiling --------------------------------------------------------------


def printProfile(
    title: str, stats: pstats.Stats, top: int, byOwnTime: bool = False, out: Any = None
) -> None:
    """
    Print the C{top} functions of a profile by cumulative time (or by their
    own time), with their share of the busy time, their own time and where
    they are defined. Time spent waiting in C{epoll} is idle, not busy, and
    is left out; so are this module's own functions.
    """
    out = out if out is not None else sys.stdout
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    idle = sum(
        own
        for (filename, _, function), (_, _, own, _, _) in entries.items()
        if filename == "~" and "select.epoll" in function
    )
    busy = stats.total_tt - idle  # type: ignore[attr-defined]
    print(f"\n== {title}: {busy:.3f} s busy (cProfile; {idle:.3f} s idle in epoll)", file=out)
    print(f"{'cum%':>6} {'self%':>6} {'calls':>9}  function (file:line)", file=out)
    column = 2 if byOwnTime else 3
    ranked = sorted(entries.items(), key=lambda item: item[1][column], reverse=True)
    shown = 0
    for (filename, line, function), (_, calls, own, cumulative, _) in ranked:
        if filename.endswith("pb_core.py") or "select.epoll" in function:
            continue
        if filename == "~" and not byOwnTime:
            continue
        location = function if filename == "~" else f"{function} ({_shortPath(filename)}:{line})"
        print(
            f"{cumulative / busy * 100:6.1f} {own / busy * 100:6.1f} {calls:9d}  {location}",
            file=out,
        )
        shown += 1
        if shown == top:
            break


def _shortPath(filename: str) -> str:
    path = Path(filename)
    for anchor in (_ROOT, Path(sys.prefix)):
        try:
            return str(path.relative_to(anchor))
        except ValueError:
            continue
    return filename


async def _profileCalls(reactor: Any, seconds: float, top: int) -> None:
    pair = MemoryPair("ours", reactor)
    pair.callMicroseconds(CONCURRENCY * 10, CONCURRENCY)
    profiler = cProfile.Profile()
    profiler.runcall(pair.callMicroseconds, 20_000, CONCURRENCY)
    printProfile(
        f"20,000 calls in memory, {CONCURRENCY} in flight, both brokers (no sockets)",
        pstats.Stats(profiler),
        top,
    )

    serverCpu, clientCpu = _pinning()
    if clientCpu is not None:
        os.sched_setaffinity(0, {clientCpu})
    with tempfile.TemporaryDirectory() as directory:
        serverProfile = os.path.join(directory, "server.prof")
        server = ServerProcess.start("ours", serverCpu, serverProfile)
        try:
            client = await _bounded(reactor, Client.connect(reactor, "ours", server.port))
            await _bounded(reactor, inFlightCalls(client.root, 0.3))
            profiler = cProfile.Profile()
            profiler.enable()
            calls = await _bounded(reactor, inFlightCalls(client.root, seconds))
            profiler.disable()
            client.disconnect()
        finally:
            server.stop()
        print(f"\n(over sockets, {calls.rate:,.0f} calls/s under the profiler)")
        printProfile(
            f"client, {CONCURRENCY} calls in flight, by own time",
            pstats.Stats(profiler),
            top,
            byOwnTime=True,
        )
        printProfile(
            f"server, {CONCURRENCY} calls in flight, by own time",
            pstats.Stats(serverProfile),
            top,
            byOwnTime=True,
        )


def profile(reactor: Any, top: int, seconds: float) -> Deferred[None]:
    """
    Profile our encode, decode and call loop with cProfile and print the hot
    spots. cProfile charges a fixed cost to every Python call, so code made of
    many small calls (jelly) looks heavier next to long loops (banana) than it
    is; C{py-spy} (a sampling profiler) does not distort that way.
    """
    data = sampleData(ITEMS)
    encoded = oursEncode(data)
    chunks = chunked(encoded, CHUNK_SIZE)
    for title, function in (
        (f"encode {ITEMS:,} dicts", lambda: oursEncode(data)),
        (f"decode {ITEMS:,} dicts in {CHUNK_SIZE // 1024} KiB chunks", lambda: oursDecode(chunks)),
    ):
        profiler = cProfile.Profile()
        gc.collect()
        profiler.runcall(function)
        printProfile(title, pstats.Stats(profiler), top)
    return Deferred.fromCoroutine(_profileCalls(reactor, seconds, top))


def main(argv: Sequence[str] | None = None) -> None:
    """
    The command line: C{serve} (a benchmark server) or C{profile}.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.pb_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serveParser = commands.add_parser("serve", help="run a benchmark PB server")
    serveParser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    serveParser.add_argument("--port", type=int, default=0)
    serveParser.add_argument("--cpu", type=int, help="pin the server to this CPU")
    serveParser.add_argument("--profile", help="write a cProfile of the server here")
    profileParser = commands.add_parser("profile", help="profile our side of each benchmark")
    profileParser.add_argument("--top", type=int, default=20)
    profileParser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args(argv)

    from twisted.internet import reactor, task

    if options.command == "profile":
        task.react(lambda reactor: profile(reactor, options.top, options.seconds))
        return
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})

    def failed(failure: Failure) -> None:
        failure.printTraceback()
        reactor.stop()

    serve(reactor, options.impl, options.port).addErrback(failed)
    if options.profile is None:
        reactor.run()
        return
    profiler = cProfile.Profile()
    profiler.runcall(reactor.run)
    profiler.dump_stats(options.profile)


if __name__ == "__main__":
    main()
