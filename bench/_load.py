"""
The orchestrator's side of the load generators of the gateway suites.

  - HTTP: C{wrk} (L{runWrk}), with a Lua script that sets the method, the
    body and the headers, its output parsed into L{HTTPLoad}.
  - WebSocket: the programs of C{bench._clients}, whose C{RESULT} line
    L{resultOf} reads once they exit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs

from bench._servers import Child, spawn

__all__ = ["HTTPLoad", "parseWrk", "resultOf", "runWrk", "wrkScript"]

# -- wrk --------------------------------------------------------------------


@attrs.frozen
class HTTPLoad:
    """
    What one C{wrk} run measured.

    @ivar rate: requests per second.
    @ivar p50: median latency, ms.
    @ivar p99: 99th percentile latency, ms.
    @ivar requests: requests completed.
    @ivar errors: non-2xx answers plus socket errors.
    """

    rate: float
    p50: float
    p99: float
    requests: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parseWrk(output: str) -> HTTPLoad:
    """
    The figures of C{wrk --latency}'s report.
    """
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    requests = re.search(r"(\d+) requests in", output)
    if rate is None or p50 is None or p99 is None or requests is None:
        raise ValueError(f"cannot read wrk's report:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx is not None:
        errors += int(non2xx.group(1))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket is not None:
        errors += sum(int(group) for group in socket.groups())
    return HTTPLoad(
        float(rate.group(1)), _milliseconds(p50.group(1)), _milliseconds(p99.group(1)),
        int(requests.group(1)), errors,
    )


def wrkScript(body: str, headers: dict[str, str]) -> str:
    """
    A C{wrk} Lua script sending C{POST} requests with C{body} and C{headers}.
    """
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


async def runWrk(
    reactor: Any, url: str, script: str, connections: int, seconds: float, cpu: int | None
) -> HTTPLoad:
    """
    Run C{wrk -t1 -cN -dS --latency} with the Lua C{script} (a file) against
    C{url} for C{seconds}, pinned to C{cpu}.

    C{wrk} takes whole seconds; a shorter run is cut short with C{SIGINT},
    on which C{wrk} stops at its next 100 ms tick and reports as usual: its
    rate is over the time it actually ran.
    """
    whole = max(1, math.ceil(seconds))
    child = spawn(
        reactor, "wrk",
        ["wrk", "-t1", f"-c{connections}", f"-d{whole}s", "--latency", "-s", script, url],
        cpu,
    )
    interrupt = reactor.callLater(seconds, child.signal, "INT") if seconds < whole else None
    try:
        await child.finish(whole + 30)
    finally:
        if interrupt is not None and interrupt.active():
            interrupt.cancel()
    output = "\n".join(child.lines)
    if child.exitCode != 0:
        raise RuntimeError(f"wrk failed ({child.exitCode}):\n{output}")
    return parseWrk(output)


async def resultOf(child: Child, timeout: float) -> dict[str, Any]:
    """
    The C{RESULT} a load generator prints (after its standard input closes,
    for watchers), once it has exited.
    """
    exitCode = await child.finish(timeout)
    results = [line for line in child.lines if line.startswith("RESULT ")]
    if exitCode != 0 or not results:
        raise RuntimeError(f"{child.name} failed ({exitCode}):\n{child.tail()}")
    value: dict[str, Any] = json.loads(results[-1][len("RESULT "):])
    return value

