"""
The WebSocket bridge: JSON-RPC 2.0 over one socket, with live cache updates.

One text frame carries one JSON-RPC message or a batch.  Requests run
concurrently and are answered as they complete (pipelining, out of order).
Besides the session's perspective methods (or the root object's, before
login) the socket understands C{rpc.login}, C{rpc.logout}, C{rpc.call},
C{rpc.release}, C{rpc.describe} and C{rpc.subscribe}; the gateway sends
C{rpc.update}, C{rpc.snapshot} and C{rpc.session} notifications.  A bad
message is answered with a JSON-RPC error and never closes the socket; only
abuse does (oversized frames: 1009; a slow consumer: 1008).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

import pb

from . import _autobahn
from ._flow import BoundedSender
from .codec import dumps, loads, pbFromJSON
from .errors import BadRequest, GatewayError, NotFound, TooManyRequests, errorFromFailure
from .sessions import CacheMirror, Session, SessionTable

__all__ = ["GatewayWebSocketFactory", "GatewayWebSocketProtocol", "rpcError"]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Arguments that are the same value in JSON and in PB (the codec passes them
# through): a call with only these needs no decoding.
_PLAIN_ARGS = frozenset({str, int, float, bool, type(None)})


class _RPCError(Exception):
    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def rpcError(error: GatewayError) -> dict[str, Any]:
    """
    The JSON-RPC error object for a gateway error.
    """
    code = error.rpcCode
    if error.code == "no_such_method":
        code = METHOD_NOT_FOUND
    return {"code": code, "message": error.message, "data": error.asJSON()}


def _updateMessage(update: dict[str, Any]) -> bytes:
    return dumps({"jsonrpc": "2.0", "method": "rpc.update", "params": update})


def _cacheHandles(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        handle = value.get("$cache")
        if isinstance(handle, str):
            found.add(handle)
        for item in value.values():
            if isinstance(item, (dict, list)):
                _cacheHandles(item, found)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _cacheHandles(item, found)
    return found


def _params(params: Any) -> tuple[list[Any], dict[str, Any]]:
    if params is None:
        return [], {}
    if isinstance(params, list):
        return params, {}
    if isinstance(params, dict):
        return [], params
    raise _RPCError(INVALID_PARAMS, "params must be an array or an object")


def _named(params: Any, *required: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise _RPCError(INVALID_PARAMS, f"params must be an object with {', '.join(required)}")
    missing = [name for name in required if name not in params]
    if missing:
        raise _RPCError(INVALID_PARAMS, f"params lack {', '.join(missing)}")
    return params


class GatewayWebSocketProtocol(WebSocketServerProtocol):
    """
    One browser's socket.
    """

    factory: GatewayWebSocketFactory
    maxMessagePayloadSize: int
    # Not "log": autobahn logs every frame with self.gatewayLog.debug(...) through a
    # txaio logger whose debug is a no-op; a Twisted Logger there would build
    # and filter an event for each frame.
    gatewayLog = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self.inFlight = 0
        self.subscriptions: dict[str, CacheMirror] = {}
        self.sender: BoundedSender | None = None
        self._joinToken: str | None = None
        self._clientAddress: str | None = None
        # Mind calls: the methods this page handles, and the calls it has not
        # answered yet (by our request id).
        self.exposed: set[str] = set()
        self._mindCalls: dict[str, Deferred[Any]] = {}
        self._mindCallCount = 0

    # -- connection -------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        origin = request.headers.get("origin")
        # request.host has lost the port; an Origin carries it, so compare
        # with the whole Host header.
        host = request.headers.get("host", request.host)
        if origin is not None and not self.factory.originAllowed(origin, host):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        forwarded = request.headers.get("x-forwarded-for")
        peer = self.transport.getPeer() if self.transport is not None else None
        self._clientAddress = self.factory.table.proxies.clientAddress(
            getattr(peer, "host", None), [forwarded] if forwarded else None
        )
        tokens = request.params.get("token")
        # /ws?token=T joins that session at once (and lets a proxy route the
        # socket to the gateway holding it).
        self._joinToken = tokens[0] if tokens else None
        return None

    def onOpen(self) -> None:
        options = self.factory.table.options
        self.sender = BoundedSender(
            self._write, self._slowConsumer, self._resync,
            options.sendBufferSoft, options.sendBufferHard,
        )
        # The transport was taken over from the HTTP channel, which is still
        # registered as its producer.
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.registerProducer(self.sender, True)
        self.factory.sockets.add(self)
        if self._joinToken is not None:
            try:
                self._bind(self.factory.table.get(self._joinToken))
            except GatewayError as e:
                self._notify("rpc.session", {"state": "ended", "reason": e.message})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.sockets.discard(self)
        if self.sender is not None:
            self.sender.closed = True
        self._unbind()
        pending, self._mindCalls = self._mindCalls, {}
        for call in pending.values():
            call.errback(pb.Error("the browser disconnected during the call"))

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's dataReceived formats a debug line for every chunk (type
        # names styled with click: several µs) that its txaio logger then
        # drops; this is the rest of it.  The calls the chunk makes go to the
        # broker together, when it is done (pb.Broker.cork).
        session = self.session
        broker = session.login.factory._broker if session is not None else None
        if broker is None:
            self._dataReceived(data)
            return
        broker.cork()
        try:
            self._dataReceived(data)
        finally:
            broker.uncork()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn's sendData also formats a debug line (click-styled type
        # names, several µs) for every write, which its logger then drops.
        # Writes that are not queued or chopped are done here without it.
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        assert self.transport is not None
        if not self.factory.table.writes.add(self.transport, data):
            self.transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if getattr(self, "logOctets", False):
            self.logTxOctets(data, False)

    def _write(self, data: bytes) -> None:
        if self.state != self.STATE_OPEN:
            # Closing: autobahn would raise Disconnected; the client is gone.
            return
        # maxMessageSize bounds what clients send.  Autobahn applies its
        # maxMessagePayloadSize to outgoing messages too (raising, so the
        # request would never be answered); what we send is bounded by the
        # BoundedSender instead.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(data, isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    def _slowConsumer(self, reason: str) -> None:
        self.gatewayLog.info("Dropping a slow WebSocket client: {reason}", reason=reason)
        # sendClose only takes application codes (1000, 3000-4999) and raises
        # for 1008 (policy violation), which a server may send.
        self.sendCloseFrame(code=1008, reasonUtf8=reason[:100].encode("utf-8"), isReply=False)

    def _sendJSON(self, message: dict[str, Any]) -> None:
        if self.sender is not None:
            self.sender.send(dumps(message))

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        self._sendJSON({"jsonrpc": "2.0", "method": method, "params": params})

    # -- session binding --------------------------------------------------

    def _bind(self, session: Session) -> None:
        if self.session is session:
            return
        self._unbind()
        self.session = session
        session.streams += 1
        session.endListeners.append(self._sessionEnded)
        if session.mind is not None:
            session.mind.attach(self)

    def _unbind(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.streams -= 1
        if session is not None and session.mind is not None:
            session.mind.detach(self)
        for mirror in self.subscriptions.values():
            if self._update in mirror.subscribers:
                mirror.subscribers.remove(self._update)
        self.subscriptions.clear()
        if session is not None and self._sessionEnded in session.endListeners:
            session.endListeners.remove(self._sessionEnded)

    def _sessionEnded(self, session: Session, reason: str) -> None:
        if self.session is session:
            self._unbind()
            self._notify("rpc.session", {"state": "ended", "reason": reason})

    # -- cache updates ----------------------------------------------------

    def _subscribe(self, mirror: CacheMirror) -> None:
        if mirror.handle not in self.subscriptions:
            self.subscriptions[mirror.handle] = mirror
            mirror.subscribers.append(self._update)

    def _unsubscribe(self, handle: str) -> None:
        mirror = self.subscriptions.pop(handle, None)
        if mirror is not None and self._update in mirror.subscribers:
            mirror.subscribers.remove(self._update)

    def _update(self, mirror: CacheMirror, update: dict[str, Any]) -> None:
        if self.sender is not None:
            self.sender.sendUpdate(mirror.handle, mirror.encoded(update, "rpc", _updateMessage))

    def _resync(self, handles: set[str]) -> None:
        for handle in handles:
            mirror = self.subscriptions.get(handle)
            if mirror is not None:
                self._notify("rpc.snapshot", mirror.snapshot())

    def _subscribeResult(self, result: Any) -> None:
        if self.session is None:
            return
        for handle in _cacheHandles(result, set()):
            mirror = self.session.caches.get(handle)
            if mirror is not None:
                self._subscribe(mirror)

    # -- messages ---------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self._sendJSON(self._errorResponse(None, INVALID_REQUEST, "send JSON-RPC as text frames"))
            return
        try:
            message = loads(payload)
        except GatewayError as e:
            self._sendJSON(self._errorResponse(None, PARSE_ERROR, e.message))
            return
        if isinstance(message, list):
            if not message:
                self._sendJSON(self._errorResponse(None, INVALID_REQUEST, "empty batch"))
                return
            d = Deferred.fromCoroutine(self._batch(message))
        elif type(message) is dict and self._plainCall(message):
            return
        else:
            d = Deferred.fromCoroutine(self._single(message))
        d.addErrback(self._messageFailed)

    def _messageFailed(self, failure: Failure) -> None:
        self.gatewayLog.failure("WebSocket message failed", failure)

    def _plainCall(self, message: dict[str, Any]) -> bool:
        """
        Start the common request at once, if C{message} is one: a
        perspective method called with plain positional arguments, in a
        live session, with room in flight.  Whether it was; anything else
        (and every error it could meet before the call is sent) takes the
        general path of L{_handle}, which answers the same.

        No coroutine is made: the call's Deferred is answered by
        L{_answered} or L{_callFailed}, as L{_handle} would answer it.
        """
        session = self.session
        method = message.get("method")
        requestID = message.get("id")
        params = message.get("params")
        if (
            session is None
            or session.ended is not None
            or type(method) is not str
            or message.get("jsonrpc") != "2.0"
            or (type(requestID) is not int and type(requestID) is not str)
            or (type(params) is not list and params is not None)
            or self.inFlight >= self.factory.table.options.maxInFlight
            or method.startswith("rpc.")
            or not _METHOD_NAME.match(method)
        ):
            return False
        if params is None:
            params = []
        else:
            for arg in params:
                if type(arg) not in _PLAIN_ARGS:
                    return False
        session.touch()
        self.inFlight += 1
        try:
            calling = session.callOn(session.login.avatar, method, params, {})
        except Exception:
            calling = fail()
        calling.addCallbacks(
            self._answered, self._callFailed,
            callbackArgs=(requestID,), errbackArgs=(requestID, method),
        )
        return True

    def _answered(self, result: Any, requestID: int | str) -> None:
        self.inFlight -= 1
        try:
            if type(result) is dict or type(result) is list:
                self._subscribeResult(result)
            self._sendJSON({"jsonrpc": "2.0", "id": requestID, "result": result})
        except Exception:
            self._messageFailed(Failure())

    def _callFailed(self, failure: Failure, requestID: int | str, method: str) -> None:
        self.inFlight -= 1
        try:
            self._sendJSON({"jsonrpc": "2.0", "id": requestID,
                            "error": rpcError(self._gatewayError(failure, method))})
        except Exception:
            self._messageFailed(Failure())

    def _gatewayError(self, failure: Failure, method: str) -> GatewayError:
        """
        The error to answer a failed call with; an unexpected one is logged.
        """
        if isinstance(failure.value, GatewayError):
            return failure.value
        error = errorFromFailure(failure, self.factory.table.options.debug)
        if error.type == "internal_error":
            self.gatewayLog.failure("Unexpected error in {method}", failure, method=method)
        return error

    async def _single(self, message: Any) -> None:
        response = await self._handle(message)
        if response is not None:
            self._sendJSON(response)

    async def _batch(self, messages: list[Any]) -> None:
        from twisted.internet.defer import gatherResults

        responses = await gatherResults(
            [Deferred.fromCoroutine(self._handle(message)) for message in messages]
        )
        answered = [response for response in responses if response is not None]
        if answered and self.sender is not None:
            self.sender.send(dumps(answered))

    @staticmethod
    def _errorResponse(requestID: Any, code: int, message: str,
                       data: dict[str, Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return {"jsonrpc": "2.0", "id": requestID, "error": error}

    def _mindAnswer(self, message: dict[str, Any]) -> bool:
        """
        Route the page's answer to a mind call; whether C{message} was one.
        """
        if "method" in message or not ("result" in message or "error" in message):
            return False
        call = self._mindCalls.pop(message.get("id"), None)  # type: ignore[arg-type]
        if call is None:
            return isinstance(message.get("id"), str) and message["id"].startswith("m")
        if "error" in message:
            error = message["error"]
            text = error.get("message") if isinstance(error, dict) else None
            call.errback(pb.Error(str(text or error)))
        else:
            call.callback(message["result"])
        return True

    def mindCall(self, method: str, params: Any) -> Deferred[Any]:
        """
        Ask the page to run its handler for C{method}; the Deferred fires with
        its JSON result.
        """
        self._mindCallCount += 1
        requestID = f"m{self._mindCallCount}"
        call: Deferred[Any] = Deferred(lambda _: self._forgetMindCall(requestID))
        self._mindCalls[requestID] = call
        self._sendJSON({"jsonrpc": "2.0", "id": requestID, "method": method, "params": params})
        return call

    def _forgetMindCall(self, requestID: str) -> None:
        self._mindCalls.pop(requestID, None)

    def mindNotify(self, method: str, params: Any) -> None:
        self._sendJSON({"jsonrpc": "2.0", "method": method, "params": params})

    async def _handle(self, message: Any) -> dict[str, Any] | None:
        if isinstance(message, dict) and self._mindAnswer(message):
            return None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return self._errorResponse(None, INVALID_REQUEST, 'not a JSON-RPC 2.0 request')
        requestID = message.get("id")
        isNotification = "id" not in message
        if (requestID is not None and not isinstance(requestID, (str, int))) or isinstance(
            requestID, bool
        ):
            return self._errorResponse(None, INVALID_REQUEST, "id must be a string or a number")
        method = message.get("method")
        if not isinstance(method, str):
            return self._errorResponse(requestID, INVALID_REQUEST, "method must be a string")
        limit = self.factory.table.options.maxInFlight
        if self.inFlight >= limit:
            tooMany = TooManyRequests(f"at most {limit} requests in flight per socket",
                                      "too_many_in_flight")
            return None if isNotification else {
                "jsonrpc": "2.0", "id": requestID, "error": rpcError(tooMany)}
        self.inFlight += 1
        try:
            result = await self._dispatch(method, message.get("params"))
        except _RPCError as e:
            response = self._errorResponse(requestID, e.code, e.message, e.data)
        except Exception:
            error = self._gatewayError(Failure(), method)
            response = {"jsonrpc": "2.0", "id": requestID, "error": rpcError(error)}
        else:
            self._subscribeResult(result)
            response = {"jsonrpc": "2.0", "id": requestID, "result": result}
        finally:
            self.inFlight -= 1
        return None if isNotification else response

    def _requireSession(self) -> Session:
        if self.session is None or self.session.ended is not None:
            from .errors import Unauthorized

            raise Unauthorized("log in first (rpc.login)", "no_session")
        self.session.touch()
        return self.session

    async def _dispatch(self, method: str, params: Any) -> Any:
        table: SessionTable = self.factory.table
        if method.startswith("rpc."):
            handler = self._builtins.get(method)
            if handler is None:
                raise _RPCError(METHOD_NOT_FOUND, f"no such method {method!r}")
            return await handler(self, params)
        if not _METHOD_NAME.match(method):
            raise _RPCError(METHOD_NOT_FOUND, f"no such method {method!r}")
        args, kwargs = _params(params)
        if self.session is None:
            return await table.callRoot(method, pbFromJSON(args), pbFromJSON(kwargs))
        session = self._requireSession()
        return await session.callOn(
            session.login.avatar, method, pbFromJSON(args, session), pbFromJSON(kwargs, session)
        )

    async def _rpcLogin(self, params: Any) -> Any:
        table: SessionTable = self.factory.table
        if isinstance(params, dict) and "token" in params:
            token = params["token"]
            if not isinstance(token, str):
                raise _RPCError(INVALID_PARAMS, "token must be a string")
            session = table.get(token)
        else:
            if not isinstance(params, dict):
                raise _RPCError(INVALID_PARAMS, 'params: {"username", "password"} or '
                                '{"anonymous": true} or {"token": T}')
            anonymous = params.get("anonymous", False)
            if not isinstance(anonymous, bool):
                raise _RPCError(INVALID_PARAMS, "anonymous must be true or false")
            session = await table.login(
                params.get("username"), params.get("password"), anonymous,
                clientAddress=self._clientAddress,
            )
        self._bind(session)
        return {
            "token": session.token,
            "expires_in": table.options.sessionIdleTimeout,
            "methods": session.methods,
        }

    async def _rpcLogout(self, params: Any) -> Any:
        session = self._requireSession()
        self._unbind()
        session.end("logged out")
        return None

    async def _rpcCall(self, params: Any) -> Any:
        named = _named(params, "ref", "method")
        session = self._requireSession()
        method = named["method"]
        if not isinstance(method, str) or not _METHOD_NAME.match(method):
            raise _RPCError(INVALID_PARAMS, "method must be a method name")
        handle = named["ref"]
        if not isinstance(handle, str):
            raise _RPCError(INVALID_PARAMS, "ref must be a handle")
        args = named.get("args", [])
        kwargs = named.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadRequest("args is an array and kwargs an object", "bad_shape")
        return await session.callRef(
            handle, method, pbFromJSON(args, session), pbFromJSON(kwargs, session)
        )

    async def _rpcRelease(self, params: Any) -> Any:
        session = self._requireSession()
        if isinstance(params, dict) and isinstance(params.get("ref"), str):
            session.releaseRef(params["ref"])
        elif isinstance(params, dict) and isinstance(params.get("cache"), str):
            handle = params["cache"]
            session.releaseCache(handle)
            # No socket of the session follows it any more; the mirror itself
            # lives on while another session of a shared login holds it.
            for socket in list(self.factory.sockets):
                if socket.session is session:
                    socket._unsubscribe(handle)
        else:
            raise _RPCError(INVALID_PARAMS, 'params: {"ref": H} or {"cache": H}')
        return None

    async def _rpcDescribe(self, params: Any) -> Any:
        from pb.introspect import describeRemote

        table: SessionTable = self.factory.table
        target = self._requireSession().avatar if self.session else await table.rootObject()
        try:
            return await describeRemote(target, timeout=table.options.callTimeout)
        except Exception:
            raise errorFromFailure(Failure(), table.options.debug) from None

    async def _rpcSubscribe(self, params: Any) -> Any:
        named = _named(params, "cache")
        session = self._requireSession()
        handle = named["cache"]
        if not isinstance(handle, str):
            raise _RPCError(INVALID_PARAMS, "cache must be a handle")
        mirror = session.caches.get(handle)
        if mirror is None:
            raise NotFound(f"no cache {handle!r} in this session", "unknown_handle")
        since = named.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise _RPCError(INVALID_PARAMS, "since must be a sequence number")
        self._subscribe(mirror)
        missed = mirror.updatesSince(since) if since is not None else None
        if missed is None:
            self._notify("rpc.snapshot", mirror.snapshot())
            replayed = 0
        else:
            for update in missed:
                self._update(mirror, update)
            replayed = len(missed)
        return {"cache": handle, "seq": mirror.seq, "replayed": replayed,
                "snapshot": missed is None}

    async def _rpcExpose(self, params: Any) -> Any:
        named = _named(params, "methods")
        methods = named["methods"]
        if not isinstance(methods, list) or not all(
            isinstance(m, str) and _METHOD_NAME.match(m) for m in methods
        ):
            raise _RPCError(INVALID_PARAMS, "methods must be a list of method names")
        self.exposed.update(methods)
        if self.session is not None and self.session.mind is not None:
            self.session.mind.attach(self)
        return {"exposed": sorted(self.exposed)}

    _builtins = {
        "rpc.expose": _rpcExpose,
        "rpc.login": _rpcLogin,
        "rpc.logout": _rpcLogout,
        "rpc.call": _rpcCall,
        "rpc.release": _rpcRelease,
        "rpc.describe": _rpcDescribe,
        "rpc.subscribe": _rpcSubscribe,
    }


class GatewayWebSocketFactory(WebSocketServerFactory):
    """
    Builds the gateway's sockets; knows the session table and the allowed
    origins.
    """

    protocol = GatewayWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, table: SessionTable, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        _autobahn.install()
        self.table = table
        self.sockets: set[GatewayWebSocketProtocol] = set()
        options = table.options
        self.setProtocolOptions(
            maxFramePayloadSize=options.maxMessageSize,
            maxMessagePayloadSize=options.maxMessageSize,
            autoPingInterval=options.pingInterval or None,
            autoPingTimeout=options.pingTimeout or None,
            openHandshakeTimeout=10,
            # Send the close code (1009, 1002, ...) instead of dropping the
            # TCP connection, so the client learns why.
            failByDrop=False,
        )

    def originAllowed(self, origin: str, host: str | None) -> bool:
        """
        Whether a browser page from C{origin} may open a socket: one of the
        configured origins, or (by default) the gateway's own origin.
        """
        allowed = self.table.options.allowedOrigins
        if "*" in allowed or origin in allowed:
            return True
        if origin == "null":
            return False
        netloc = urlsplit(origin).netloc
        return bool(host) and netloc.lower() == (host or "").lower()
