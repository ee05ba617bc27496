"""
The REST bridge: a Klein application turning JSON requests into PB calls.

Every route answers JSON.  Errors are L{GatewayError}s, turned into
C{{"error": {"type", "message", "code"}}} with their HTTP status by the one
handler here (L{_respond}).  Sessions and handles live in the
L{SessionTable}; values cross through the shared codec.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from io import BytesIO
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from klein.interfaces import IKleinRequest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import File
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from .accesslog import AccessLog
from .codec import dumps, loads, pbFromJSON
from .errors import (
    BadRequest,
    BrokerUnavailable,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    errorFromFailure,
)
from .metrics import Metrics
from .openapi import openAPIDocument
from .proxies import TrustedProxies
from .sessions import GatewayOptions, Session, SessionTable
from .sse import EventStream
from .sse import lastEventID as _lastEventID
from .websocket import GatewayWebSocketFactory

__all__ = ["GatewayAPI", "GatewayResource", "GatewaySite", "LimitedRequest", "makeSite"]

CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    b"frame-ancestors 'none'"
)

_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Reason phrases twisted.web lacks (it would send "Unknown Status").
_REASONS = {422: b"Unprocessable Content", 429: b"Too Many Requests"}

Handler = Callable[..., Awaitable[Any]]


def _bearer(request: IRequest, allowQuery: bool = False) -> str | None:
    """
    The request's token: C{Authorization: Bearer T}, or (only where a
    browser cannot set headers: event streams) C{?token=T}.
    """
    raw = request.getHeader(b"authorization")
    if raw is not None:
        header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    tokens = request.args.get(b"token") if allowQuery else None
    if tokens:
        return str(tokens[0].decode("utf-8", "replace"))
    return None


def _methodName(method: str) -> str:
    if not _METHOD_NAME.match(method):
        raise NotFound(f"no method {method!r}: method names are identifiers", "no_such_method")
    return method


def _readBody(request: IRequest) -> Any:
    body = request.content.read() if request.content is not None else b""
    if not body.strip():
        return None
    return loads(body)


def _callArguments(body: Any, handles: Any) -> tuple[list[Any], dict[str, Any]]:
    """
    Positional and keyword arguments from a call's body: nothing, a JSON
    array of arguments, or C{{"args": [...], "kwargs": {...}}}.
    """
    if body is None:
        return [], {}
    if isinstance(body, list):
        args, kwargs = body, {}
    elif isinstance(body, dict):
        unknown = set(body) - {"args", "kwargs"}
        if unknown:
            raise BadRequest(
                f"a call's body takes \"args\" and \"kwargs\", not {sorted(unknown)}", "bad_shape"
            )
        args = body.get("args", [])
        kwargs = body.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadRequest('"args" is an array and "kwargs" an object', "bad_shape")
    else:
        raise BadRequest("a call's body is an array of arguments or an object", "bad_shape")
    for name in kwargs:
        if not _METHOD_NAME.match(name):
            raise BadRequest(f"keyword argument names are identifiers, not {name!r}", "bad_shape")
    return pbFromJSON(args, handles), pbFromJSON(kwargs, handles)


_app = Klein()


def _route(path: str, methods: list[str], name: str) -> Callable[[Handler], Any]:
    """
    Route a JSON handler: its result (or L{GatewayError}) is answered by
    L{GatewayAPI._respond}, the one error handler of this transport.
    """

    def decorate(handler: Handler) -> Any:
        @_app.route(path, methods=methods)
        @wraps(handler)
        def endpoint(self: GatewayAPI, request: IRequest, **kwargs: Any) -> Deferred[bytes]:
            return Deferred.fromCoroutine(self._respond(name, handler, request, kwargs))

        return endpoint

    return decorate


class GatewayAPI:
    """
    The gateway's HTTP API.  C{GatewayResource(GatewayAPI(table, options))}
    is the Twisted resource to serve.
    """

    app = _app
    log = Logger()

    def __init__(self, table: SessionTable, options: GatewayOptions,
                 metrics: Metrics | None = None) -> None:
        self.table = table
        self.options = options
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.gauge("pbgw_sessions", "Open sessions.", lambda: len(table.sessions))
        self.metrics.gauge("pbgw_handles", "Reference and cache handles held.", table.handleCount)
        self.metrics.gauge("pbgw_pb_calls_waiting", "PB calls waiting for an answer.",
                           table.waitingCalls)
        self.metrics.labelledCounter(
            "pbgw_pb_calls_total", "PB calls by outcome.", lambda: table.callsByOutcome, "outcome"
        )
        self.webSocketFactory = GatewayWebSocketFactory(table, table.reactor)

    # -- the one error handler --------------------------------------------

    async def _respond(
        self, name: str, handler: Handler, request: IRequest, kwargs: dict[str, Any]
    ) -> bytes:
        started = time.perf_counter()
        try:
            result = await handler(self, request, **kwargs)
        except Exception:
            return self._answer(Failure(), name, request, started)
        return self._answer(result, name, request, started)

    def _answer(self, outcome: Any, name: str, request: IRequest, started: float) -> bytes:
        """
        The body answering C{request} with C{outcome} (a handler's result, or
        a L{Failure}), its status and headers set and the request counted.
        """
        status = 200
        result = outcome
        if isinstance(outcome, Failure):
            error = outcome.value
            if not isinstance(error, GatewayError):
                error = errorFromFailure(outcome, self.options.debug)
                if error.status >= 500 and error.type == "internal_error":
                    self.log.failure("Unexpected error in {route}", outcome, route=name)
            status, result = error.status, {"error": error.asJSON()}
            retryAfter = result["error"].get("retry_after")
            if isinstance(retryAfter, int):
                request.setHeader(b"retry-after", str(retryAfter).encode("ascii"))
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="pb-gateway"')
        request.setResponseCode(status, _REASONS.get(status))
        if not isinstance(result, bytes):
            # A handler answering bytes (/metrics) has set its own type.
            request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        self.metrics.observeRequest(
            request.method.decode("ascii", "replace"), name, status,
            time.perf_counter() - started,
        )
        if isinstance(result, bytes):
            return result
        return dumps(result)

    def renderCall(self, request: Request, method: str) -> Any:
        """
        Answer C{POST /api/call/<method>} without Klein (see
        L{GatewayResource}) and without coroutines: what L{_call} does, as a
        chain of callbacks on the PB call; the same answers.
        """
        started = time.perf_counter()
        try:
            answer = self._sendCall(request, method)
        except Exception:
            answer = fail()
        lost = False

        def connectionLost(reason: Any) -> None:
            nonlocal lost
            lost = True
            answer.cancel()

        def write(outcome: Any) -> None:
            if isinstance(outcome, Failure):
                body = self._answer(outcome, "call", request, started)
            else:
                body = self._answer({"result": outcome}, "call", request, started)
            if not lost:
                request.write(body)
                request.finish()

        request.notifyFinish().addErrback(connectionLost)
        answer.addBoth(write).addErrback(
            lambda failure: self.log.failure("Writing an answer failed", failure)
        )
        return NOT_DONE_YET

    def session(self, request: IRequest) -> Session:
        return self.table.get(_bearer(request))

    def streamSession(self, request: IRequest) -> Session:
        return self.table.get(_bearer(request, allowQuery=True))

    # -- sessions ---------------------------------------------------------

    @_route("/api/login", ["POST"], "login")
    async def login(self, request: IRequest) -> Any:
        body = _readBody(request)
        if not isinstance(body, dict):
            raise BadRequest(
                'log in with {"username": ..., "password": ...} or {"anonymous": true}',
                "bad_login",
            )
        unknown = set(body) - {"username", "password", "anonymous", "mind"}
        if unknown:
            raise BadRequest(f"login does not take {sorted(unknown)}", "bad_login")
        anonymous = body.get("anonymous", False)
        withMind = body.get("mind", True)
        if not isinstance(anonymous, bool) or not isinstance(withMind, bool):
            raise BadRequest('"anonymous" and "mind" are true or false', "bad_login")
        address = request.getClientAddress()
        session = await self.table.login(
            body.get("username"), body.get("password"), anonymous, withMind,
            getattr(address, "host", None),
        )
        return {
            "token": session.token,
            "expires_in": self.options.sessionIdleTimeout,
            "methods": session.methods,
        }

    @_route("/api/logout", ["POST"], "logout")
    async def logout(self, request: IRequest) -> Any:
        self.session(request).end("logged out")
        return {"result": None}

    # -- calls ------------------------------------------------------------

    def _sendCall(self, request: IRequest, method: str) -> Deferred[Any]:
        """
        The session's call of C{method} with the request's arguments.
        """
        session = self.session(request)
        args, kwargs = _callArguments(_readBody(request), session)
        return session.callOn(session.login.avatar, method, args, kwargs)

    async def _call(self, request: IRequest, method: str) -> Any:
        return {"result": await self._sendCall(request, _methodName(method))}

    # Taken by GatewayResource without Klein when the method name is plain.
    call = _route("/api/call/<method>", ["POST"], "call")(_call)

    @_route("/api/root/<method>", ["POST"], "root")
    async def callRoot(self, request: IRequest, method: str) -> Any:
        method = _methodName(method)
        args, kwargs = _callArguments(_readBody(request), None)
        return {"result": await self.table.callRoot(method, args, kwargs)}

    @_route("/api/refs/<handle>/<method>", ["POST"], "ref_call")
    async def callRef(self, request: IRequest, handle: str, method: str) -> Any:
        session = self.session(request)
        args, kwargs = _callArguments(_readBody(request), session)
        return {"result": await session.callRef(handle, _methodName(method), args, kwargs)}

    @_route("/api/refs/<handle>", ["DELETE"], "ref_release")
    async def releaseRef(self, request: IRequest, handle: str) -> Any:
        self.session(request).releaseRef(handle)
        return {"result": None}

    @_route("/api/caches/<handle>", ["GET"], "cache_get")
    async def getCache(self, request: IRequest, handle: str) -> Any:
        return self.session(request).mirror(handle).snapshot()

    @_route("/api/caches/<handle>", ["DELETE"], "cache_release")
    async def releaseCache(self, request: IRequest, handle: str) -> Any:
        self.session(request).releaseCache(handle)
        return {"result": None}

    @_route("/api/describe", ["GET"], "describe")
    async def describe(self, request: IRequest) -> Any:
        from pb.introspect import describeRemote

        if _bearer(request) is not None:
            target = self.session(request).avatar
        else:
            target = await self.table.rootObject()
        try:
            description = await describeRemote(target, timeout=self.options.callTimeout)
        except Exception:
            raise errorFromFailure(Failure(), self.options.debug) from None
        return {"result": description}

    # -- operations -------------------------------------------------------

    @_route("/healthz", ["GET"], "healthz")
    async def healthz(self, request: IRequest) -> Any:
        return {"status": "ok"}

    @_route("/readyz", ["GET"], "readyz")
    async def readyz(self, request: IRequest) -> Any:
        if await self.table.ready():
            return {"status": "ready"}
        raise BrokerUnavailable("the broker is not reachable")

    @_route("/metrics", ["GET"], "metrics")
    async def metricsText(self, request: IRequest) -> Any:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4")
        return self.metrics.render().encode("utf-8")

    @_route("/api/openapi.json", ["GET"], "openapi")
    async def openapi(self, request: IRequest) -> Any:
        methods = None
        if _bearer(request) is not None:
            methods = self.session(request).methods
        return openAPIDocument(methods)

    # -- streams ----------------------------------------------------------

    @_app.route("/ws", methods=["GET"])
    def websocket(self, request: IRequest) -> Any:
        return WebSocketResource(self.webSocketFactory)

    @_app.route("/api/caches/<handle>/events", methods=["GET"])
    def events(self, request: IRequest, handle: str) -> Any:
        try:
            session = self.streamSession(request)
            mirror = session.mirror(handle)
            since = _lastEventID(request)
        except GatewayError as e:
            return self._errorNow(request, e, "cache_events")
        self.metrics.observeRequest("GET", "cache_events", 200, 0.0)
        return EventStream(request, session, mirror, since, self.table.clock,
                           self.options).done

    # -- the dashboard ----------------------------------------------------

    @_app.route("/", branch=True, methods=["GET", "HEAD"])
    def static(self, request: IRequest) -> Any:
        folder = self.options.staticDir
        if folder is None or not os.path.isdir(folder):
            return self._errorNow(request, NotFound("no dashboard is served here", "no_route"),
                                  "static")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        byteRange = request.getHeader(b"range")
        if byteRange is not None and not byteRange.isascii():
            # twisted.web's File decodes a malformed Range as UTF-8 to log
            # that it ignores it, and answers 500 when that fails.
            request.requestHeaders.removeHeader(b"range")
        return _StaticFolder(folder)

    @_app.route("/api/", branch=True)
    def unknownAPI(self, request: IRequest) -> bytes:
        # This catch-all outranks a route whose method does not match: a
        # path that is a route under other methods is a 405, not a 404.
        allowed = _routeMethods(request)
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            error = MethodNotAllowed(
                f"{request.method.decode('ascii', 'replace')} is not allowed here",
                "method_not_allowed",
            )
            return self._errorNow(request, error, "unknown")
        return self._errorNow(request, NotFound("no such route", "no_route"), "unknown")

    # -- unknown routes ---------------------------------------------------

    @_app.handle_errors(WerkzeugNotFound)
    def notFound(self, request: IRequest, failure: Any) -> bytes:
        return self._errorNow(request, NotFound("no such route", "no_route"), "unknown")

    @_app.handle_errors(WerkzeugMethodNotAllowed)
    def notAllowed(self, request: IRequest, failure: Any) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        error = MethodNotAllowed(
            f"{request.method.decode('ascii', 'replace')} is not allowed here", "method_not_allowed"
        )
        return self._errorNow(request, error, "unknown")

    def _errorNow(self, request: IRequest, error: GatewayError, name: str) -> bytes:
        return self._answer(Failure(error), name, request, time.perf_counter())


_CATCH_ALLS = frozenset({"static", "static_branch", "unknownAPI", "unknownAPI_branch"})


def _routeMethods(request: IRequest) -> list[str]:
    """
    The HTTP methods of the routes (not the catch-alls) matching the
    request's path.
    """
    mapper = IKleinRequest(request).mapper
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        try:
            rule, _ = mapper.match(method=method, return_rule=True)
        except HTTPException:
            continue
        if rule.endpoint not in _CATCH_ALLS:
            allowed.append(method)
    return allowed


class _StaticFolder(File):
    """
    The dashboard's files; folders are never listed.
    """

    def directoryListing(self) -> Any:
        from twisted.web.resource import NoResource

        return NoResource("Not found")


class LimitedRequest(Request):
    """
    A request whose body may not exceed the site's C{maxBodySize}: a larger
    one is discarded as it arrives and answered with 413, unrouted.
    """

    maxBodySize = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bodySize = 0
        self._tooLarge = False

    def getClientAddress(self) -> Any:
        """
        The client's address: the peer's, or behind a trusted proxy the one
        its C{X-Forwarded-For} names (L{gateway.proxies}).
        """
        address = super().getClientAddress()
        proxies: TrustedProxies | None = getattr(self.channel.site, "trustedProxies", None)  # type: ignore[attr-defined]
        host = getattr(address, "host", None)
        if not proxies or not proxies.trusts(host):
            return address
        client = proxies.clientAddress(host, self.requestHeaders.getRawHeaders(b"x-forwarded-for"))
        if client == host or client is None:
            return address
        kind = IPv6Address if ":" in client else IPv4Address
        return kind("TCP", client, 0)

    def gotLength(self, length: int | None) -> None:
        limit = getattr(self.channel.site, "maxBodySize", self.maxBodySize)  # type: ignore[attr-defined]
        if length is not None and length > limit:
            self._tooLarge = True
            self.content = BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._tooLarge:
            return
        limit = getattr(self.channel.site, "maxBodySize", self.maxBodySize)  # type: ignore[attr-defined]
        self._bodySize += len(data)
        if self._bodySize > limit:
            self._tooLarge = True
            self.content = BytesIO()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self._tooLarge:
            limit = getattr(self.channel.site, "maxBodySize", self.maxBodySize)  # type: ignore[attr-defined]
            error = PayloadTooLarge(f"the body exceeds {limit} bytes", "body_too_large")
            self.setResponseCode(413)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"connection", b"close")
            self.write(dumps({"error": error.asJSON()}))
            self.finish()
            return
        super().process()


class GatewaySite(Site):
    """
    The gateway's HTTP site: requests are logged to its L{AccessLog}, if
    any, not through the global log publisher.
    """

    accessLog: AccessLog | None = None
    trustedProxies: TrustedProxies | None = None

    def log(self, request: Any) -> None:
        if self.accessLog is not None:
            self.accessLog.write(self._logDateTime or "", request)


class GatewayResource(Resource):
    """
    The gateway's root resource: C{POST /api/call/<method>}, the one route
    on every REST call's path, is answered here directly; every other
    request goes to the Klein application.

    Klein binds werkzeug's URL map to every request (reconstructing its URL
    from the host, the port and the scheme) and routes it through a chain
    of Deferreds: about a fifth of the gateway's CPU per REST call when
    measured.  The answers are the same either way; a method name that is
    not a plain identifier, and any other HTTP method, take the Klein route
    and get its answers (404, 405).
    """

    isLeaf = True

    def __init__(self, api: GatewayAPI) -> None:
        super().__init__()
        self.api = api
        self.klein = api.app.resource()

    def render(self, request: IRequest) -> Any:
        path = request.path
        if request.method == b"POST" and path.startswith(b"/api/call/"):
            method = path[10:]
            if _METHOD_NAME_BYTES.match(method):
                return self.api.renderCall(request, method.decode("ascii"))  # type: ignore[arg-type]
        return self.klein.render(request)


_METHOD_NAME_BYTES = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")


def makeSite(resource: Any, options: GatewayOptions, accessLog: AccessLog | None = None,
             trustedProxies: TrustedProxies | None = None) -> Site:
    """
    The HTTP site serving C{resource}: no form parsing, bodies limited,
    requests logged to C{accessLog} (none if L{None}), client addresses
    read from the C{X-Forwarded-For} of C{trustedProxies}.
    """
    site = GatewaySite(resource, requestFactory=LimitedRequest, parsePOSTFormSubmission=False)
    site.accessLog = accessLog
    site.trustedProxies = trustedProxies
    site.maxBodySize = options.maxBodySize  # type: ignore[attr-defined]
    site.displayTracebacks = options.debug
    return site
