"""
Remote errors over Perspective Broker: the reference description's error
handling example, ported to our C{pb}.  The server's methods raise
C{ValueError}s; our client receives them as L{pb.RemoteError}s that are also
C{ValueError}s, so C{except ValueError} catches a remote C{ValueError} as if it
had been raised locally.  (A Twisted client gets a C{CopiedFailure} instead.)

Exceptions that are not L{pb.Error}s are unexpected, so the server logs their
tracebacks; the client gets only the type and message.

From the repository root, start the server, then run the client in another
terminal::

    python examples/error_handling.py server              # listens on port 8800
    python examples/error_handling.py client              # connects to localhost:8800
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


class ErrorService(pb.Root):
    """
    The root object every connection gets: methods that fail.
    """

    def remote_causeError(self) -> None:
        raise ValueError("Something went wrong!")

    def remote_safeDivide(self, a: float, b: float) -> float:
        try:
            return a / b
        except ZeroDivisionError:
            raise ValueError("Cannot divide by zero")


def makeFactory() -> pb.PBServerFactory:
    """
    The server factory: every connection gets an L{ErrorService} as its root.
    """
    return pb.PBServerFactory(ErrorService())


async def serve(reactor: IReactorTime, endpoint: str, out: Output = print) -> None:
    """
    Listen on C{endpoint} (e.g. C{"tcp:8800"}) and serve until the process ends.
    """
    port = await endpoints.serverFromString(reactor, endpoint).listen(makeFactory())
    out(f"PB server running on port {port.getHost().port}")
    await Deferred()


async def runClient(reactor: IReactorTime, endpoint: str, out: Output | None = None) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    make calls that fail and one that succeeds, and disconnect.

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
        try:
            await root.callRemote("causeError")
        except pb.RemoteError as e:
            report(f"Remote error: {e} (a {e.remoteType})")
        report(f"10 / 4 = {await root.callRemote('safeDivide', 10, 4)}")
        try:
            await root.callRemote("safeDivide", 10, 0)
        except ValueError as e:
            report(f"Division error: {e}")
        try:
            await root.callRemote("noSuchMethod")
        except AttributeError as e:
            report(f"Missing method: {e}")
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
    parser = argparse.ArgumentParser(description="Remote errors over PB.")
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
