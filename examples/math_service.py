"""
A calculator served over Perspective Broker: the first example of the reference
description, ported to our C{pb}.  The server's root object answers C{add},
C{multiply} and C{divide}; dividing by zero fails with a C{ValueError} that
the client catches as a C{ValueError}.

From the repository root, start the server, then run the client in another
terminal::

    python examples/math_service.py server              # listens on port 8800
    python examples/math_service.py client              # connects to localhost:8800
    python examples/math_service.py server --port 0     # any free port; prints it
    python examples/math_service.py client --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

import pb

DEFAULT_PORT = 8800
CALL_TIMEOUT = 10.0
"""Seconds the client waits for any one answer."""

Output = Callable[[str], object]


class MathService(pb.Root):
    """
    The root object every connection gets: arithmetic on two numbers.
    """

    def remote_add(self, a: float, b: float) -> float:
        return a + b

    def remote_multiply(self, a: float, b: float) -> float:
        return a * b

    def remote_divide(self, a: float, b: float) -> float:
        if b == 0:
            raise ValueError("Division by zero")
        return a / b


def makeFactory() -> pb.PBServerFactory:
    """
    The server factory: every connection gets a L{MathService} as its root.
    """
    return pb.PBServerFactory(MathService())


async def serve(reactor: IReactorTime, endpoint: str, out: Output = print) -> None:
    """
    Listen on C{endpoint} (e.g. C{"tcp:8800"}) and serve until the process ends.
    """
    port = await endpoints.serverFromString(reactor, endpoint).listen(makeFactory())
    out(f"PB server running on port {port.getHost().port}")
    await Deferred()


async def runClient(reactor: IReactorTime, endpoint: str, out: Output | None = None) -> list[str]:
    """
    Connect to the calculator at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    make the reference's three calls, and disconnect.

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if out is not None:
            out(line)

    factory = pb.PBClientFactory(options=pb.BrokerOptions(callTimeout=CALL_TIMEOUT), clock=reactor)
    broker = await endpoints.clientFromString(reactor, endpoint).connect(factory)
    try:
        root = await factory.getRootObject()
        report(f"5 + 3 = {await root.callRemote('add', 5, 3)}")
        report(f"4 * 7 = {await root.callRemote('multiply', 4, 7)}")
        try:
            await root.callRemote("divide", 10, 0)
        except ValueError as e:
            report(f"Division error: {e}")
    finally:
        await disconnect(broker)
    return lines


async def disconnect(broker: pb.Broker) -> None:
    """
    Close a client connection and wait until it is closed.
    """
    if broker.disconnected or broker.transport is None:
        return
    lost: Deferred[None] = Deferred()
    broker.notifyOnDisconnect(lambda: lost.callback(None))
    broker.transport.loseConnection()
    await lost


def say(line: str) -> None:
    print(line, flush=True)


def startLogging(level: LogLevel) -> None:
    """
    Log events of C{level} and above to standard error.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A calculator served over PB.")
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="localhost", help="the server to connect to")
    args = parser.parse_args(argv)
    startLogging(LogLevel.info if args.mode == "server" else LogLevel.warn)
    if args.mode == "server":
        task.react(serve, [f"tcp:{args.port}", say])
    else:
        task.react(runClient, [f"tcp:host={args.host}:port={args.port}:timeout=10", say])


if __name__ == "__main__":
    main()
