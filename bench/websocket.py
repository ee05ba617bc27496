"""
The WebSocket suite: JSON-RPC C{add(5, 3)} calls over one socket through the
gateway, against an autobahn server that answers the same messages itself.

The gateway runs as deployed (a C{pb-gateway broker} process with the demo
service and a C{pb-gateway gateway} process); the baseline is a bare autobahn
server (C{python -m bench._baselines autobahn}) answering C{rpc.login} and
C{add} with the same JSON-RPC shapes, no PB. Both are pinned to the servers'
CPU. The client, on the other CPU, is the C{websockets} library (asyncio) in
a process of its own per server (C{python -m bench._clients calls --wait}):
it logs in (anonymous) once, and for each measurement warms up, then calls
C{{"jsonrpc":"2.0","id":N,"method":"add","params":[5,3]}} one at a time
(sequential) or with 100 in flight, for a fixed time, and reads the servers'
CPU time around that window.

C{python -m bench.websocket profile} runs the same load against the gateway
under C{py-spy}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from bench import _profile
from bench._load import resultOf
from bench._progress import progress
from bench._servers import (
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

__all__ = ["FULL", "QUICK", "Settings", "main", "run"]

SUITE = "websocket"
CONCURRENCY = 100
MODES = ("sequential", "inflight")
_MODE_NAMES = {"sequential": "sequential", "inflight": f"{CONCURRENCY} in flight"}
_TARGETS = {"sequential": 0.6, "inflight": 0.5}


@attrs.frozen
class Settings:
    """
    @ivar repetitions: measurements of each server in each mode.
    @ivar seconds: the length of each measurement.
    @ivar warmupSeconds: calls made and discarded first, on the same socket.
    """

    repetitions: int
    seconds: float
    warmupSeconds: float


QUICK = Settings(repetitions=3, seconds=0.25, warmupSeconds=0.05)
FULL = Settings(repetitions=5, seconds=3.0, warmupSeconds=0.5)


def _progress(message: str) -> None:
    progress(SUITE, message)


@attrs.define
class _Figures:
    results: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def rates(self) -> list[float]:
        return [result["calls"] / result["seconds"] for result in self.results]

    def describe(self, name: str, processes: Sequence[str]) -> str:
        p50 = statistics.median(result["p50"] for result in self.results)
        p99 = statistics.median(result["p99"] for result in self.results)
        perProcess = [
            statistics.median(result["serverCpu"][i] / result["calls"] * 1e6
                              for result in self.results)
            for i in range(len(processes))
        ]
        client = statistics.median(r["clientCpu"] / r["calls"] * 1e6 for r in self.results)
        server = " + ".join(f"{cpu:.0f} {process}" for cpu, process in
                            zip(perProcess, processes, strict=True))
        return (f"{name} p50 {p50:.2f} ms, p99 {p99:.2f} ms, CPU µs/call: server {server}, "
                f"client {client:.0f}")


async def calls(
    reactor: Any, url: str, pids: Sequence[int], mode: str, settings: Settings,
    cpu: int | None,
) -> dict[str, Any]:
    """
    One measurement by a client process: calls, seconds, p50/p99 (ms) and
    the CPU seconds of each of C{pids} and of the client.
    """
    child = spawn(
        reactor, f"websocket client ({mode})",
        pythonModule(
            "bench._clients", "calls", "--url", url, "--mode", mode,
            "--seconds", str(settings.seconds), "--warmup", str(settings.warmupSeconds),
            "--concurrency", str(CONCURRENCY), "--pids", ",".join(map(str, pids)),
        ),
        cpu,
    )
    return await resultOf(child, settings.seconds + settings.warmupSeconds + 60)


@attrs.define
class _CallsClient:
    """
    A client process (C{bench._clients calls --wait}) logged in to one
    server over one socket, measuring whenever asked.
    """

    child: Child
    settings: Settings

    @classmethod
    async def start(
        cls, reactor: Any, name: str, url: str, pids: Sequence[int], settings: Settings,
        cpu: int | None, children: list[Child],
    ) -> _CallsClient:
        child = spawn(
            reactor, f"websocket client ({name})",
            pythonModule(
                "bench._clients", "calls", "--wait", "--url", url,
                "--seconds", str(settings.seconds), "--warmup", str(settings.warmupSeconds),
                "--concurrency", str(CONCURRENCY), "--pids", ",".join(map(str, pids)),
            ),
            cpu,
        )
        children.append(child)
        await child.waitFor(r"^READY")
        return cls(child, settings)

    async def measure(self, mode: str) -> dict[str, Any]:
        """
        One measurement in C{mode}: calls, seconds, p50/p99 (ms) and the CPU
        seconds of each server process and of the client.
        """
        since = self.child.received
        self.child.write(mode.encode("ascii") + b"\n")
        timeout = self.settings.seconds + self.settings.warmupSeconds + 60
        match = await self.child.waitFor(r"^RESULT (.*)", timeout, since=since)
        result: dict[str, Any] = json.loads(match.group(1))
        return result


async def _startEcho(reactor: Any, cpu: int | None) -> tuple[Child, int]:
    child, (match,) = await startServer(
        reactor, "baseline autobahn", pythonModule("bench._baselines", "autobahn"), cpu,
        r"^PORT (\d+)",
    )
    return child, int(match.group(1))


async def run(reactor: Any, quick: bool) -> list[Row]:
    """
    Measure the gateway and the autobahn echo in both modes, interleaved.
    """
    settings = QUICK if quick else FULL
    children: list[Child] = []
    figures = {(name, mode): _Figures() for name in ("gateway", "echo") for mode in MODES}
    with loadGeneratorCpu() as (serverCpu, clientCpu):
        try:
            _progress(f"servers on CPU {serverCpu}, clients on CPU {clientCpu}")

            async def startGatewayHere() -> Gateway:
                gateway = await startGateway(reactor, serverCpu)
                children.extend([gateway.gateway, gateway.broker])
                return gateway

            async def startEcho() -> tuple[Child, int]:
                echo, echoPort = await _startEcho(reactor, serverCpu)
                children.append(echo)
                return echo, echoPort

            gateway, (echo, echoPort) = await together(startGatewayHere(), startEcho())
            clients: dict[str, _CallsClient] = dict(zip(
                ("gateway", "echo"),
                await together(
                    _CallsClient.start(reactor, "gateway", gateway.wsURL, gateway.pids(),
                                       settings, clientCpu, children),
                    _CallsClient.start(reactor, "echo", f"ws://127.0.0.1:{echoPort}/",
                                       [echo.pid], settings, clientCpu, children),
                ),
                strict=True,
            ))
            names = list(clients)
            for repetition in range(settings.repetitions):
                _progress(f"repetition {repetition + 1}/{settings.repetitions}")
                for mode in MODES:
                    for name in names if repetition % 2 == 0 else names[::-1]:
                        figures[name, mode].results.append(await clients[name].measure(mode))
        finally:
            await stopAll(children)
    rows = []
    for mode in MODES:
        ours, theirs = figures["gateway", mode], figures["echo", mode]
        rows.append(
            Row(
                SUITE,
                f"WebSocket add(5, 3), one socket, {_MODE_NAMES[mode]}: "
                "gateway vs autobahn echo",
                "calls/s",
                statistics.median(ours.rates),
                statistics.median(theirs.rates),
                higherIsBetter=True,
                target=_TARGETS[mode],
                note=f"n={len(ours.results)} x {settings.seconds:g} s; "
                f"{ours.describe('gateway', ('gateway', 'broker'))}; "
                f"{theirs.describe('echo', ('autobahn',))}",
                pairedRatio=pairedRatio(ours.rates, theirs.rates),
            )
        )
    return rows


# -- profiling --------------------------------------------------------------


async def profile(reactor: Any, seconds: float, mode: str, top: int) -> None:
    """
    Call through the gateway for C{seconds} while C{py-spy} samples the
    gateway and broker processes; print their hot spots.
    """
    children: list[Child] = []
    settings = Settings(repetitions=1, seconds=seconds + 1, warmupSeconds=1.0)
    with loadGeneratorCpu() as (serverCpu, clientCpu), tempfile.TemporaryDirectory() as folder:
        try:
            gateway = await startGateway(reactor, serverCpu)
            children += [gateway.gateway, gateway.broker]
            outputs = {name: os.path.join(folder, f"{name}.txt") for name in ("gateway", "broker")}
            spies = [
                _profile.record(reactor, gateway.gateway.pid, seconds, outputs["gateway"], clientCpu),
                _profile.record(reactor, gateway.broker.pid, seconds, outputs["broker"], clientCpu),
            ]
            result = await calls(reactor, gateway.wsURL, gateway.pids(), mode, settings, clientCpu)
            for spy in spies:
                await spy.finish(30)
            print(f"under the profiler: {result['calls'] / result['seconds']:,.0f} calls/s, "
                  f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms ({_MODE_NAMES[mode]})")
            for name, output in outputs.items():
                print()
                print(_profile.summary(output, f"{name} process, WebSocket add(5, 3), "
                                       f"{_MODE_NAMES[mode]}", top))
        finally:
            for child in reversed(children):
                await child.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.websocket", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    profileParser = commands.add_parser("profile", help="py-spy the gateway under load")
    profileParser.add_argument("--seconds", type=int, default=8)
    profileParser.add_argument("--mode", choices=MODES, default="inflight")
    profileParser.add_argument("--top", type=int, default=25)
    options = parser.parse_args(argv)

    from twisted.internet import task

    task.react(lambda reactor: Deferred.fromCoroutine(
        profile(reactor, options.seconds, options.mode, options.top)
    ))


if __name__ == "__main__":
    main()
