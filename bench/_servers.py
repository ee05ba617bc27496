"""
Child processes for the gateway suites: servers and load generators, started
pinned to a CPU, read line by line, and always stopped.

A L{Child} is a process run with C{reactor.spawnProcess} (behind C{taskset -c
N} when it is pinned), whose output lines are kept (the last few hundred, for
error messages) and can be waited for with a time bound. L{startServer}
starts a server on both CPUs and pins it to the server CPU once it is ready:
starting is CPU-bound (imports), and takes half as long that way.
L{startGateway} starts the system under test as it is deployed: a
C{pb-gateway broker} process serving the demo service and a C{pb-gateway
gateway} process in front of it, both on the server CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from bench.pb_core import processCpuSeconds

__all__ = [
    "HOST",
    "MANY_SESSIONS",
    "ROOT",
    "Child",
    "Gateway",
    "cpuPlan",
    "loadGeneratorCpu",
    "pythonModule",
    "rssKiB",
    "spawn",
    "startGateway",
    "startServer",
    "stopAll",
    "together",
]

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_KEPT_LINES = 400
# Gateway flags for suites that open thousands of sessions from one address:
# the limits stay on (their bookkeeping is part of the cost), far away.
MANY_SESSIONS = ("--max-sessions-per-user", "1000000", "--max-connections", "1000000")


class ChildFailed(Exception):
    """
    A child process exited, or did not say what was waited for in time.
    """


def cpuPlan() -> tuple[int | None, int | None]:
    """
    The CPU for the servers and the one for the load generators (and this
    process), or L{None}s when there are not two to keep them apart.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


@contextmanager
def loadGeneratorCpu() -> Iterator[tuple[int | None, int | None]]:
    """
    Pin this process (the driver, and the load generators it starts, which
    inherit it) to the load generators' CPU for the block; yields the plan.
    """
    serverCpu, clientCpu = cpuPlan()
    if clientCpu is None:
        yield serverCpu, clientCpu
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {clientCpu})
    try:
        yield serverCpu, clientCpu
    finally:
        os.sched_setaffinity(0, previous)


def pythonModule(module: str, *args: str) -> list[str]:
    """
    The command running C{python -m module args} with this interpreter.
    """
    return [sys.executable, "-m", module, *args]


