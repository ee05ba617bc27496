"""
The bare-stack servers the gateway suites compare against, one tiny server
each: C{python -m bench._baselines KIND --port 0}.

  - C{klein}: a bare Klein route, C{POST /api/call/add}, that parses the JSON
    body and answers JSON, with no PB behind it;
  - C{pb}: a Twisted PB server (C{twisted.spread.pb}) whose root has
    C{remote_add};
  - C{naive}: the naive gateway, the same Klein route doing one
    C{callRemote("add", ...)} through Twisted's PB to the C{pb} server;
  - C{autobahn}: an autobahn WebSocket server answering the gateway's
    JSON-RPC shape itself (C{rpc.login}, C{add}, C{board}) and, with
    C{--trigger-port}, broadcasting every line written to that TCP port to
    the sockets that called C{board};
  - C{pb-clients}: not a server: opens C{--count} Twisted PB client
    connections to the C{pb} server and prints its own memory before and
    after, for the memory suite.

Servers print C{PORT <number>} once listening (and C{TRIGGER <number>}) and
exit when their standard input closes or on C{SIGTERM}. Every HTTP site
parses no forms (C{parsePOSTFormSubmission=False}), like the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.server import Site

__all__ = ["main"]

HOST = "127.0.0.1"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _exitOnEOF(reactor: Any) -> None:
    """
    Stop the reactor when standard input closes, so that a server never
    outlives the benchmark that started it.
    """

    def wait() -> None:
        sys.stdin.buffer.read()
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=wait, name="stdin-eof", daemon=True).start()


async def _listen(reactor: Any, port: int, factory: Any, label: str = "PORT") -> Any:
    listening = await serverFromString(reactor, f"tcp:{port}:interface={HOST}").listen(factory)
    print(f"{label} {listening.getHost().port}", flush=True)
    return listening


# -- HTTP -------------------------------------------------------------------


def _kleinSite(root: Any) -> Site:
    """
    A Klein app with one route, C{POST /api/call/add}, answering
    C{{"result": a + b}}; with C{root}, the sum comes from
    C{root.callRemote("add", a, b)} over Twisted's PB.
    """
    from klein import Klein

    app = Klein()

    @app.route("/api/call/add", methods=["POST"])
    async def add(request: Any) -> bytes:
        args = json.loads(request.content.read())
        result = args[0] + args[1] if root is None else await root.callRemote("add", *args)
        request.setHeader(b"content-type", b"application/json")
        return _dumps({"result": result})

    return Site(app.resource(), parsePOSTFormSubmission=False)


async def _serveKlein(reactor: Any, port: int) -> None:
    await _listen(reactor, port, _kleinSite(None))


async def _serveNaive(reactor: Any, port: int, pbPort: int) -> None:
    from twisted.spread import pb

    factory = pb.PBClientFactory()
    await TCP4ClientEndpoint(reactor, HOST, pbPort).connect(factory)
    root = await factory.getRootObject()
    await _listen(reactor, port, _kleinSite(root))


async def _servePB(reactor: Any, port: int) -> None:
    from twisted.spread import pb

    class Root(pb.Root):
        def remote_add(self, a: Any, b: Any) -> Any:
            return a + b

    await _listen(reactor, port, pb.PBServerFactory(Root()))


# -- WebSocket --------------------------------------------------------------


def _autobahnFactory(reactor: Any) -> Any:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Protocol(WebSocketServerProtocol):
        factory: Any

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            self.factory.subscribers.discard(self)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            message = json.loads(payload)
            method = message.get("method")
            params = message.get("params")
            if method == "add":
                result: Any = params[0] + params[1]
            elif method == "rpc.login":
                result = {"token": "bench-token", "expires_in": 900.0, "methods": None}
            elif method == "board":
                self.factory.subscribers.add(self)
                result = {"$cache": "cBench", "type": "pb.live.LiveDict", "state": {}, "seq": 0}
            else:
                result = None
            self.sendMessage(_dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": result}))

    class Factory(WebSocketServerFactory):
        protocol = Protocol

        def __init__(self) -> None:
            super().__init__(f"ws://{HOST}", reactor=reactor)
            self.subscribers: set[Protocol] = set()

    return Factory()


class _Trigger(LineReceiver):
    """
    Each line it receives is sent as one text message to every subscriber.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, subscribers: set[Any]) -> None:
        self.subscribers = subscribers

    def lineReceived(self, line: bytes) -> None:
        for subscriber in self.subscribers:
            subscriber.sendMessage(line)


async def _serveAutobahn(reactor: Any, port: int, triggerPort: int | None) -> None:
    factory = _autobahnFactory(reactor)
    await _listen(reactor, port, factory)
    if triggerPort is not None:
        await _listen(
            reactor, triggerPort, Factory.forProtocol(lambda: _Trigger(factory.subscribers)),
            "TRIGGER",
        )


# -- PB client connections -------------------------------------------------


def _ownRssKiB() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _pbClients(reactor: Any, port: int, count: int) -> None:
    """
    Open C{count} Twisted PB connections (each with its root object), and
    print the memory they took: C{{"before", "after", "count"}} in KiB.
    """
    import gc

    from twisted.spread import pb

    async def one() -> Any:
        factory = pb.PBClientFactory()
        await TCP4ClientEndpoint(reactor, HOST, port).connect(factory)
        root = await factory.getRootObject()
        await root.callRemote("add", 1, 2)
        return factory, root

    held = [await one()]
    gc.collect()
    before = _ownRssKiB()
    batch = 50
    for start in range(0, count, batch):
        held += await _gather([Deferred.fromCoroutine(one()) for _ in range(min(batch, count - start))])
    gc.collect()
    after = _ownRssKiB()
    print(json.dumps({"before": before, "after": after, "count": count}), flush=True)
    print("READY", flush=True)
    _exitOnEOF(reactor)
    await Deferred()  # held until standard input closes


async def _gather(ds: list[Deferred[Any]]) -> list[Any]:
    from twisted.internet.defer import gatherResults

    return list(await gatherResults(ds, consumeErrors=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._baselines", description=__doc__)
    parser.add_argument("kind", choices=["klein", "pb", "naive", "autobahn", "pb-clients"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pb-port", type=int, help="the pb server (naive, pb-clients)")
    parser.add_argument("--trigger-port", type=int, help="autobahn: broadcast lines sent here")
    parser.add_argument("--count", type=int, default=1000, help="pb-clients: connections")
    options = parser.parse_args(argv)

    from twisted.internet import reactor

    def failed(failure: Failure) -> None:
        failure.printTraceback()
        reactor.stop()

    starters = {
        "klein": lambda: _serveKlein(reactor, options.port),
        "pb": lambda: _servePB(reactor, options.port),
        "naive": lambda: _serveNaive(reactor, options.port, options.pb_port),
        "autobahn": lambda: _serveAutobahn(reactor, options.port, options.trigger_port),
        "pb-clients": lambda: _pbClients(reactor, options.pb_port, options.count),
    }
    if options.kind != "pb-clients":
        _exitOnEOF(reactor)
    reactor.callWhenRunning(
        lambda: Deferred.fromCoroutine(starters[options.kind]()).addErrback(failed)
    )
    reactor.run()
    # The thread waiting for the end of standard input may still hold its
    # lock, which would abort the interpreter's shutdown: leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
