"""
Tests of Server-Sent Events (C{gateway/sse.py}) with the real C{curl -N}
as the client, against the demo service on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from test_websocket import GatewayHarness, waitFor
from tools import requireTool
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

CURL = shutil.which("curl")


class Event:
    """
    One event of a stream: its C{id}, C{event} name and parsed C{data}, or
    a comment.
    """

    def __init__(self, block: str) -> None:
        self.id: int | None = None
        self.event: str | None = None
        self.data: Any = None
        self.comment: str | None = None
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comment = value
            elif field == "id":
                self.id = int(value)
            elif field == "event":
                self.event = value
            elif field == "data":
                self.data = json.loads(value)
            else:
                raise AssertionError(f"unexpected line {line!r} in an event stream")

    def __repr__(self) -> str:
        return f"Event(id={self.id}, event={self.event}, data={self.data!r}, comment={self.comment!r})"


class Curl(ProcessProtocol):
    """
    A running C{curl -sN -i URL}: its response head, and the events read so
    far.
    """

    def __init__(self) -> None:
        self.output = b""
        self.errors = b""
        self.exitCode: int | None = None
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        self.exitCode = reason.value.exitCode if reason.check(ProcessDone) is None else 0
        self.ended.callback(None)

    @property
    def head(self) -> str:
        head, _, _ = self.output.partition(b"\r\n\r\n")
        return head.decode("latin-1")

    @property
    def status(self) -> int:
        return int(self.head.split(" ", 2)[1])

    def events(self) -> list[Event]:
        """
        The complete events received so far, comments included.
        """
        _, separator, body = self.output.partition(b"\r\n\r\n")
        if not separator:
            return []
        blocks = body.decode("utf-8").split("\n\n")[:-1]
        return [Event(block) for block in blocks]

    def named(self) -> list[Event]:
        """
        The events received so far, without comments.
        """
        return [event for event in self.events() if event.comment is None]

    async def stop(self) -> None:
        """
        Kill curl if it still runs, and wait for it to end.
        """
        if self.exitCode is None and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
        await self.ended


class SSETests(GatewayHarness, TestCase):
    """
    C{GET /api/caches/HANDLE/events}, read by C{curl -N}.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        requireTool(CURL is not None, "curl (apt-get install curl)")

    async def watchBoard(self, **options: Any) -> tuple[str, str]:
        """
        The demo behind a gateway, and an anonymous REST session holding the
        board: its token and the board's cache handle.
        """
        await self.startDemo(**options)
        rest = self.restClient()
        await rest.login(anonymous=True)
        board = await rest.call("board")
        assert rest.token is not None
        return rest.token, board.handle

    def curl(self, path: str, *options: str) -> Curl:
        """
        Start C{curl -sN -i} on a gateway path; the test stops it.
        """
        assert CURL is not None
        process = Curl()
        reactor.spawnProcess(
            process, CURL, [CURL, "-sN", "-i", *options, self.httpURL + path],
            env={"PATH": os.environ.get("PATH", "")},
        )
        self.addCleanup(process.stop)
        return process

    def bearer(self, token: str) -> tuple[str, str]:
        return ("-H", f"Authorization: Bearer {token}")

    async def events(self, process: Curl, count: int) -> list[Event]:
        """
        The first C{count} named events of a stream, once they arrived.
        """
        await waitFor(lambda: len(process.named()) >= count or process.exitCode is not None,
                      what=f"{count} events")
        events = process.named()
        self.assertGreaterEqual(len(events), count, (process.output, process.errors))
        return events[:count]

    async def addTasks(self, token: str, handle: str, count: int, prefix: str = "task") -> None:
        """
        Add C{count} tasks to the board on the broker, and wait until the
        session's mirror has them.
        """
        for n in range(count):
            self.realm.addTask(f"{prefix} {n}", "test")
        await self.mirrorReaches(token, handle, len(self.realm.board))

    async def test_snapshotThenUpdates(self) -> None:
        """
        The stream is C{text/event-stream}; it opens with a C{snapshot}
        event (C{id:} its seq), then one C{update} event per change with
        increasing ids equal to the update's seq.
        """
        token, handle = await self.watchBoard()
        await self.addTasks(token, handle, 1, "before")
        process = self.curl(f"/api/caches/{handle}/events", *self.bearer(token))
        [snapshot] = await self.events(process, 1)
        self.assertEqual(process.status, 200)
        self.assertIn("content-type: text/event-stream", process.head.lower())
        self.assertEqual((snapshot.event, snapshot.id), ("snapshot", 1))
        self.assertEqual(snapshot.data["$cache"], handle)
        self.assertEqual((snapshot.data["type"], snapshot.data["seq"]), ("pb.live.LiveDict", 1))
        self.assertEqual([t["text"] for t in snapshot.data["state"].values()], ["before 0"])
        await self.addTasks(token, handle, 3)
        events = await self.events(process, 4)
        updates = events[1:]
        self.assertEqual([e.event for e in updates], ["update"] * 3)
        self.assertEqual([e.id for e in updates], [2, 3, 4])
        self.assertEqual([e.data["seq"] for e in updates], [2, 3, 4])
        self.assertEqual({e.data["cache"] for e in updates}, {handle})
        self.assertEqual([e.data["args"][2]["text"] for e in updates],
                         ["task 0", "task 1", "task 2"])

    async def test_resumeReplays(self) -> None:
        """
        C{Last-Event-ID: N} (or C{?since=N}) replays the buffered updates
        after N, with no snapshot, then continues live.
        """
        token, handle = await self.watchBoard()
        await self.addTasks(token, handle, 3)
        for since, options, query in [
            (1, ("-H", "Last-Event-ID: 1"), ""),
            (2, (), "?since=2"),
        ]:
            process = self.curl(f"/api/caches/{handle}/events{query}", *self.bearer(token),
                                *options)
            events = await self.events(process, 2)
            self.assertEqual([(e.event, e.id) for e in events],
                             [("update", since + 1), ("update", since + 2)])
            await self.addTasks(token, handle, 1, "live")
            [*_, live] = await self.events(process, 3)
            self.assertEqual((live.event, live.id), ("update", since + 3))
            await process.stop()

    async def test_resumeSnapshot(self) -> None:
        """
        When the updates after C{Last-Event-ID} are no longer buffered
        (C{updateBuffer=2}, four changes), the stream starts with a fresh
        snapshot of the current state.
        """
        token, handle = await self.watchBoard(updateBuffer=2)
        await self.addTasks(token, handle, 4)
        process = self.curl(f"/api/caches/{handle}/events", *self.bearer(token),
                            "-H", "Last-Event-ID: 1")
        [snapshot] = await self.events(process, 1)
        self.assertEqual((snapshot.event, snapshot.id, snapshot.data["seq"]), ("snapshot", 4, 4))
        self.assertEqual(len(snapshot.data["state"]), 4)

    async def test_tokenInQuery(self) -> None:
        """
        C{?token=} authenticates a stream (for EventSource); a bad token is
        answered with 401 and a JSON error, as is no token.
        """
        token, handle = await self.watchBoard()
        process = self.curl(f"/api/caches/{handle}/events?token={token}")
        [snapshot] = await self.events(process, 1)
        self.assertEqual((process.status, snapshot.event), (200, "snapshot"))
        for query in ["?token=gw-nope.nope", ""]:
            refused = self.curl(f"/api/caches/{handle}/events{query}")
            await refused.ended
            self.assertEqual((refused.exitCode, refused.status), (0, 401), query)
            self.assertIn("content-type: application/json", refused.head.lower())
            _, _, body = refused.output.partition(b"\r\n\r\n")
            self.assertEqual(json.loads(body)["error"]["type"], "unauthorized")

    async def test_badRequests(self) -> None:
        """
        An unknown cache handle is 404, a malformed C{Last-Event-ID} 400,
        both as JSON errors.
        """
        token, handle = await self.watchBoard()
        for path, options, status, code in [
            ("/api/caches/c-nope/events", (), 404, "unknown_handle"),
            (f"/api/caches/{handle}/events", ("-H", "Last-Event-ID: x"), 400, "bad_event_id"),
            (f"/api/caches/{handle}/events?since=-1", (), 400, "bad_event_id"),
        ]:
            process = self.curl(path, *self.bearer(token), *options)
            await process.ended
            self.assertEqual(process.status, status, path)
            _, _, body = process.output.partition(b"\r\n\r\n")
            self.assertEqual(json.loads(body)["error"]["code"], code, path)

    async def test_keepAlive(self) -> None:
        """
        With C{sseKeepAlive=0.2} an idle stream carries keep-alive comments.
        """
        token, handle = await self.watchBoard(sseKeepAlive=0.2)
        process = self.curl(f"/api/caches/{handle}/events", *self.bearer(token))
        await waitFor(
            lambda: sum(e.comment is not None for e in process.events()) >= 2,
            what="two keep-alive comments",
        )
        comments = [e for e in process.events() if e.comment is not None]
        self.assertEqual(comments[0].comment, "keep-alive")
        self.assertEqual([e.event for e in process.named()], ["snapshot"])

    async def test_sessionEnd(self) -> None:
        """
        When the session is logged out the stream sends a C{session} event
        with the reason and ends (curl exits cleanly).
        """
        token, handle = await self.watchBoard()
        process = self.curl(f"/api/caches/{handle}/events", *self.bearer(token))
        await self.events(process, 1)
        logout = self.curl("/api/logout", "-X", "POST", *self.bearer(token))
        await logout.ended
        self.assertEqual(logout.status, 200)
        await process.ended
        self.assertEqual(process.exitCode, 0, process.errors)
        events = process.named()
        self.assertEqual([e.event for e in events], ["snapshot", "session"])
        self.assertEqual(events[-1].data, {"state": "ended", "reason": "logged out"})
