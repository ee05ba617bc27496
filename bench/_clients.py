"""
The WebSocket load generators of the gateway suites, run as processes of
their own on the load generators' CPU: C{python -m bench._clients ...}.
Plain asyncio, no Twisted, so that they start quickly.

  - C{calls}: one socket of the C{websockets} library, one call of
    C{add(5, 3)} at a time or many in flight, after C{rpc.login}; it reads
    the servers' CPU time (C{--pids}) around its own measurement window.
    With C{--wait} it says C{READY} once logged in and then measures once
    for every line on its standard input (the mode, C{sequential} or
    C{inflight}), on the same socket, until that closes: the benchmark
    interleaves measurements without starting a process for each.
  - C{watchers}: many minimal asyncio WebSocket clients (L{_WatcherSocket})
    that log in, optionally call C{board} (which subscribes them to the
    shared board) and then sit idle, noting when each update arrives. It
    prints C{READY n} once all are set up (with C{--warm k}: C{WARM k} after
    the first k, then it waits for a line on its standard input), C{GOT k}
    once all of its sockets have the k-th update, and C{RESULT {json}} when
    its standard input closes.

Both print their figures as one C{RESULT {json}} line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main", "percentile", "processCpuSeconds"]

# Sockets a watchers process opens at once, unless told otherwise. Twisted
# listens with a backlog of 50: connections beyond that wait for accept() in
# vain and retry a second later. The memory suite keeps this default all the
# same, as how many sessions are being opened at once shows in the RSS.
CONNECT_CONCURRENCY = 100
ADD = '{{"jsonrpc":"2.0","id":{},"method":"add","params":[5,3]}}'


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The C{fraction} quantile of C{values} (nearest rank).
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(fraction * len(ordered))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def processCpuSeconds(pid: int) -> float | None:
    """
    The CPU time (user and system) process C{pid} has used, or L{None}.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raiseFileLimit() -> int:
    """
    Raise this process's file-descriptor limit as far as allowed; the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


async def _open(url: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(
        url, compression=None, ping_interval=None, max_queue=256, open_timeout=30,
        close_timeout=2, proxy=None,
    )


async def _rpc(socket: Any, requestID: int, method: str, params: Any) -> Any:
    await socket.send(json.dumps({"jsonrpc": "2.0", "id": requestID, "method": method,
                                  "params": params}))
    while True:
        message = json.loads(await socket.recv())
        if message.get("id") == requestID:
            if "error" in message:
                raise RuntimeError(f"{method} failed: {message['error']}")
            return message.get("result")


_MODES = ("sequential", "inflight")
_LOGINS: dict[str, Any] = {
    "anonymous": {"anonymous": True},
    "alice": {"username": "alice", "password": "password"},
}


async def _sequential(socket: Any, seconds: float, latencies: list[float]) -> int:
    calls = 0
    deadline = time.perf_counter() + seconds
    send, recv = socket.send, socket.recv
    while True:
        started = time.perf_counter()
        await send(ADD.format(calls + 1000))
        answer = await recv()
        now = time.perf_counter()
        if '"result":8' not in answer:
            raise RuntimeError(f"add(5, 3) answered {answer!r}")
        latencies.append(now - started)
        calls += 1
        if now >= deadline:
            return calls


async def _inFlight(socket: Any, seconds: float, concurrency: int, latencies: list[float]) -> int:
    sent: dict[int, float] = {}
    nextID = 1000
    deadline = time.perf_counter() + seconds
    for _ in range(concurrency):
        sent[nextID] = time.perf_counter()
        await socket.send(ADD.format(nextID))
        nextID += 1
    answered = 0
    while sent:
        answer = json.loads(await socket.recv())
        now = time.perf_counter()
        started = sent.pop(answer.get("id"), None)
        if started is None or answer.get("result") != 8:
            raise RuntimeError(f"add(5, 3) answered {answer!r}")
        latencies.append(now - started)
        answered += 1
        if now < deadline:
            sent[nextID] = time.perf_counter()
            await socket.send(ADD.format(nextID))
            nextID += 1
    return answered


async def _measureCalls(
    socket: Any, options: argparse.Namespace, mode: str, pids: Sequence[int]
) -> dict[str, Any]:
    """
    Warm up, then call for C{options.seconds} in C{mode}: the figures.
    """

    async def measure(seconds: float, latencies: list[float]) -> int:
        if mode == "sequential":
            return await _sequential(socket, seconds, latencies)
        return await _inFlight(socket, seconds, options.concurrency, latencies)

    await measure(options.warmup, [])
    latencies: list[float] = []
    serverBefore = [processCpuSeconds(pid) or 0.0 for pid in pids]
    clientBefore = time.process_time()
    started = time.perf_counter()
    calls = await measure(options.seconds, latencies)
    elapsed = time.perf_counter() - started
    clientCpu = time.process_time() - clientBefore
    serverCpu = [
        (processCpuSeconds(pid) or 0.0) - before
        for pid, before in zip(pids, serverBefore, strict=True)
    ]
    return {
        "calls": calls,
        "seconds": elapsed,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "serverCpu": serverCpu,
        "clientCpu": clientCpu,
    }


async def _calls(options: argparse.Namespace) -> None:
    pids = [int(pid) for pid in options.pids.split(",") if pid]
    socket = await _open(options.url)
    try:
        await _rpc(socket, 1, "rpc.login", _LOGINS["anonymous"])
        if not options.wait:
            result = await _measureCalls(socket, options, options.mode, pids)
            print("RESULT " + json.dumps(result), flush=True)
            return
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.buffer.readline):
            mode = line.decode("ascii").strip()
            if mode not in _MODES:
                raise RuntimeError(f"not a mode: {mode!r}")
            result = await _measureCalls(socket, options, mode, pids)
            print("RESULT " + json.dumps(result), flush=True)
    finally:
        await socket.close()


class _WatcherSocket(asyncio.Protocol):
    """
    A minimal WebSocket client for the watchers: it sends small masked text
    frames, reads unfragmented ones and notes the arrival time of each
    C{rpc.update} as the bytes come in. A watcher costs its process a few
    microseconds per message, so that with a thousand of them on one CPU the
    delivery times measured are the server's, not the clients' (the
    C{websockets} library spends tens of microseconds per message).
    """

    def __init__(self, owner: _Watchers, host: str, path: str) -> None:
        self.owner = owner
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode("ascii")
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.open = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reply: asyncio.Future[bytes] | None = None
        self.arrivals: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.reply):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                return
            self.open = True
            self.opened.set_result(None)
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            self._frame(opcode, payload, now)

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:
            if b'"rpc.update"' in payload:
                self.arrivals.append(now)
                self.owner.arrived(len(self.arrivals))
            elif b'"rpc.snapshot"' in payload:
                self.owner.snapshots += 1
            elif self.reply is not None and not self.reply.done():
                self.reply.set_result(payload)
        elif opcode == 0x9:
            self.send(payload, 0xA)
        elif opcode == 0x8 and self.transport is not None:
            self.transport.close()

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """
        Send one frame, masked with the all-zero key (which leaves the
        payload as it is; clients must mask, with any key).
        """
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        if self.transport is not None:
            self.transport.write(header + b"\0\0\0\0" + payload)

    async def rpc(self, requestID: int, method: str, params: Any) -> Any:
        self.reply = asyncio.get_running_loop().create_future()
        self.send(json.dumps({"jsonrpc": "2.0", "id": requestID, "method": method,
                              "params": params}).encode("utf-8"))
        answer = json.loads(await asyncio.wait_for(self.reply, 60))
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer.get("result")


class _Watchers:
    """
    Many idle sockets noting when each update reaches them.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.sockets: list[_WatcherSocket] = []
        self.complete: dict[int, int] = {}
        self.snapshots = 0

    async def open(
        self, url: str, login: str, subscribe: bool, count: int, concurrency: int
    ) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                _, socket = await loop.create_connection(
                    lambda: _WatcherSocket(self, f"{host}:{port}", parts.path or "/"), host, port
                )
                self.sockets.append(socket)
                await asyncio.wait_for(socket.opened, 60)
                if login != "none":
                    await socket.rpc(1, "rpc.login", _LOGINS[login])
                if subscribe:
                    await socket.rpc(2, "board", [])

        await asyncio.gather(*(one() for _ in range(count)))

    def arrived(self, index: int) -> None:
        done = self.complete.get(index, 0) + 1
        self.complete[index] = done
        if done == self.count:
            print(f"GOT {index}", flush=True)


