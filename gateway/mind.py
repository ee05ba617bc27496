"""
The web session's mind: how a PB service calls its web users back.

At login the gateway gives the broker a L{SessionMind} as the session's mind
(the C{client} argument of PB's login).  When the service calls
C{mind.callRemote("receive", ...)}, the mind turns it into a JSON-RPC request
to one of the session's WebSocket clients that exposed a handler for
C{receive}, and the browser's answer (result or error) goes back to the
service as the call's result or as a PB error.

  - With several sockets on one session, the call goes to the socket that
    exposed the method most recently.
  - With none, the call waits C{mindWait} seconds for one (the page may be
    reconnecting), then fails with a L{NoMindHandler} error.
  - Methods configured as notifications (C{mindNotifications}) go to every
    socket that exposed them and answer L{None} at once.
  - SSE streams of the session see each call as a read-only C{call} event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

import pb

from .codec import jsonFromPB, pbFromJSON
from .errors import GatewayError

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["MindClient", "NoMindHandler", "SessionMind"]


class NoMindHandler(pb.Error):
    """
    No web client of the session handles the method the service called.
    """


class MindClient(Protocol):
    """
    A web client that can answer mind calls (a WebSocket).
    """

    exposed: set[str]

    def mindCall(self, method: str, params: Any) -> Deferred[Any]: ...

    def mindNotify(self, method: str, params: Any) -> None: ...


class SessionMind(pb.Referenceable):
    """
    The mind the gateway lends the broker for one session.
    """

    log = Logger()

    def __init__(self, session: Session | None) -> None:
        self.session: Any = session
        self.clients: list[MindClient] = []
        self.observers: list[Callable[[str, Any], Any]] = []
        self._waiting: list[tuple[str, Deferred[MindClient]]] = []

    # -- clients ----------------------------------------------------------

    def attach(self, client: MindClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
        self.clients.append(client)
        self.exposedChanged(client)

    def detach(self, client: MindClient) -> None:
        if client in self.clients:
            self.clients.remove(client)

    def exposedChanged(self, client: MindClient) -> None:
        """
        A client exposed methods: hand it the calls waiting for them.
        """
        still = []
        for method, waiter in self._waiting:
            if method in client.exposed and client in self.clients:
                waiter.callback(client)
            else:
                still.append((method, waiter))
        self._waiting = still

    def _handler(self, method: str) -> MindClient | None:
        for client in reversed(self.clients):
            if method in client.exposed:
                return client
        return None

    # -- calls from the service -------------------------------------------

    def remoteMessageReceived(self, broker: Any, message: str, args: Any, kw: Any) -> Any:
        from pb.flavors import _decodeKeywords, _positional

        positional = _positional(broker.unserialize(args))
        keywords = _decodeKeywords(broker.unserialize(kw))
        return broker.serialize(
            Deferred.fromCoroutine(self.call(message, positional, keywords))
        )

    async def call(self, method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        """
        Deliver one call from the service; its result (or error) goes back.
        """
        session = self.session
        # A value the codec refuses is the service's mistake or the page's,
        # not the gateway's: a PB error for the caller, no logged traceback.
        try:
            jsonArgs = jsonFromPB(list(args), session)
            params: Any = jsonArgs
            if kw:
                jsonKw = jsonFromPB(kw, session)
                params = {"args": jsonArgs, "kwargs": jsonKw} if args else jsonKw
        except GatewayError as e:
            raise pb.Error(f"cannot send {method!r} to the browser: {e.message}") from None
        for observer in list(self.observers):
            try:
                observer(method, params)
            except Exception:
                self.log.failure("mind call observer failed")
        options = session.options
        if method in options.mindNotifications:
            for client in list(self.clients):
                if method in client.exposed:
                    client.mindNotify(method, params)
            return None
        handler = self._handler(method)
        if handler is None:
            handler = await self._waitFor(method, options.mindWait)
        reply = handler.mindCall(method, params)
        reply.addTimeout(options.callTimeout, session.table.clock)
        try:
            result = await reply
        except pb.Error:
            raise
        except Exception as e:
            from twisted.internet.defer import TimeoutError as DeferredTimeout

            if isinstance(e, DeferredTimeout):
                raise pb.Error(
                    f"the browser did not answer {method!r} within {options.callTimeout:g} s"
                ) from None
            raise pb.Error(f"{method} failed in the browser: {e}") from None
        try:
            return pbFromJSON(result, session)
        except GatewayError as e:
            raise pb.Error(
                f"the browser's answer to {method!r} is not a PB value: {e.message}"
            ) from None

    async def _waitFor(self, method: str, timeout: float) -> MindClient:
        waiter: Deferred[MindClient] = Deferred()
        entry = (method, waiter)
        self._waiting.append(entry)
        waiter.addTimeout(timeout, self.session.table.clock)
        try:
            return await waiter
        except Exception:
            raise NoMindHandler(
                f"no web client of this session handles {method!r}"
                f" (waited {timeout:g} s)"
            ) from None
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)

    def end(self) -> None:
        """
        The session ended: calls waiting for a client fail now.
        """
        waiting, self._waiting = self._waiting, []
        for method, waiter in waiting:
            waiter.errback(NoMindHandler(f"the session ended before {method!r} was handled"))
        self.clients.clear()
        self.observers.clear()