def rssKiB(pid: int) -> int | None:
    """
    The resident set size of process C{pid} in KiB, or L{None}.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Child(ProcessProtocol):
    """
    A running child process and what it said.

    @ivar name: names it in progress and error messages.
    @ivar lines: its last output lines (standard output and error together).
    @ivar listeners: called with every output line as it arrives.
    @ivar ended: fires with the exit code when the process has exited.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self.reactor = reactor
        self.name = name
        self.lines: deque[str] = deque(maxlen=_KEPT_LINES)
        self.listeners: list[Callable[[str], None]] = []
        self.ended: Deferred[int] = Deferred()
        self.exitCode: int | None = None
        self.received = 0
        self._partial = {1: b"", 2: b""}
        self._waiters: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []

    @property
    def pid(self) -> int:
        pid = self.transport.pid if self.transport is not None else None
        if pid is None:
            raise ChildFailed(f"{self.name} is not running")
        return int(pid)

    def cpuSeconds(self) -> float:
        """
        The CPU time (user and system) the process has used so far.
        """
        seconds = processCpuSeconds(self.pid)
        if seconds is None:
            raise ChildFailed(f"cannot read the CPU time of {self.name}")
        return seconds

    def pin(self, cpu: int | None) -> None:
        """
        Pin every thread of the process to C{cpu} (threads it starts later
        inherit that); nothing for L{None}.
        """
        if cpu is None:
            return
        try:
            threads = os.listdir(f"/proc/{self.pid}/task")
        except OSError as e:
            raise ChildFailed(f"cannot list the threads of {self.name}: {e}") from None
        for thread in threads:
            try:
                os.sched_setaffinity(int(thread), {cpu})
            except ProcessLookupError:
                pass  # the thread has ended

    def rssKiB(self) -> int:
        kib = rssKiB(self.pid)
        if kib is None:
            raise ChildFailed(f"cannot read the memory of {self.name}")
        return kib

    # -- ProcessProtocol --------------------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        data = self._partial.get(childFD, b"") + data
        *complete, self._partial[childFD] = data.split(b"\n")
        for raw in complete:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, line: str) -> None:
        self.lines.append(line)
        self.received += 1
        for listener in list(self.listeners):
            listener(line)
        for waiter in list(self._waiters):
            pattern, d = waiter
            match = pattern.search(line)
            if match is not None:
                self._waiters.remove(waiter)
                d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._line(rest.decode("utf-8", "replace"))
                self._partial[fd] = b""
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self.exitCode = code if code is not None else -1
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(ChildFailed(f"{self.name} exited ({self.exitCode}):\n{self.tail()}"))
        self.ended.callback(self.exitCode)

    # -- using it ---------------------------------------------------------

    def tail(self, count: int = 15) -> str:
        return "\n".join(list(self.lines)[-count:])

    async def waitFor(
        self, pattern: str, timeout: float = STARTUP_TIMEOUT, since: int = 0
    ) -> re.Match[str]:
        """
        The match of C{pattern} in the first output line matching it, of
        those after the first C{since} lines (of those still kept).

        @raise ChildFailed: the process exited first, or C{timeout} passed.
        """
        compiled = re.compile(pattern)
        first = self.received - len(self.lines)
        for index, line in enumerate(self.lines, first):
            match = compiled.search(line) if index >= since else None
            if match is not None:
                return match
        if self.exitCode is not None:
            raise ChildFailed(f"{self.name} has exited ({self.exitCode}):\n{self.tail()}")
        d: Deferred[re.Match[str]] = Deferred()
        entry = (compiled, d)
        self._waiters.append(entry)
        d.addTimeout(timeout, self.reactor)
        try:
            return await d
        except Exception as e:
            if entry in self._waiters:
                self._waiters.remove(entry)
            if isinstance(e, ChildFailed):
                raise
            raise ChildFailed(
                f"{self.name} did not say {pattern!r} within {timeout:g} s:\n{self.tail()}"
            ) from None

    def write(self, data: bytes) -> None:
        if self.exitCode is None and self.transport is not None:
            self.transport.write(data)

    def closeStdin(self) -> None:
        if self.exitCode is None and self.transport is not None:
            self.transport.closeStdin()

    def signal(self, name: str) -> None:
        """
        Send the process the signal C{name} (C{"INT"}, C{"TERM"}, ...) unless
        it has exited.
        """
        if self.exitCode is None and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except (ProcessExitedAlready, OSError):
                pass

    async def finish(self, timeout: float) -> int:
        """
        Close the child's standard input and wait up to C{timeout} seconds
        for it to exit by itself; then stop it.
        """
        self.closeStdin()
        await _within(self.reactor, self.ended, timeout)
        return await self.stop()

    async def stop(self) -> int:
        """
        Stop the process: C{SIGTERM}, then C{SIGKILL} if it lingers.
        """
        for name in ("TERM", "KILL"):
            if self.exitCode is not None:
                break
            self.signal(name)
            await _within(self.reactor, self.ended, STOP_TIMEOUT)
        if self.exitCode is None:
            raise ChildFailed(f"{self.name} ignored SIGKILL")
        return self.exitCode


async def _within(reactor: Any, ended: Deferred[int], timeout: float) -> None:
    """
    Wait for C{ended} for up to C{timeout} seconds, without consuming it.
    """
    if ended.called:
        return
    waiting: Deferred[None] = Deferred()

    def stopWaiting() -> None:
        if not waiting.called:
            waiting.callback(None)

    def exited(result: int) -> int:
        stopWaiting()
        return result

    ended.addCallback(exited)
    call = reactor.callLater(timeout, stopWaiting)
    await waiting
    if call.active():
        call.cancel()


