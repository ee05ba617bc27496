"""
The REST suite: C{POST /api/call/add} with body C{[5,3]} through the gateway,
against the bare stack, in one run.

Three servers run side by side, all pinned to the servers' CPU, and C{wrk}
(one thread, on the other CPU) loads them in turn with the same request,
C{Authorization: Bearer} header included:

  - the gateway: a C{pb-gateway broker} process serving the demo service and
    a C{pb-gateway gateway} process in front of it, with a token from one
    password login (alice);
  - bare Klein: one Klein route that parses the JSON body and answers JSON,
    no PB (C{python -m bench._baselines klein});
  - the naive gateway: the same Klein route doing one C{callRemote("add",
    5, 3)} through Twisted's C{twisted.spread.pb} to a Twisted PB server, in
    two processes like the gateway (C{bench._baselines naive} and C{pb}).

Every site parses no forms. Each figure is the median of the repetitions, at
10 and 100 connections; the order of the servers flips every repetition and
each ratio is the median of the ratios within a repetition.

C{python -m bench.rest profile} runs C{wrk} against the gateway under
C{py-spy} and prints where the gateway and broker processes spend their CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Sequence
from typing import Any

import attrs
import treq
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from bench import _profile
from bench._load import HTTPLoad, runWrk, wrkScript
from bench._progress import progress
from bench._servers import (
    Child,
    Gateway,
    loadGeneratorCpu,
    pythonModule,
    startGateway,
    startServer,
    stopAll,
    together,
)
from bench.pb_core import Row, pairedRatio

__all__ = ["FULL", "QUICK", "Settings", "main", "run"]

SUITE = "rest"
CONNECTIONS = (10, 100)
PATH = "/api/call/add"
BODY = "[5,3]"


@attrs.frozen
class Settings:
    """
    @ivar repetitions: measurements of each server at each concurrency.
    @ivar seconds: the length of each C{wrk} run.
    @ivar warmupSeconds: one C{wrk} run per server before the first
        measurement, discarded.
    """

    repetitions: int
    seconds: float
    warmupSeconds: float


QUICK = Settings(repetitions=3, seconds=0.3, warmupSeconds=0.2)
FULL = Settings(repetitions=3, seconds=5, warmupSeconds=2)


@attrs.define
class _Server:
    """
    One server under load: its URL and the processes whose CPU it uses.
    """

    name: str
    url: str
    processes: list[Child]

    def cpuSeconds(self) -> float:
        return sum(process.cpuSeconds() for process in self.processes)


@attrs.define
class _Figures:
    loads: list[HTTPLoad] = attrs.Factory(list)
    cpuPerRequest: list[float] = attrs.Factory(list)

    @property
    def rates(self) -> list[float]:
        return [load.rate for load in self.loads]

    def describe(self, name: str) -> str:
        p50 = statistics.median(load.p50 for load in self.loads)
        p99 = statistics.median(load.p99 for load in self.loads)
        cpu = statistics.median(self.cpuPerRequest) * 1e6
        text = f"{name} p50 {p50:.2f} ms, p99 {p99:.2f} ms, server CPU {cpu:.0f} µs/req"
        errors = sum(load.errors for load in self.loads)
        return text + (f", {errors} ERRORS" if errors else "")


def _progress(message: str) -> None:
    progress(SUITE, message)


async def _login(gateway: Gateway) -> str:
    response = await treq.post(
        gateway.url + "/api/login", json={"username": "alice", "password": "password"},
        timeout=30,
    )
    body = await treq.json_content(response)
    if response.code != 200:
        raise RuntimeError(f"the gateway refused the login: {body}")
    return str(body["token"])


async def _check(server: _Server, token: str) -> None:
    response = await treq.post(
        server.url + PATH, data=BODY.encode(),
        headers=Headers({"Authorization": [f"Bearer {token}"],
                         "Content-Type": ["application/json"]}),
        timeout=30,
    )
    body = await treq.json_content(response)
    if body != {"result": 8}:
        raise RuntimeError(f"{server.name} answered {body!r} to add(5, 3)")


async def _startBaseline(reactor: Any, cpu: int | None, kind: str, *args: str) -> tuple[Child, int]:
    child, (match,) = await startServer(
        reactor, f"baseline {kind}", pythonModule("bench._baselines", kind, *args), cpu,
        r"^PORT (\d+)",
    )
    return child, int(match.group(1))


async def _startServers(
    reactor: Any, cpu: int | None, children: list[Child]
) -> tuple[dict[str, _Server], Gateway]:
    """
    Start the three servers side by side; every process started is added to
    C{children} at once, so that the caller stops them whatever happens.
    """

    async def startGatewayHere() -> Gateway:
        gateway = await startGateway(reactor, cpu)
        children.extend([gateway.gateway, gateway.broker])
        return gateway

    async def startBaseline(kind: str, *args: str) -> tuple[Child, int]:
        child, port = await _startBaseline(reactor, cpu, kind, *args)
        children.append(child)
        return child, port

    async def startNaive() -> tuple[Child, int, Child, int]:
        pbServer, pbPort = await startBaseline("pb")
        naive, naivePort = await startBaseline("naive", "--pb-port", str(pbPort))
        return pbServer, pbPort, naive, naivePort

    gateway, (klein, kleinPort), (pbServer, _, naive, naivePort) = await together(
        startGatewayHere(), startBaseline("klein"), startNaive()
    )
    servers = {
        "gateway": _Server("gateway", gateway.url, [gateway.gateway, gateway.broker]),
        "klein": _Server("bare Klein", f"http://127.0.0.1:{kleinPort}", [klein]),
        "naive": _Server("naive gateway", f"http://127.0.0.1:{naivePort}", [naive, pbServer]),
    }
    return servers, gateway


async def run(reactor: Any, quick: bool) -> list[Row]:
    """
    Measure the three servers at each concurrency, interleaved.
    """
    settings = QUICK if quick else FULL
    children: list[Child] = []
    with loadGeneratorCpu() as (serverCpu, clientCpu), tempfile.TemporaryDirectory() as folder:
        try:
            _progress(f"servers on CPU {serverCpu}, wrk on CPU {clientCpu}")
            servers, gateway = await _startServers(reactor, serverCpu, children)
            _progress(f"servers started; warm-up, {settings.warmupSeconds:g} s each")
            token = await _login(gateway)
            script = os.path.join(folder, "add.lua")
            with open(script, "w", encoding="utf-8") as f:
                f.write(wrkScript(BODY, {"Content-Type": "application/json",
                                         "Authorization": f"Bearer {token}"}))
            for server in servers.values():
                await _check(server, token)
                await runWrk(reactor, server.url + PATH, script, max(CONNECTIONS),
                             settings.warmupSeconds, clientCpu)
            figures = {
                (name, connections): _Figures()
                for name in servers for connections in CONNECTIONS
            }
            names = list(servers)
            for repetition in range(settings.repetitions):
                _progress(f"repetition {repetition + 1}/{settings.repetitions}")
                for connections in CONNECTIONS:
                    for name in names if repetition % 2 == 0 else names[::-1]:
                        server = servers[name]
                        before = server.cpuSeconds()
                        load = await runWrk(reactor, server.url + PATH, script, connections,
                                            settings.seconds, clientCpu)
                        used = server.cpuSeconds() - before
                        figures[name, connections].loads.append(load)
                        figures[name, connections].cpuPerRequest.append(
                            used / max(load.requests, 1)
                        )
        finally:
            await stopAll(children)
    return _rows(figures, settings)


def _rows(figures: dict[tuple[str, int], _Figures], settings: Settings) -> list[Row]:
    rows = []
    for connections in CONNECTIONS:
        ours = figures["gateway", connections]
        for baseline, label, target in (
            ("klein", "bare Klein", 0.6),
            ("naive", "naive gateway (Klein + Twisted PB)", 1.5),
        ):
            theirs = figures[baseline, connections]
            rows.append(
                Row(
                    SUITE,
                    f"REST add(5, 3), {connections} connections: gateway vs {label}",
                    "calls/s",
                    statistics.median(ours.rates),
                    statistics.median(theirs.rates),
                    higherIsBetter=True,
                    target=target,
                    note=f"n={len(ours.loads)} x {settings.seconds:g} s; "
                    f"{ours.describe('gateway')}; {theirs.describe(label.split(' (')[0])}",
                    pairedRatio=pairedRatio(ours.rates, theirs.rates),
                )
            )
    return rows


# -- profiling --------------------------------------------------------------


async def profile(reactor: Any, seconds: int, connections: int, top: int) -> None:
    """
    Load the gateway with C{wrk} for C{seconds} while C{py-spy} samples the
    gateway and broker processes; print their hot spots.
    """
    children: list[Child] = []
    with loadGeneratorCpu() as (serverCpu, clientCpu), tempfile.TemporaryDirectory() as folder:
        try:
            gateway = await startGateway(reactor, serverCpu)
            children += [gateway.gateway, gateway.broker]
            token = await _login(gateway)
            script = os.path.join(folder, "add.lua")
            with open(script, "w", encoding="utf-8") as f:
                f.write(wrkScript(BODY, {"Content-Type": "application/json",
                                         "Authorization": f"Bearer {token}"}))
            url = gateway.url + PATH
            await runWrk(reactor, url, script, connections, 2, clientCpu)
            outputs = {name: os.path.join(folder, f"{name}.txt") for name in ("gateway", "broker")}
            spies = [
                _profile.record(reactor, gateway.gateway.pid, seconds, outputs["gateway"], clientCpu),
                _profile.record(reactor, gateway.broker.pid, seconds, outputs["broker"], clientCpu),
            ]
            load = await runWrk(reactor, url, script, connections, seconds + 1, clientCpu)
            for spy in spies:
                await spy.finish(30)
            print(f"wrk under the profiler: {load.rate:,.0f} req/s, p50 {load.p50:.2f} ms, "
                  f"p99 {load.p99:.2f} ms ({connections} connections)")
            for name, output in outputs.items():
                print()
                print(_profile.summary(output, f"{name} process, REST add(5, 3)", top))
        finally:
            for child in reversed(children):
                await child.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    profileParser = commands.add_parser("profile", help="py-spy the gateway under wrk")
    profileParser.add_argument("--seconds", type=int, default=10)
    profileParser.add_argument("--connections", type=int, default=100)
    profileParser.add_argument("--top", type=int, default=25)
    options = parser.parse_args(argv)

    from twisted.internet import task

    task.react(lambda reactor: Deferred.fromCoroutine(
        profile(reactor, options.seconds, options.connections, options.top)
    ))


if __name__ == "__main__":
    main()
