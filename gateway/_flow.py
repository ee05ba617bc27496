"""
Bounded sending to one web client (a WebSocket or an SSE stream).

The transport tells us when its buffer is full (C{pauseProducing}) and when
it drained (C{resumeProducing}).  While paused, answers queue up to a hard
limit (past it the client is disconnected as a slow consumer); cache updates
queue up to a soft limit, past which that cache is marked for a resync: its
further updates are dropped and, once the client drains, it gets one fresh
snapshot instead.  Memory per client stays bounded and the broker is never
stalled by a slow browser.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["BoundedSender"]


@implementer(IPushProducer)
class BoundedSender:
    """
    Send bytes to one client within bounds.

    @param write: sends one message now.
    @param disconnect: drops the client, with a reason.
    @param resync: called with the cache handles that need a fresh snapshot
        once the client has drained.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        disconnect: Callable[[str], None],
        resync: Callable[[set[str]], None],
        softLimit: int,
        hardLimit: int,
    ) -> None:
        self._write = write
        self._disconnect = disconnect
        self._resync = resync
        self.softLimit = softLimit
        self.hardLimit = hardLimit
        self.paused = False
        self.closed = False
        self._queue: deque[bytes] = deque()
        self.queuedBytes = 0
        self.needsResync: set[str] = set()

    def send(self, data: bytes) -> None:
        """
        Send a message that must arrive (an answer, a notification).
        """
        if self.closed:
            return
        if not self.paused:
            self._write(data)
            return
        self._enqueue(data)
        if self.queuedBytes > self.hardLimit:
            self.closed = True
            self._queue.clear()
            self.queuedBytes = 0
            self._disconnect("slow consumer: send buffer overflow")

    def sendUpdate(self, cache: str, data: bytes) -> None:
        """
        Send a cache update, or mark the cache for a resync if the client is
        too far behind.
        """
        if self.closed or cache in self.needsResync:
            return
        if self.paused and self.queuedBytes + len(data) > self.softLimit:
            self.needsResync.add(cache)
            return
        self.send(data)

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self.queuedBytes += len(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self._queue and not self.paused and not self.closed:
            data = self._queue.popleft()
            self.queuedBytes -= len(data)
            self._write(data)
        if not self.paused and self.needsResync and not self.closed:
            handles, self.needsResync = self.needsResync, set()
            self._resync(handles)

    def stopProducing(self) -> None:
        self.closed = True
        self._queue.clear()
        self.queuedBytes = 0