async def together(*work: Coroutine[Any, Any, Any]) -> list[Any]:
    """
    Run C{work} side by side (starting servers, say) and wait for all of it:
    the results in order. If any failed, the first failure is raised once
    all have finished, so that the caller knows every process that was
    started and can stop it.
    """
    results = await DeferredList(
        [Deferred.fromCoroutine(each) for each in work], consumeErrors=True
    )
    for ok, result in results:
        if not ok:
            result.raiseException()
    return [result for _, result in results]


async def stopAll(children: Sequence[Child]) -> None:
    """
    Stop C{children} side by side.
    """
    await together(*(child.stop() for child in children))


def spawn(
    reactor: Any, name: str, argv: Sequence[str], cpu: int | Collection[int] | None,
    env: dict[str, str] | None = None,
) -> Child:
    """
    Start C{argv} (pinned to C{cpu}, or to the CPUs C{cpu} lists, unless it
    is L{None}) in the checkout's folder, with this environment plus C{env}.
    """
    child = Child(reactor, name)
    command = list(argv)
    if cpu is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise ChildFailed("taskset is not installed: cannot pin processes to CPUs")
        cpus = [cpu] if isinstance(cpu, int) else sorted(cpu)
        command = [taskset, "-c", ",".join(map(str, cpus)), *command]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    reactor.spawnProcess(child, command[0], command, env=environment, path=str(ROOT))
    return child


async def startServer(
    reactor: Any, name: str, argv: Sequence[str], cpu: int | None, *ready: str
) -> tuple[Child, list[re.Match[str]]]:
    """
    Start a server and wait for the output lines matching the patterns
    C{ready}, in turn; their matches. It starts on C{cpu} and the CPU of this
    process (the load generators') and is pinned to C{cpu} once it has said
    the last: no measurement has begun, and its start-up takes half as long.
    It is stopped if it fails to start.
    """
    startup = None if cpu is None else {cpu, *os.sched_getaffinity(0)}
    child = spawn(reactor, name, argv, startup)
    try:
        matches = [await child.waitFor(pattern) for pattern in ready]
        child.pin(cpu)
    except BaseException:
        await child.stop()
        raise
    return child, matches


@attrs.define
class Gateway:
    """
    The system under test: a broker serving the demo service and a gateway
    in front of it, in two processes.
    """

    broker: Child
    gateway: Child
    port: int
    brokerPort: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def wsURL(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def pids(self) -> list[int]:
        return [self.gateway.pid, self.broker.pid]

    async def stop(self) -> None:
        try:
            await self.gateway.stop()
        finally:
            await self.broker.stop()


async def startGateway(reactor: Any, cpu: int | None, *flags: str) -> Gateway:
    """
    Start C{pb-gateway broker} (the demo service) and C{pb-gateway gateway}
    on 127.0.0.1 with free ports, both pinned to C{cpu} (see L{startServer});
    C{flags} go to the gateway.
    """
    broker, (match,) = await startServer(
        reactor, "pb-gateway broker",
        pythonModule("gateway", "broker", "--pb", f"tcp:0:interface={HOST}"), cpu,
        r"PB broker listening on [\d.]+:(\d+)",
    )
    try:
        gateway, (ready,) = await startServer(
            reactor, "pb-gateway gateway",
            pythonModule(
                "gateway", "gateway", "--broker", f"tcp:host={HOST}:port={match.group(1)}",
                "--http", f"tcp:0:interface={HOST}", *flags,
            ),
            cpu,
            r"pb-gateway is ready at http://[^:]+:(\d+)/",
        )
    except BaseException:
        await broker.stop()
        raise
    return Gateway(broker, gateway, int(ready.group(1)), int(match.group(1)))
