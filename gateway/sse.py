"""
Server-Sent Events: follow a cache with C{curl -N} or a browser EventSource.

C{GET /api/caches/HANDLE/events} streams C{text/event-stream}: a C{snapshot}
event (the mirrored state, C{id:} its sequence number), then one C{update}
event per delta (C{id:} its sequence number).  A client that reconnects with
C{Last-Event-ID} (or C{?since=N}) gets the updates it missed from the
cache's buffer, or a fresh snapshot when they are no longer buffered.  A
comment line keeps idle connections open.  When the session ends the stream
sends a C{session} event and closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ._flow import BoundedSender
from .codec import dumps
from .errors import BadRequest
from .sessions import CacheMirror, GatewayOptions, Session

__all__ = ["EventStream", "lastEventID"]


def lastEventID(request: IRequest) -> int | None:
    """
    Where a resuming client left off: C{Last-Event-ID} or C{?since=}.
    """
    raw = request.getHeader(b"last-event-id")
    if raw is None:
        values = request.args.get(b"since")
        raw = values[0] if values else None
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    try:
        seq = int(text.strip())
    except ValueError:
        raise BadRequest(f"Last-Event-ID must be a sequence number, not {text!r}",
                         "bad_event_id") from None
    if seq < 0:
        raise BadRequest("Last-Event-ID must not be negative", "bad_event_id")
    return seq


def _event(name: str, data: Any, eventID: int | None = None) -> bytes:
    head = f"id: {eventID}\n" if eventID is not None else ""
    return f"{head}event: {name}\n".encode() + b"data: " + dumps(data) + b"\n\n"


def _updateEvent(update: dict[str, Any]) -> bytes:
    return _event("update", update, update["seq"])


class EventStream:
    """
    One SSE stream of one cache.  C{done} fires when the stream should end
    (the session ended, or the client is too slow); it is cancelled when the
    client goes away.
    """

    log = Logger()

    def __init__(
        self,
        request: IRequest,
        session: Session,
        mirror: CacheMirror,
        since: int | None,
        clock: Any,
        options: GatewayOptions,
    ) -> None:
        self.request = request
        self.session = session
        self.mirror = mirror
        self.closed = False
        self.done: Deferred[bytes] = Deferred(lambda _: self._cleanup())
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        self.sender = BoundedSender(
            request.write, self._tooSlow, self._resync,
            options.sendBufferSoft, options.sendBufferHard,
        )
        request.registerProducer(self.sender, True)  # type: ignore[attr-defined]
        missed = mirror.updatesSince(since) if since is not None else None
        if missed is None:
            self.sender.send(_event("snapshot", mirror.snapshot(), mirror.seq))
        else:
            for update in missed:
                self._update(mirror, update)
        mirror.subscribers.append(self._update)
        session.endListeners.append(self._sessionEnded)
        session.streams += 1
        if session.mind is not None:
            session.mind.observers.append(self._mindCall)
        self.keepAlive = LoopingCall(self._ping)
        self.keepAlive.clock = clock
        self.keepAlive.start(options.sseKeepAlive, now=False).addErrback(
            lambda f: self.log.failure("SSE keep-alive failed", f)
        )
        request.notifyFinish().addBoth(lambda _: self._cleanup())  # type: ignore[attr-defined]

    def _update(self, mirror: CacheMirror, update: dict[str, Any]) -> None:
        if self.session.caches.get(mirror.handle) is not mirror:
            # The session released the cache (another session sharing the
            # login may still hold it): this stream is over.
            self._finish()
            return
        self.sender.sendUpdate(mirror.handle, mirror.encoded(update, "sse", _updateEvent))

    def _resync(self, handles: set[str]) -> None:
        self.sender.send(_event("snapshot", self.mirror.snapshot(), self.mirror.seq))

    def _mindCall(self, method: str, params: Any) -> None:
        # Read-only: a stream cannot answer, so the service's call is answered
        # by a WebSocket client or fails with "no handler".
        self.sender.send(_event("call", {"method": method, "params": params}))

    def _ping(self) -> None:
        self.sender.send(b": keep-alive\n\n")

    def _sessionEnded(self, session: Session, reason: str) -> None:
        self.sender.send(_event("session", {"state": "ended", "reason": reason}))
        self._finish()

    def _tooSlow(self, reason: str) -> None:
        self.log.info("Closing a slow SSE client: {reason}", reason=reason)
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self._cleanup()
            self.done.callback(b"")

    def _cleanup(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.keepAlive.running:
            self.keepAlive.stop()
        if self._update in self.mirror.subscribers:
            self.mirror.subscribers.remove(self._update)
        if self._sessionEnded in self.session.endListeners:
            self.session.endListeners.remove(self._sessionEnded)
        self.session.streams -= 1
        mind = self.session.mind
        if mind is not None and self._mindCall in mind.observers:
            mind.observers.remove(self._mindCall)
        self.sender.stopProducing()
        try:
            self.request.unregisterProducer()  # type: ignore[attr-defined]
        except Exception:
            pass
