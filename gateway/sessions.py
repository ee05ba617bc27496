"""
Sessions: one PB connection per web login, with its avatar and handles.

PB ties an avatar's logout and the state of its caches to the connection, so
every gateway session owns one connection to the broker and logs in there
with the web user's own credentials (the gateway keeps no user database).
The session lends handles for the references and caches its calls return;
handles are unguessable, scoped to the session, and die with it.

Transports (REST, WebSocket, SSE) ask the L{SessionTable}, never each other.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

import pb
from pb.introspect import describeRemote

if TYPE_CHECKING:
    from .mind import SessionMind
from pb.live import applyDelta

from ._writes import BatchingBroker, WriteBatch
from .codec import jsonFromPB
from .errors import (
    BadRequest,
    BrokerUnavailable,
    CallTimedOut,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    errorFromFailure,
)
from .proxies import TrustedProxies
from .ratelimit import LoginLimiter

__all__ = ["CacheMirror", "GatewayOptions", "Session", "SessionTable"]

DEFAULT_STATIC: str | None = str(Path(__file__).resolve().parent.parent / "static")
_LOGIN_METHODS = frozenset({"login", "loginAnonymous"})
BROKER_LOST = "broker connection lost"
LIVE_TYPES = frozenset({"pb.live.LiveDict", "pb.live.LiveList"})
_CALL_REMOTE_NAMES = frozenset({"self", "_name", "_timeout"})
_PLAIN_RESULTS = frozenset({str, int, bool, type(None)})


@attrs.frozen
class GatewayOptions:
    """
    How a gateway reaches its broker and what it allows its users.

    @ivar broker: the broker's client endpoint string.
    @ivar sessionIdleTimeout: seconds without a request before a session ends.
    @ivar callTimeout: seconds a PB call may take.
    @ivar connectTimeout: seconds to connect and log in to the broker.
    @ivar maxBodySize: the largest request body, in bytes.
    @ivar maxHandles: references and caches one session may hold.
    @ivar updateBuffer: cache updates kept per cache for resuming streams.
    @ivar gatewayName: names this gateway in its tokens (for sticky routing).
    @ivar debug: send tracebacks to callers.
    @ivar allowedOrigins: browser origins allowed to open WebSockets besides
        the gateway's own (C{"*"}: any).
    @ivar maxMessageSize: the largest WebSocket frame or message (close 1009).
    @ivar maxInFlight: unanswered requests one socket may have.
    @ivar sendBufferSoft: bytes queued for a slow client before its cache
        updates are replaced by a resync snapshot.
    @ivar sendBufferHard: bytes queued before a slow client is disconnected.
    @ivar pingInterval: seconds between WebSocket pings (0: none).
    @ivar pingTimeout: seconds a ping may go unanswered before the socket is
        dropped.
    @ivar sseKeepAlive: seconds between SSE keep-alive comments.
    @ivar staticDir: the dashboard's folder, served at C{/} (L{None}: none).
    @ivar mindWait: seconds a service's call on a session's mind waits for a
        web client that handles it.
    @ivar mindNotifications: mind methods delivered to every web client, whose
        result the service ignores.
    @ivar shareAnonymous: anonymous sessions share one PB login (one
        identity, one subscription per live object) instead of one each.
    @ivar loginMaxFailures: failed logins (per user name, per client
        address) within C{loginWindow} seconds that lock further attempts
        out for C{loginLockout} seconds (429).
    @ivar maxSessionsPerUser: sessions one user name may hold at once;
        anonymous sessions count per client address (429; 0: no limit).
    @ivar maxConnections: client connections (HTTP, WebSocket) served at
        once; more are answered 503 and closed (0: no limit).
    @ivar trustedProxies: addresses and networks of reverse proxies whose
        C{X-Forwarded-For} names the client (L{gateway.proxies}).
    """

    broker: str = "tcp:host=127.0.0.1:port=8800"
    sessionIdleTimeout: float = 900.0
    callTimeout: float = 30.0
    connectTimeout: float = 10.0
    maxBodySize: int = 1024 * 1024
    maxHandles: int = 1000
    updateBuffer: int = 256
    gatewayName: str = "gw"
    debug: bool = False
    allowedOrigins: tuple[str, ...] = ()
    maxMessageSize: int = 1024 * 1024
    maxInFlight: int = 128
    sendBufferSoft: int = 256 * 1024
    sendBufferHard: int = 4 * 1024 * 1024
    pingInterval: float = 20.0
    pingTimeout: float = 10.0
    sseKeepAlive: float = 15.0
    staticDir: str | None = DEFAULT_STATIC
    mindWait: float = 10.0
    shareAnonymous: bool = True
    loginMaxFailures: int = 5
    loginWindow: float = 60.0
    loginLockout: float = 60.0
    mindNotifications: tuple[str, ...] = ()
    maxSessionsPerUser: int = 100
    maxConnections: int = 10000
    trustedProxies: tuple[str, ...] = ()


class _GatewayClientFactory(pb.PBClientFactory):
    """
    Connects a login to the broker with a L{BatchingBroker}.
    """

    protocol = BatchingBroker
    writes: WriteBatch | None = None
    # One connection per login: "Starting factory" lines would fill the log.
    noisy = False

    def buildProtocol(self, addr: Any) -> pb.Broker:
        broker = super().buildProtocol(addr)
        assert isinstance(broker, BatchingBroker)
        broker.writes = self.writes
        return broker


def _registry() -> pb.TypeRegistry:
    # The gateway mirrors any service's values: every Copyable and Cacheable
    # arrives as an inert generic holder, nothing is ever built from a class.
    return pb.TypeRegistry(inherit=None, allowGeneric=True)


@attrs.define
class _SharedMethods:
    """
    One avatar method description, shared by the C{logins} that use it, by
    its canonical JSON text C{key}.
    """

    key: str
    methods: list[dict[str, Any]]
    logins: int = 0


def _isPlainJSON(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(key) is str and _isPlainJSON(item) for key, item in value.items())
    if kind is list:
        return all(_isPlainJSON(item) for item in value)
    return kind is str or kind is int or kind is bool or kind is float or value is None


def _canonicalJSON(value: Any) -> str | None:
    """
    The canonical JSON text of C{value}, or L{None} if it is not plain JSON
    (a tuple, bytes, a copy: values JSON would conflate or cannot carry).
    """
    try:
        if not _isPlainJSON(value):
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (RecursionError, ValueError):
        return None


class CacheMirror:
    """
    The gateway's mirror of one Cacheable a login holds.

    Live objects (C{pb.live}) are mirrored exactly: their deltas are applied
    to C{state} and C{seq} is theirs.  Other caches keep the state they
    arrived with, and C{seq} counts the C{observe_*} events.  The last
    C{updateBuffer} updates are kept so a stream can resume after C{seq}.
    Each update is encoded once, however many clients it goes to.
    """

    def __init__(self, login: Login, handle: str, cache: pb.GenericRemoteCache) -> None:
        self.login = login
        self.handle = handle
        self.cache: pb.GenericRemoteCache | None = cache
        self.typeName = cache.typeName
        raw = cache.__dict__.get("state")
        self.live = (
            self.typeName in LIVE_TYPES
            and isinstance(raw, dict)
            and isinstance(raw.get("seq"), int)
            and "value" in raw
        )
        if self.live:
            assert isinstance(raw, dict)
            self.value: Any = raw["value"]
            self.seq: int = raw["seq"]
        else:
            self.value = raw
            self.seq = 0
        self.buffer: deque[dict[str, Any]] = deque(maxlen=login.options.updateBuffer)
        self.subscribers: list[Callable[[CacheMirror, dict[str, Any]], Any]] = []
        self._current: dict[str, Any] | None = None
        self._encoded: dict[str, bytes] = {}
        cache.addListener(self._event)

    def _event(self, method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if self.live:
            try:
                self.value = applyDelta(self.value, method, args)
                self.seq = args[0]
            except (ValueError, IndexError, KeyError, TypeError):
                self.login.log.warn(
                    "Cannot apply {method} to live object {handle}", method=method,
                    handle=self.handle,
                )
                self.seq += 1
        else:
            self.seq += 1
        update = {
            "cache": self.handle,
            "seq": self.seq,
            "method": method,
            "args": jsonFromPB(list(args), self.login),
        }
        if kw:
            update["kwargs"] = jsonFromPB(kw, self.login)
        self.buffer.append(update)
        self._current = update
        self._encoded = {}
        for subscriber in list(self.subscribers):
            try:
                subscriber(self, update)
            except Exception:
                self.login.log.failure("cache subscriber failed")

    def encoded(self, update: dict[str, Any], kind: str,
                encode: Callable[[dict[str, Any]], bytes]) -> bytes:
        """
        C{encode(update)}, computed once per update and kind of transport
        while the update is being fanned out.
        """
        if update is not self._current:
            return encode(update)
        data = self._encoded.get(kind)
        if data is None:
            data = self._encoded[kind] = encode(update)
        return data

    def snapshot(self) -> dict[str, Any]:
        """
        The JSON form of the mirrored cache.
        """
        return {
            "$cache": self.handle,
            "type": self.typeName,
            "state": jsonFromPB(self.value, self.login),
            "seq": self.seq,
        }

    def updatesSince(self, seq: int) -> list[dict[str, Any]] | None:
        """
        The buffered updates after C{seq}, or L{None} when some of them are
        no longer buffered (the caller needs a snapshot).
        """
        if seq == self.seq:
            return []
        if seq > self.seq:
            return None
        missed = [update for update in self.buffer if update["seq"] > seq]
        if not missed or missed[0]["seq"] != seq + 1:
            return None
        return missed

    def release(self) -> None:
        """
        Stop mirroring: the broker sees the release (its stoppedObserving runs).
        """
        cache, self.cache = self.cache, None
        if cache is not None:
            cache.removeListener(self._event)
        self.subscribers.clear()


class Login:
    """
    One PB login: the connection, the avatar, the mind, and the handles of
    the references and caches its calls returned.

    A password login belongs to one session.  Anonymous sessions share one
    login (unless C{shareAnonymous} is off): they are one PB identity, so
    they share its subscriptions — a live object many dashboards watch
    costs the broker one observer, and the gateway fans its updates out.
    Each session may use only the handles it was given; a handle is released
    when no session holds it any more.
    """

    log = Logger()

    def __init__(self, table: SessionTable, factory: pb.PBClientFactory,
                 avatar: pb.RemoteReference, mind: SessionMind | None, shared: bool) -> None:
        self.table = table
        self.options = table.options
        self.factory = factory
        self.avatar = avatar
        self.mind = mind
        self.shared = shared
        # The avatar's methods (its pb:describe): shared by every login with
        # the same description, through the table; never mutated.
        self.methods: list[dict[str, Any]] | None = None
        self.sharedMethods: _SharedMethods | None = None
        self.members: set[Session] = set()
        self.refs: dict[str, pb.RemoteReference] = {}
        self._refHandles: dict[Any, str] = {}
        self.caches: dict[str, CacheMirror] = {}
        self._cacheHandles: dict[Any, str] = {}
        self.holders: dict[str, int] = {}
        self.closed = False

    # The Handles protocol, for values that reach every member (cache
    # updates, mind calls): their handles are given to every member.

    def lendRef(self, ref: pb.RemoteReference) -> str:
        return self._lend("r", ref.luid, lambda h: self.refs.__setitem__(h, ref))

    def lendCache(self, cache: pb.GenericRemoteCache) -> str:
        return self._lend(
            "c", cache.luid, lambda h: self.caches.__setitem__(h, CacheMirror(self, h, cache))
        )

    def _toMembers(self, handle: str) -> str:
        for member in self.members:
            member._hold(handle)
        return handle

    def handleForRef(self, ref: pb.RemoteReference) -> str:
        return self._toMembers(self.lendRef(ref))

    def refForHandle(self, handle: str) -> pb.RemoteReference:
        ref = self.refs.get(handle)
        if ref is None:
            raise NotFound(f"no reference {handle!r} in this session", "unknown_handle")
        return ref

    def cacheJSON(self, cache: pb.GenericRemoteCache) -> dict[str, Any]:
        return self.caches[self._toMembers(self.lendCache(cache))].snapshot()

    def cacheForHandle(self, handle: str) -> pb.GenericRemoteCache:
        mirror = self.caches.get(handle)
        if mirror is None or mirror.cache is None:
            raise NotFound(f"no cache {handle!r} in this session", "unknown_handle")
        return mirror.cache

    def _lend(self, kind: str, luid: Any, store: Callable[[str], Any]) -> str:
        table = self._refHandles if kind == "r" else self._cacheHandles
        handle = table.get(luid)
        if handle is None:
            handle = kind + secrets.token_urlsafe(12)
            store(handle)
            table[luid] = handle
        return handle

    def hold(self, handle: str) -> None:
        self.holders[handle] = self.holders.get(handle, 0) + 1

    def unhold(self, handle: str) -> None:
        count = self.holders.get(handle, 0) - 1
        if count > 0:
            self.holders[handle] = count
            return
        self.holders.pop(handle, None)
        ref = self.refs.pop(handle, None)
        if ref is not None:
            self._refHandles.pop(ref.luid, None)
        mirror = self.caches.pop(handle, None)
        if mirror is not None:
            if mirror.cache is not None:
                self._cacheHandles.pop(mirror.cache.luid, None)
            mirror.release()

    def leave(self, session: Session) -> None:
        """
        C{session} ended; the last member leaving closes the login (the
        broker runs the avatar's logout).
        """
        self.members.discard(session)
        if not self.members:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.table._anonymous is self:
            self.table._anonymous = None
        for handle in list(self.caches):
            self.caches.pop(handle).release()
        self.refs.clear()
        self._refHandles.clear()
        self._cacheHandles.clear()
        self.holders.clear()
        self.table._releaseMethods(self)
        self.factory.disconnect()
        if self.mind is not None:
            self.mind.end()

    def lost(self) -> None:
        """
        The broker connection is gone: every member's session ends.
        """
        for member in list(self.members):
            member.end(BROKER_LOST)
        self.close()


class Session:
    """
    One web login's session: its token, its idle timer, and the handles it
    may use in its L{Login}.
    """

    log = Logger()

    def __init__(self, table: SessionTable, sessionID: str, secret: str,
                 username: str | None, login: Login) -> None:
        self.table = table
        self.options = table.options
        self.sessionID = sessionID
        self.secret = secret
        self.username = username
        self.login = login
        self.refs: dict[str, pb.RemoteReference] = {}
        self.caches: dict[str, CacheMirror] = {}
        self.ended: str | None = None
        self.endListeners: list[Callable[[Session, str], Any]] = []
        self._expiry: IDelayedCall | None = None
        self.streams = 0
        self.clientAddress: str | None = None
        # The table's count this session is in (see SessionTable._register).
        self._counted: tuple[dict[str, int], str] | None = None
        login.members.add(self)

    @property
    def token(self) -> str:
        return f"{self.sessionID}.{self.secret}"

    @property
    def avatar(self) -> pb.RemoteReference:
        return self.login.avatar

    @property
    def mind(self) -> SessionMind | None:
        return self.login.mind

    @property
    def methods(self) -> list[dict[str, Any]] | None:
        """
        The avatar's methods, as C{pb:describe} gives them: one object
        shared by every login with the same description (read it, copy it
        to change it).
        """
        return self.login.methods

    def touch(self) -> None:
        """
        The session was used: restart its idle timer.
        """
        if self._expiry is not None and self._expiry.active():
            self._expiry.reset(self.options.sessionIdleTimeout)
        elif self.ended is None:
            self._expiry = self.table.clock.callLater(
                self.options.sessionIdleTimeout, self._idle
            )

    def _idle(self) -> None:
        self._expiry = None
        if self.streams:
            # An open WebSocket or event stream is activity: a dashboard that
            # only watches keeps its session.
            self.touch()
        else:
            self.end("expired")

    # -- the Handles protocol of the codec -------------------------------

    def _checkRoom(self) -> None:
        if len(self.refs) + len(self.caches) >= self.options.maxHandles:
            raise TooManyRequests(
                f"a session holds at most {self.options.maxHandles} handles: release some",
                "too_many_handles",
            )

    def _hold(self, handle: str) -> None:
        if handle in self.refs or handle in self.caches:
            return
        login = self.login
        if handle in login.refs:
            self.refs[handle] = login.refs[handle]
        elif handle in login.caches:
            self.caches[handle] = login.caches[handle]
        else:
            return
        login.hold(handle)

    def _take(self, handle: str | None, held: dict[str, Any], lend: Callable[[], str]) -> str:
        if handle is None or handle not in held:
            self._checkRoom()
            handle = lend()
            self._hold(handle)
        return handle

    def handleForRef(self, ref: pb.RemoteReference) -> str:
        login = self.login
        return self._take(login._refHandles.get(ref.luid), self.refs, lambda: login.lendRef(ref))

    def refForHandle(self, handle: str) -> pb.RemoteReference:
        ref = self.refs.get(handle)
        if ref is None:
            raise NotFound(f"no reference {handle!r} in this session", "unknown_handle")
        return ref

    def cacheJSON(self, cache: pb.GenericRemoteCache) -> dict[str, Any]:
        login = self.login
        handle = self._take(
            login._cacheHandles.get(cache.luid), self.caches, lambda: login.lendCache(cache)
        )
        return self.caches[handle].snapshot()

    def cacheForHandle(self, handle: str) -> pb.GenericRemoteCache:
        cache = self.mirror(handle).cache
        if cache is None:
            raise NotFound(f"no cache {handle!r} in this session", "unknown_handle")
        return cache

    def mirror(self, handle: str) -> CacheMirror:
        mirror = self.caches.get(handle)
        if mirror is None:
            raise NotFound(f"no cache {handle!r} in this session", "unknown_handle")
        return mirror

    # -- calls ------------------------------------------------------------

    def _alive(self) -> None:
        if self.ended is not None:
            raise BrokerUnavailable(f"this session has ended ({self.ended}); log in again")

    async def callRef(
        self, handle: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """
        Call C{remote_<method>} on a referenced object; the JSON result.
        """
        return await self.callOn(self.refForHandle(handle), method, args, kwargs)

    def callOn(
        self, target: pb.RemoteReference, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Deferred[Any]:
        """
        Call a method of C{target} for this session.  A Deferred rather than
        a coroutine: the transports' common path chains on it directly.

        @return: fires with the JSON result, or fails with a L{GatewayError}
            (or whatever the codec raised for the result).
        @raise GatewayError: the session has ended, or C{kwargs} are refused.
        """
        self._alive()
        return self.table.sendCall(target, method, args, kwargs, self._jsonResult)

    def _jsonResult(self, result: Any) -> Any:
        if type(result) in _PLAIN_RESULTS:
            return result
        return jsonFromPB(result, self)

    def releaseRef(self, handle: str) -> None:
        """
        Drop a reference: when no session holds it, the broker sees the decref.
        """
        if self.refs.pop(handle, None) is None:
            raise NotFound(f"no reference {handle!r} in this session", "unknown_handle")
        self.login.unhold(handle)

    def releaseCache(self, handle: str) -> None:
        """
        Drop a cache: when no session holds it, the broker's stoppedObserving
        runs.
        """
        if self.caches.pop(handle, None) is None:
            raise NotFound(f"no cache {handle!r} in this session", "unknown_handle")
        self.login.unhold(handle)

    def end(self, reason: str) -> None:
        """
        End the session: release its handles; the last session of a login
        closes the PB connection (the broker runs the avatar's logout).
        """
        if self.ended is not None:
            return
        self.ended = reason
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self.table._forget(self, reason)
        for handle in [*self.refs, *self.caches]:
            self.login.unhold(handle)
        self.refs.clear()
        self.caches.clear()
        self.login.leave(self)
        for listener in list(self.endListeners):
            try:
                listener(self, reason)
            except Exception:
                self.log.failure("session end listener failed")


class SessionTable:
    """
    The gateway's sessions, by token, and the shared connection for calls
    on the broker's root object.
    """

    log = Logger()

    def __init__(self, reactor: Any, options: GatewayOptions) -> None:
        self.reactor = reactor
        self.clock = reactor
        self.options = options
        self.sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._rootFactory: pb.PBClientFactory | None = None
        self._anonymous: Login | None = None
        self._rootIsLogin: bool | None = None
        self._anonymousWaiters: list[Deferred[Login]] = []
        self.proxies = TrustedProxies(options.trustedProxies)
        # What the sockets write while a broker's data is handled.
        self.writes = WriteBatch()
        self.limiter = LoginLimiter(
            reactor, options.loginMaxFailures, options.loginWindow, options.loginLockout
        )
        self.callsByOutcome: dict[str, int] = {}
        # Sessions held per user name and, for anonymous sessions, per
        # client address: kept as sessions come and go, so that a login
        # need not count them (10,000 logins would cost 50 million steps).
        self.sessionsByUser: dict[str, int] = {}
        self.sessionsByAddress: dict[str, int] = {}
        # The avatars' method descriptions, one per distinct description
        # (every login of one avatar class gets the same ~17 KB), with how
        # many open logins use each: the last one closing drops it.
        self._descriptions: dict[str, _SharedMethods] = {}

    # -- the broker link --------------------------------------------------

    def newFactory(self) -> pb.PBClientFactory:
        factory = _GatewayClientFactory(
            security=_registry(),
            options=pb.BrokerOptions(
                callTimeout=self.options.callTimeout,
                keepAliveInterval=self.options.pingInterval or None,
                keepAliveTimeout=self.options.pingTimeout or 10.0,
            ),
            clock=self.clock,
        )
        factory.writes = self.writes
        return factory

    async def connect(self, factory: pb.PBClientFactory) -> pb.Broker:
        """
        Connect C{factory} to the broker within the connect timeout.
        """
        try:
            endpoint = clientFromString(self.reactor, self.options.broker)
        except (ValueError, TypeError, KeyError) as e:
            raise BrokerUnavailable(f"bad broker endpoint {self.options.broker!r}: {e}") from None
        connecting: Deferred[Any] = endpoint.connect(factory)
        connecting.addTimeout(self.options.connectTimeout, self.clock)
        try:
            broker: pb.Broker = await connecting
        except Exception:
            raise errorFromFailure(Failure(), self.options.debug) from None
        return broker

    async def callRemote(
        self, target: pb.RemoteReference, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """
        Call a remote method with the call timeout, counting the outcome.
        """
        return await self.sendCall(target, method, args, kwargs)

    def sendCall(
        self, target: pb.RemoteReference, method: str, args: list[Any], kwargs: dict[str, Any],
        convert: Callable[[Any], Any] | None = None,
    ) -> Deferred[Any]:
        """
        Send a remote call with the call timeout, counting its outcome.

        @param convert: applied to the result once counted (in the same
            callback: the common call's path is measured).
        @return: fires with the PB result (converted), or fails with the
            L{GatewayError} for the failure.
        @raise BadRequest: C{kwargs} use the names of C{callRemote}'s own
            parameters.
        """
        if kwargs:
            # callRemote's own parameters would collide with these keywords
            # (a TypeError, i.e. a 500): refuse them as a bad argument shape.
            reserved = _CALL_REMOTE_NAMES.intersection(kwargs)
            if reserved:
                raise BadRequest(
                    f"keyword arguments may not be named {sorted(reserved)}", "bad_shape"
                )
        try:
            sent = target.callRemote(method, *args, _timeout=self.options.callTimeout, **kwargs)
        except Exception:
            sent = fail()
        return sent.addCallbacks(self._called, self._callFailed, callbackArgs=(convert,))

    def _called(self, result: Any, convert: Callable[[Any], Any] | None) -> Any:
        self._count("ok")
        return result if convert is None else convert(result)

    def _callFailed(self, failure: Failure) -> Failure:
        error = errorFromFailure(failure, self.options.debug)
        self._count(error.type)
        return Failure(error)

    def _count(self, outcome: str) -> None:
        self.callsByOutcome[outcome] = self.callsByOutcome.get(outcome, 0) + 1

    async def rootObject(self) -> pb.RemoteReference:
        """
        The broker's root object, over a connection shared by all root calls.
        """
        factory = self._rootFactory
        if factory is None or factory._broker is None or factory._broker.disconnected:
            factory = self.newFactory()
            await self.connect(factory)
            self._rootFactory = factory
        root = factory.getRootObject()
        # PB negotiation (and a TLS handshake) may still fail or stall after
        # the connection is made: bounded like the connection itself.
        root.addTimeout(self.options.connectTimeout, self.clock)
        try:
            return await root
        except Exception:
            factory.disconnect()
            if self._rootFactory is factory:
                self._rootFactory = None
            raise errorFromFailure(Failure(), self.options.debug) from None

    async def callRoot(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """
        Call C{remote_<method>} on the broker's root object; the JSON result.
        A root that is the broker's login (a portal) takes no calls here: its
        login machinery is only reached through a session's login.
        """
        root = await self.rootObject()
        if method in _LOGIN_METHODS or await self._isLoginRoot(root):
            raise Forbidden(
                "the broker's root object is its login: log in first", "login_root"
            )
        return jsonFromPB(await self.callRemote(root, method, args, kwargs), None)

    async def _isLoginRoot(self, root: pb.RemoteReference) -> bool:
        if self._rootIsLogin is None:
            try:
                description = await describeRemote(root, timeout=self.options.callTimeout)
            except Exception:
                return False
            self._rootIsLogin = description is not None and description.get("kind") == "login"
        return self._rootIsLogin

    async def ready(self) -> bool:
        """
        Whether the broker answers at all.
        """
        try:
            root = await self.rootObject()
            broker = root.broker
            # A round trip: a call on an object no broker publishes, which
            # every PB broker answers with "Invalid Object ID" unlogged.
            probe = broker.remoteForName(b"pbgw:ready").callRemote(
                "ping", _timeout=min(self.options.connectTimeout, 5.0)
            )
            await probe
        except pb.CallTimeout:
            return False
        except pb.RemoteError:
            return True
        except Exception:
            return False
        return True

    # -- sessions ---------------------------------------------------------

    async def login(
        self, username: str | None, password: str | None, anonymous: bool = False,
        withMind: bool = True,
        clientAddress: str | None = None,
    ) -> Session:
        """
        Log in to the broker as the web user; a new session.  Unless
        C{withMind} is false, the session's L{SessionMind} is the login's
        mind, so the service can call the web user back.
        """
        if anonymous:
            credentials: Any = Anonymous()
        elif isinstance(username, str) and isinstance(password, str):
            credentials = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
        else:
            raise BadRequest(
                'log in with {"username": ..., "password": ...} or {"anonymous": true}',
                "bad_login",
            )
        keys = [f"addr:{clientAddress}"] if clientAddress else []
        if not anonymous:
            keys.append(f"user:{username}")
        self.limiter.check(*keys)
        shared = anonymous and self.options.shareAnonymous
        if shared:
            login = await self._sharedAnonymousLogin()
        else:
            login = await self._login(credentials, withMind, keys, shared=False)
        if not anonymous:
            self.limiter.succeeded(f"user:{username}")
        # Checked once the broker took the credentials, so that only the
        # user learns how many sessions they hold, and no concurrent login
        # can slip past between the check and the session's creation.
        self._checkSessionRoom(None if anonymous else username, clientAddress, login)
        session = Session(
            self,
            f"{self.options.gatewayName}-{secrets.token_urlsafe(9)}",
            secrets.token_urlsafe(24),
            None if anonymous else username,
            login,
        )
        session.clientAddress = clientAddress
        self._register(session)
        session.touch()
        self.log.info("Session {id} opened for {user}", id=session.sessionID,
                      user=session.username or "anonymous")
        return session

    def _checkSessionRoom(self, username: str | None, clientAddress: str | None,
                          login: Login) -> None:
        """
        @raise TooManyRequests: the user (or, for anonymous sessions, the
            client address) holds C{maxSessionsPerUser} sessions already;
            C{login}, if no session uses it, is closed.
        """
        limit = self.options.maxSessionsPerUser
        if not limit:
            return
        if username is not None:
            held = self.sessionsByUser.get(username, 0)
            who = f"user {username!r}"
        elif clientAddress is not None:
            held = self.sessionsByAddress.get(clientAddress, 0)
            who = f"address {clientAddress}"
        else:
            return
        if held >= limit:
            if not login.members:
                login.close()
            raise TooManyRequests(
                f"{who} holds {limit} sessions already: log out of one first",
                "too_many_sessions",
            )

    def _register(self, session: Session) -> None:
        """
        Add C{session} to the table and to its user's (or, anonymous, its
        client address's) count; L{_forget} takes it out of both, once.
        """
        self.sessions[session.sessionID] = session
        if session.username is not None:
            session._counted = (self.sessionsByUser, session.username)
        elif session.clientAddress is not None:
            session._counted = (self.sessionsByAddress, session.clientAddress)
        else:
            return
        counts, key = session._counted
        counts[key] = counts.get(key, 0) + 1

    async def _sharedAnonymousLogin(self) -> Login:
        """
        The anonymous login all anonymous sessions share (made on first use;
        concurrent first logins wait for the same one).
        """
        if self._anonymous is not None and not self._anonymous.closed:
            return self._anonymous
        waiter: Deferred[Login] = Deferred()
        self._anonymousWaiters.append(waiter)
        if len(self._anonymousWaiters) == 1:
            Deferred.fromCoroutine(
                self._login(Anonymous(), True, [], shared=True)
            ).addBoth(self._anonymousDone)
        return await waiter

    def _anonymousDone(self, result: Any) -> None:
        waiters, self._anonymousWaiters = self._anonymousWaiters, []
        if isinstance(result, Login):
            self._anonymous = result
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _login(self, credentials: Any, withMind: bool, keys: list[str],
                     shared: bool) -> Login:
        from .mind import SessionMind

        mind = SessionMind(None) if withMind else None
        factory = self.newFactory()
        await self.connect(factory)
        try:
            loggingIn = factory.login(credentials, mind)
            loggingIn.addTimeout(self.options.connectTimeout, self.clock)
            avatar = await loggingIn
        except Exception:
            factory.disconnect()
            failure = Failure()
            if failure.check(pb.RemoteError) and failure.check(pb.NoSuchMethod):
                raise Unauthorized("this broker has no login", "no_login") from None
            error = errorFromFailure(failure, self.options.debug)
            if isinstance(error, Unauthorized):
                self.limiter.failed(*keys)
            if isinstance(error, BrokerUnavailable | CallTimedOut | Unauthorized | TooManyRequests):
                raise error from None
            raise Unauthorized(f"login refused: {error.message}", "login_failed") from None
        login = Login(self, factory, avatar, mind, shared)
        if mind is not None:
            mind.session = login
        assert factory._broker is not None
        factory._broker.notifyOnDisconnect(login.lost)
        try:
            methods = await self._describeMethods(avatar)
        except Exception:
            methods = None
        if login.closed:
            # Lost while it was being described: a shared description would
            # never be released.
            login.methods = methods
        else:
            self._holdMethods(login, methods)
        return login

    async def _describeMethods(self, avatar: pb.RemoteReference) -> list[dict[str, Any]] | None:
        description = await describeRemote(avatar, timeout=self.options.callTimeout)
        if description is None:
            return None
        methods = description.get("methods")
        return methods if isinstance(methods, list) else None

    def _holdMethods(self, login: Login, methods: list[dict[str, Any]] | None) -> None:
        """
        Give C{login} the shared copy of C{methods} (made shared if it is the
        first of its kind).  A description that is not plain JSON, which
        two equal JSON texts might not tell apart, stays the login's own.
        """
        key = None if methods is None else _canonicalJSON(methods)
        if methods is None or key is None:
            login.methods = methods
            return
        shared = self._descriptions.get(key)
        if shared is None:
            shared = self._descriptions[key] = _SharedMethods(key, methods)
        shared.logins += 1
        login.methods = shared.methods
        # The record, not this login's own copy of the key (as large as
        # the description).
        login.sharedMethods = shared

    def _releaseMethods(self, login: Login) -> None:
        """
        C{login} closed: the last login using its description drops it.
        """
        shared, login.sharedMethods = login.sharedMethods, None
        if shared is None:
            return
        shared.logins -= 1
        if shared.logins <= 0 and self._descriptions.get(shared.key) is shared:
            del self._descriptions[shared.key]

    def sharedMethodsCount(self) -> int:
        """
        Distinct method descriptions the table holds for its open logins.
        """
        return len(self._descriptions)

    def get(self, token: str | None) -> Session:
        """
        The live session for a token.

        @raise Unauthorized: no token, an unknown one, or an ended session.
        """
        if not token:
            raise Unauthorized("no token: log in first", "no_token")
        sessionID, _, secret = token.partition(".")
        session = self.sessions.get(sessionID)
        if session is None or not hmac.compare_digest(session.secret, secret):
            ended = self._ended.get(sessionID)
            if ended is not None and session is None:
                message = f"this session has ended ({ended}); log in again"
                if ended == BROKER_LOST:
                    raise BrokerUnavailable(message, "session_lost")
                raise Unauthorized(message, "session_ended")
            raise Unauthorized("unknown token", "bad_token")
        session.touch()
        return session

    def _forget(self, session: Session, reason: str) -> None:
        if self.sessions.get(session.sessionID) is session:
            del self.sessions[session.sessionID]
            counted, session._counted = session._counted, None
            if counted is not None:
                counts, key = counted
                held = counts.get(key, 0) - 1
                if held > 0:
                    counts[key] = held
                else:
                    counts.pop(key, None)
        self._ended[session.sessionID] = reason
        while len(self._ended) > 10000:
            self._ended.popitem(last=False)
        self.log.info("Session {id} ended: {reason}", id=session.sessionID, reason=reason)

    def handleCount(self) -> int:
        return sum(len(s.refs) + len(s.caches) for s in self.sessions.values())

    def loginCount(self) -> int:
        """
        PB logins (connections) the gateway holds for its sessions.
        """
        return len({id(s.login) for s in self.sessions.values()})

    def waitingCalls(self) -> int:
        """
        PB calls sent to the broker and not answered yet, on every connection.
        """
        factories = {id(s.login.factory): s.login.factory for s in self.sessions.values()}
        if self._rootFactory is not None:
            factories[id(self._rootFactory)] = self._rootFactory
        return sum(
            len(factory._broker.waitingForAnswers)
            for factory in factories.values() if factory._broker is not None
        )

    def closeAll(self, reason: str = "gateway stopping") -> None:
        for session in list(self.sessions.values()):
            session.end(reason)
        if self._rootFactory is not None:
            self._rootFactory.disconnect()
            self._rootFactory = None
