"""
What every example script shares, so that each example file holds only its
service and its client: the command line (C{server} or C{client} mode, with
C{--port} and C{--host}), logging to standard error, listening on an endpoint
until the process ends, and a client connection that is closed when the
client is done.

The examples import it as C{_runner}: a script's folder is on the path when
it runs (C{tests/test_examples.py}, which loads them by file, puts it there
too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

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
"""Seconds a client waits for any one answer."""

Output = Callable[[str], object]


class Report:
    """
    A client's report: the lines it has made so far, each also passed to
    C{out} (when there is one) as it is made.
    """

    def __init__(self, out: Output | None = None) -> None:
        self.lines: list[str] = []
        self.out = out

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.out is not None:
            self.out(line)


@asynccontextmanager
async def connected(reactor: IReactorTime, endpoint: str) -> AsyncIterator[pb.PBClientFactory]:
    """
    Connect to the PB server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"});
    the block gets the client factory, and the connection is closed when the
    block ends, however it ends.
    """
    factory = pb.PBClientFactory(options=pb.BrokerOptions(callTimeout=CALL_TIMEOUT), clock=reactor)
    broker = await endpoints.clientFromString(reactor, endpoint).connect(factory)
    try:
        yield factory
    finally:
        await disconnect(broker)


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


async def serve(
    reactor: IReactorTime,
    endpoint: str,
    factory: pb.PBServerFactory,
    out: Output = print,
    name: str = "PB server",
) -> None:
    """
    Listen on C{endpoint} (e.g. C{"tcp:8800"}) with C{factory}, say which port
    C{name} is running on, and serve until the process ends.
    """
    port = await endpoints.serverFromString(reactor, endpoint).listen(factory)
    out(f"{name} running on port {port.getHost().port}")
    await Deferred()


def say(line: str) -> None:
    print(line, flush=True)


def startLogging(level: LogLevel) -> None:
    """
    Log events of C{level} and above to standard error.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(
    argv: Sequence[str] | None,
    description: str,
    makeFactory: Callable[[IReactorTime, Output], pb.PBServerFactory],
    runClient: Callable[..., Awaitable[object]],
    *,
    serverName: str = "PB server",
    clientOptions: Mapping[str, str] | None = None,
) -> None:
    """
    Run an example from the command line.

    C{server} mode logs at level info and serves C{makeFactory(reactor, say)}
    on C{--port}; C{client} mode logs warnings only and runs C{runClient(reactor,
    endpoint, *options, say)} against C{--host} and C{--port}.

    @param serverName: what the server says is running on its port.
    @param clientOptions: the client's further options and their defaults, in
        the order C{runClient} takes them: C{{"user": "alice"}} adds C{--user}
        with the default C{"alice"}.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="localhost", help="the server to connect to")
    options = dict(clientOptions or {})
    for option, default in options.items():
        parser.add_argument(f"--{option}", default=default)
    args = parser.parse_args(argv)

    async def server(reactor: IReactorTime) -> None:
        factory = makeFactory(reactor, say)
        await serve(reactor, f"tcp:{args.port}", factory, say, serverName)

    async def client(reactor: IReactorTime) -> None:
        endpoint = f"tcp:host={args.host}:port={args.port}:timeout=10"
        await runClient(reactor, endpoint, *(getattr(args, option) for option in options), say)

    startLogging(LogLevel.info if args.mode == "server" else LogLevel.warn)
    task.react(server if args.mode == "server" else client)