async def _watch(options: argparse.Namespace) -> dict[str, Any]:
    limit = _raiseFileLimit()
    watchers = _Watchers(options.warm + options.count)
    loop = asyncio.get_running_loop()
    if options.warm:
        await watchers.open(options.url, options.login, options.subscribe, options.warm,
                            options.concurrency)
        print(f"WARM {options.warm}", flush=True)
        await loop.run_in_executor(None, sys.stdin.buffer.readline)
    started = time.perf_counter()
    await watchers.open(options.url, options.login, options.subscribe, options.count,
                        options.concurrency)
    print(f"READY {len(watchers.sockets)} in {time.perf_counter() - started:.1f} s "
          f"(fd limit {limit})", flush=True)
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    arrivals = [socket.arrivals for socket in watchers.sockets]
    for socket in watchers.sockets:
        if socket.transport is not None:
            socket.transport.close()
    return {"arrivals": arrivals, "snapshots": watchers.snapshots}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._clients", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    calls = commands.add_parser("calls", help="add(5, 3) over one socket")
    calls.add_argument("--url", required=True)
    calls.add_argument("--mode", choices=_MODES, help="without --wait")
    calls.add_argument("--wait", action="store_true",
                       help="say READY, then measure once per line (a mode) on stdin")
    calls.add_argument("--seconds", type=float, default=2.0)
    calls.add_argument("--warmup", type=float, default=0.5)
    calls.add_argument("--concurrency", type=int, default=100)
    calls.add_argument("--pids", default="", help="server processes whose CPU time to read")
    watchers = commands.add_parser("watchers", help="many idle sockets")
    watchers.add_argument("--url", required=True)
    watchers.add_argument("--count", type=int, required=True)
    watchers.add_argument("--login", choices=["none", *_LOGINS], default="anonymous")
    watchers.add_argument("--subscribe", action="store_true", help="call board on each")
    watchers.add_argument("--concurrency", type=int, default=CONNECT_CONCURRENCY,
                          help="sockets being opened at once")
    watchers.add_argument("--warm", type=int, default=0,
                          help="open this many first, say WARM and wait for a line on stdin")
    options = parser.parse_args(argv)
    if options.command == "calls":
        if options.mode is None and not options.wait:
            parser.error("calls needs --mode or --wait")
        asyncio.run(_calls(options))
    else:
        print("RESULT " + json.dumps(asyncio.run(_watch(options))), flush=True)


if __name__ == "__main__":
    main()
