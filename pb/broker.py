"""
The broker: one PB connection, its messages, answers and reference tables.

A L{Broker} is a Twisted protocol speaking PB version 6, wire-compatible with
Twisted's C{twisted.spread.pb.Broker} in both directions.  It keeps:

  - the objects it lent the peer (L{Referenceable}s, by local ID, with
    reference counts the peer's C{decref} messages lower);
  - the caches it lent (L{Cacheable}s, released by C{decache});
  - the copies of the peer's caches it holds;
  - the calls waiting for an answer, each with a timeout.

Beyond Twisted: every call can time out and then leaves nothing behind; a
value that cannot be sent, or is too large, fails that one call at the side
that produced it; a type this side does not accept fails the one call it
arrived in; a peer that breaks the protocol is disconnected without
disturbing other connections; C{async def} methods work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import banana
from ._gc import withoutCycleCollection
from .errors import (
    CallTimeout,
    DeadReferenceError,
    Error,
    PBConnectionLost,
    ProtocolError,
    RemoteError,
    TooLarge,
    UnsafeValue,
    remoteErrorFor,
)
from .flavors import (
    Copyable,
    GenericRemoteCache,
    RemoteCacheObserver,
)
from .introspect import DESCRIBE, describe
from .jelly import (
    BASE_ATOMS,
    DEFAULT_REGISTRY,
    NOT_PLAIN,
    InsecureJelly,
    Jellier,
    JellyError,
    TypeRegistry,
    Unjellier,
    jellyPlain,
    qual,
    unjellyPlain,
    wireText,
)

__all__ = [
    "MAX_BROKER_REFS",
    "Broker",
    "BrokerOptions",
    "CopyableFailure",
    "RemoteMethod",
    "RemoteReference",
]

MAX_BROKER_REFS = 1024
"""Twisted's limit on objects lent to one peer; ours is L{BrokerOptions.maxReferences}."""

PROTOCOL_VERSION = 6

_noTimeout: Any = object()
# The types a serialized value is made of (banana.Raw: pre-encoded strings).
_SEXP_TYPES = frozenset({int, float, bytes, list, banana.Raw})
_PROBE = b"pbgw:keepalive"
_TWISTED_FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"

# Our error classes, as Twisted names their equivalents: added to the
# failure's parents so that a Twisted peer's failure.check() recognises them.
_TWISTED_PARENTS = {
    "pb.errors.Error": "twisted.spread.pb.Error",
    "pb.errors.NoSuchMethod": "twisted.spread.flavors.NoSuchMethod",
    "pb.errors.DeadReferenceError": "twisted.spread.pb.DeadReferenceError",
    "pb.errors.PBConnectionLost": "twisted.spread.pb.PBConnectionLost",
    "pb.errors.ProtocolError": "twisted.spread.pb.ProtocolError",
    "pb.errors.RemoteError": "twisted.spread.pb.RemoteError",
}


@attrs.frozen
class BrokerOptions:
    """
    The limits and defaults of a broker; factories pass one to each broker.

    @ivar callTimeout: seconds a call waits for its answer when the caller
        gives no timeout; L{None} waits forever.
    @ivar sizeLimit: the largest string or list banana sends or accepts.
    @ivar prefixLimit: banana's integer prefix limit (ints up to 2**(7*N)).
    @ivar maxDepth: the deepest nesting sent or accepted.
    @ivar maxReferences: objects lent to one peer at a time (and caches).
    @ivar unsafeTracebacks: send tracebacks of failures to the peer.
    @ivar keepAliveInterval: after this many idle seconds, probe the peer;
        L{None} never probes.  The probe is a call on an object no peer
        publishes, which every PB peer (ours or Twisted's) answers with an
        "Invalid Object ID" error.
    @ivar loginMaxFailures: failed password logins for one user name within
        C{loginWindow} seconds after which a server refuses that user's
        password logins for C{loginLockout} seconds with L{LoginThrottled}
        (0: no limit).  Not per address: a gateway's logins all come from
        its address.
    @ivar keepAliveTimeout: seconds a probe may go unanswered before the
        connection is dropped as dead.
    """

    callTimeout: float | None = 300.0
    sizeLimit: int = banana.SIZE_LIMIT
    prefixLimit: int = banana.PREFIX_LIMIT
    maxDepth: int = banana.MAX_DEPTH
    maxReferences: int = MAX_BROKER_REFS
    unsafeTracebacks: bool = False
    keepAliveInterval: float | None = None
    keepAliveTimeout: float = 10.0
    loginMaxFailures: int = 5
    loginWindow: float = 60.0
    loginLockout: float = 60.0


class Local:
    """
    An object lent to the peer, with the number of references it holds.
    """

    __slots__ = ("object", "perspective", "refcount")

    def __init__(self, object: Any, perspective: Any = None) -> None:
        self.object = object
        self.perspective = perspective
        self.refcount = 1

    def __repr__(self) -> str:
        return f"<pb.Local {self.object!r} ref:{self.refcount}>"


class RemoteMethod:
    """
    A callable for one remote method of a L{RemoteReference}.
    """

    def __init__(self, obj: RemoteReference, name: str) -> None:
        self.obj = obj
        self.name = name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteMethod):
            return (self.obj, self.name) == (other.obj, other.name)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.obj, self.name))

    def __call__(self, *args: Any, **kw: Any) -> Deferred[Any]:
        return self.obj.callRemote(self.name, *args, **kw)


class RemoteReference:
    """
    A reference to an object on the other side of a connection.

    C{callRemote("name", ...)} runs the object's C{remote_name} (or
    C{perspective_name} for an avatar, C{view_name} for a view).  When the
    last Python reference to me is gone, the peer is told (C{decref}).
    """

    def __init__(self, perspective: Any, broker: Broker, luid: Any, doRefCount: bool) -> None:
        self.luid = luid
        self.broker = broker
        self.doRefCount = doRefCount
        self.perspective = perspective
        self.disconnectCallbacks: list[Callable[[RemoteReference], Any]] | None = []

    def __repr__(self) -> str:
        return f"<RemoteReference {self.luid!r} at 0x{id(self):x}>"

    def notifyOnDisconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """
        Call C{callback(self)} when the connection is lost (at once if it
        already is).
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        if self.broker.disconnected:
            callback(self)
            return
        if self.disconnectCallbacks is None:
            self.disconnectCallbacks = []
        self.disconnectCallbacks.append(callback)
        if len(self.disconnectCallbacks) == 1:
            self.broker.notifyOnDisconnect(self._disconnected)

    def dontNotifyOnDisconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """
        Undo L{notifyOnDisconnect}.
        """
        if self.disconnectCallbacks and callback in self.disconnectCallbacks:
            self.disconnectCallbacks.remove(callback)
            if not self.disconnectCallbacks:
                self.broker.dontNotifyOnDisconnect(self._disconnected)

    def _disconnected(self) -> None:
        callbacks, self.disconnectCallbacks = self.disconnectCallbacks or [], None
        for callback in callbacks:
            callback(self)

    def jellyFor(self, jellier: Jellier) -> Any:
        if jellier.invoker is not self.broker:
            raise JellyError("a reference can only be sent back through the broker it came from")
        return [b"local", self.luid]

    def callRemote(self, _name: str | bytes, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Call a remote method; the Deferred fires with its result.

        The keyword C{_timeout} (seconds, or L{None} for none) bounds this
        call; without it the broker's default applies.  On expiry the
        Deferred fails with L{CallTimeout}.  On a lost connection it fails
        at once with L{DeadReferenceError}.
        """
        timeout = kw.pop("_timeout", _noTimeout)
        if isinstance(_name, bytes):
            _name = _name.decode("utf-8")
        return self.broker.sendMessage(b"", self.perspective, self.luid, _name, args, kw, timeout)

    def remoteMethod(self, key: str) -> RemoteMethod:
        """
        A callable that calls the remote method C{key}.
        """
        return RemoteMethod(self, key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteReference):
            return self.broker is other.broker and self.luid == other.luid
        return NotImplemented

    def __hash__(self) -> int:
        return hash((id(self.broker), self.luid))

    def __del__(self) -> None:
        if self.doRefCount:
            broker = self.broker
            if broker is not None and not broker.disconnected:
                broker.sendDecRef(self.luid)


class CopyableFailure(Copyable):
    """
    A failure as it crosses the wire: the exception's type name, message,
    base classes and (if allowed) traceback.  It travels under Twisted's type
    tag, so a Twisted peer rebuilds it as its own C{CopiedFailure}; our
    brokers rebuild it as a L{RemoteError}.
    """

    unsafeTracebacks = False

    def __init__(self, failure: Failure | BaseException | None = None) -> None:
        if failure is None:
            failure = Failure()
        elif isinstance(failure, BaseException):
            failure = Failure(failure)
        excType = failure.type
        if isinstance(excType, type):
            self.type = qual(excType)
            parents = [qual(cls) for cls in excType.__mro__]
        else:
            self.type = str(excType)
            parents = [self.type]
        withTwisted = []
        for name in parents:
            withTwisted.append(name)
            if name in _TWISTED_PARENTS:
                withTwisted.append(_TWISTED_PARENTS[name])
        self.parents = withTwisted
        self.value = failure.getErrorMessage()
        self.traceback = failure.getTraceback()

    def getTypeToCopy(self) -> bytes:
        return _TWISTED_FAILURE_TAG

    def getStateToCopy(self) -> dict[str, Any]:
        return {
            "count": 0,
            "type": self.type.encode("utf-8"),
            "value": self.value,
            "captureVars": False,
            "tb": None,
            "pickled": 1,
            "_frames": [],
            "unsafeTracebacks": int(self.unsafeTracebacks),
            "parents": self.parents,
            "frames": [],
            "stack": [],
            "traceback": self.traceback if self.unsafeTracebacks else "Traceback unavailable\n",
        }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _unjellyFailure(unjellier: Unjellier, exp: list[Any]) -> RemoteError:
    if len(exp) != 2:
        raise InsecureJelly("malformed failure")
    state = unjellier.unjelly(exp[1])
    if not isinstance(state, dict):
        raise InsecureJelly("malformed failure state")
    state = {_text(k): v for k, v in state.items()}
    parents = state.get("parents") or []
    if not isinstance(parents, (list, tuple)):
        parents = []
    return remoteErrorFor(
        _text(state.get("type", "builtins.Exception")),
        _text(state.get("value", "")),
        _text(state.get("traceback", "")),
        tuple(_text(p) for p in parents),
    )


def _unjellyRemote(unjellier: Unjellier, exp: list[Any]) -> RemoteReference:
    if len(exp) != 2:
        raise InsecureJelly("malformed remote reference")
    broker: Broker = unjellier.invoker
    ref = RemoteReference(broker.unserializingPerspective, broker, exp[1], True)
    if broker._unjellied is not None:
        broker._unjellied.append(exp[1])
    if broker._holding is not None:
        broker._holding.append(ref)
    return ref


def _unjellyLocal(unjellier: Unjellier, exp: list[Any]) -> Any:
    if len(exp) != 2:
        raise InsecureJelly("malformed local reference")
    obj = unjellier.invoker.localObjectForID(exp[1])
    if obj is None:
        raise InsecureJelly(f"no local object {exp[1]!r}")
    return obj


def _unjellyCached(unjellier: Unjellier, exp: list[Any]) -> Any:
    if len(exp) != 2:
        raise InsecureJelly("malformed cache reference")
    broker: Broker = unjellier.invoker
    cache = broker.locallyCachedObjects.get(exp[1])
    if cache is None:
        broker.refuseCache(exp[1])
        raise InsecureJelly(f"no cache {exp[1]!r} here")
    return cache._borgify()


def _unjellyLCache(unjellier: Unjellier, exp: list[Any]) -> Any:
    if len(exp) != 2:
        raise InsecureJelly("malformed cache reference")
    lobj = unjellier.invoker.remotelyCachedObjects.get(exp[1])
    if lobj is None:
        raise InsecureJelly(f"no cacheable {exp[1]!r} here")
    return lobj.object


_BROKER_ATOMS: dict[bytes, Callable[[Unjellier, list[Any]], Any]] = {
    **BASE_ATOMS,
    b"remote": _unjellyRemote,
    b"local": _unjellyLocal,
    b"cached": _unjellyCached,
    b"lcache": _unjellyLCache,
    _TWISTED_FAILURE_TAG: _unjellyFailure,
}



def writeNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: straight to the socket when it is a
    plain TCP connection with nothing queued (so the order of the bytes is
    kept), else (TLS, a busy or closing connection, the rest of a partial
    send) through the transport, which sends on the next reactor iteration.
    """
    if (
        isinstance(transport, tcp.Connection)
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and transport.connected
        and not transport.disconnecting
    ):
        sent = transport.writeSomeData(data)
        if type(sent) is int:
            if sent == len(data):
                return
            data = data[sent:]
        # An error: the transport meets it again when it writes.
    transport.write(data)

class Broker(Protocol):
    """
    One PB connection, client or server side.

    @param isClient: whether this side connected (the server offers the
        dialects, the client picks).
    @param security: the L{TypeRegistry} that says which Copyable and
        Cacheable types this broker accepts (default: L{DEFAULT_REGISTRY}).
    @param options: limits and defaults, a L{BrokerOptions}.
    @param clock: the reactor used for call timeouts.
    """

    version = PROTOCOL_VERSION
    factory: Any = None
    _log = Logger()

    def __init__(
        self,
        isClient: bool = True,
        security: TypeRegistry | None = None,
        options: BrokerOptions | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.isClient = isClient
        self.registry = security if security is not None else DEFAULT_REGISTRY
        self.options = options if options is not None else BrokerOptions()
        self._clock = clock
        self.disconnected = False
        self.currentDialect: bytes | None = None
        self._vocabulary: dict[bytes, int] | None = None
        self._encoder = self._newEncoder()
        self._corks = 0
        self._corked: list[bytes] = []
        self._text = wireText(self.options.sizeLimit)
        self._decoder = banana.Decoder(
            vocabulary={v: k for k, v in banana.PB_VOCABULARY.items()},
            sizeLimit=self.options.sizeLimit,
            prefixLimit=self.options.prefixLimit,
            maxDepth=self.options.maxDepth,
        )
        self.disconnects: list[Callable[[], Any]] = []
        self.connects: list[Callable[[], Any]] | None = []
        self.localObjects: dict[Any, Local] = {}
        self.luids: dict[Any, int] = {}
        self.remotelyCachedObjects: dict[int, Local] = {}
        self.remotelyCachedLUIDs: dict[Any, int] = {}
        self.locallyCachedObjects: dict[Any, Any] = {}
        self.waitingForAnswers: dict[int, Deferred[Any]] = {}
        # The calls that time out: request ID -> (deadline, method name,
        # timeout).  One timer, due at _timerAt, expires them all (see
        # _startTimeout).
        self._timeouts: dict[int, tuple[float, str, float]] = {}
        self._timer: IDelayedCall | None = None
        self._timerAt = 0.0
        self._localCleanup: dict[Any, Callable[[], Any]] = {}
        self.currentRequestID = 0
        self.currentLocalID = 0
        self.callsReceived = 0
        self.serializingPerspective: Any = None
        self.unserializingPerspective: Any = None
        self._lent: list[tuple[str, Any]] | None = None
        self._unsent: dict[int, tuple[Any, list[tuple[str, Any]]]] = {}
        self._keepAlive: Any = None
        self._lastReceived = 0.0
        self._lastLent: list[tuple[str, Any]] = []
        # References that arrived in the call being dispatched: kept alive
        # until its answer is sent, so their decrefs cannot overtake it.
        self._holding: list[RemoteReference] | None = None
        # The references made by the unjelly in progress (see _unserializeFull).
        self._unjellied: list[Any] | None = None

    def __repr__(self) -> str:
        side = "client" if self.isClient else "server"
        return f"<pb.Broker {side} 0x{id(self):x}>"

    # -- the reactor ----------------------------------------------------------

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    # -- writing --------------------------------------------------------------

    def cork(self) -> None:
        """
        Hold this broker's messages until the matching L{uncork}: they are
        then written together, straight to the socket if nothing is queued
        on it.  Twisted's TCP transport never sends from C{write}: it
        registers for writability and sends on the next reactor iteration,
        two C{epoll_ctl}s and an iteration more on every hop.  A broker
        corks itself while it handles received data; the gateway corks a
        session's broker while it handles a WebSocket's data.
        """
        self._corks += 1

    def uncork(self) -> None:
        """
        End a L{cork}; the outermost writes what was held.
        """
        self._corks -= 1
        if self._corks or not self._corked:
            return
        data = b"".join(self._corked)
        self._corked.clear()
        if self.transport is not None and not self.disconnected:
            writeNow(self.transport, data)

    def _write(self, data: bytes) -> None:
        if self._corks:
            self._corked.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    # -- banana framing -------------------------------------------------------

    def connectionMade(self) -> None:
        if not self.isClient:
            self._write(banana.encode([b"pb", b"none"]))

    def dataReceived(self, data: bytes) -> None:
        if self.disconnected:
            return
        self._lastReceived = self.clock.seconds() if self._keepAlive is not None else 0.0
        try:
            expressions = self._decoder.feed(data)
        except banana.BananaError as e:
            self._protocolViolation(f"undecodable data: {e}")
            return
        self.cork()
        try:
            for expression in expressions:
                if self.disconnected:
                    return
                try:
                    self._expressionReceived(expression)
                except ProtocolError as e:
                    self._protocolViolation(str(e))
                    return
        finally:
            self.uncork()

    def _protocolViolation(self, reason: str) -> None:
        self._log.warn("Closing PB connection {broker}: {reason}", broker=self, reason=reason)
        self.disconnected = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _expressionReceived(self, expression: Any) -> None:
        if self.currentDialect is None:
            self._negotiate(expression)
            return
        if type(expression) is not list or not expression:
            raise ProtocolError("non-list expression received")
        command = expression[0]
        if not isinstance(command, bytes):
            # A list here is unhashable: without this check it would escape
            # dataReceived as a TypeError instead of closing cleanly.
            raise ProtocolError(f"a command is a string, not {type(command).__name__}")
        handler = self._handlers.get(command)
        if handler is None:
            self._log.info("Didn't understand command {command!r}", command=command)
            if isinstance(command, bytes):
                self.sendCall(b"didNotUnderstand", command)
            return
        try:
            handler(self, *expression[1:])
        except TypeError as e:
            raise ProtocolError(f"malformed {command!r} message: {e}") from None

    def _negotiate(self, expression: Any) -> None:
        if self.isClient:
            if not isinstance(expression, list):
                raise ProtocolError("the server offered no dialects")
            if b"pb" not in expression:
                raise ProtocolError(f"the server speaks none of our dialects: {expression!r}")
            self._write(banana.encode(b"pb"))
        elif expression != b"pb":
            raise ProtocolError(f"the client chose a dialect we did not offer: {expression!r}")
        self.currentDialect = b"pb"
        self._vocabulary = banana.PB_VOCABULARY
        self._encoder = self._newEncoder()
        self.connectionReady()

    def sendCall(self, *exp: Any) -> None:
        """
        Send one PB message (an s-expression) to the peer.
        """
        self._write(self._encode(list(exp)))

    def _newEncoder(self) -> banana.Encoder:
        options = self.options
        return banana.Encoder(
            self._vocabulary, options.sizeLimit, options.prefixLimit, options.maxDepth
        )

    def _encode(self, sexp: Any) -> bytes:
        try:
            return self._encoder.encode(sexp)
        except banana.BananaTooLarge as e:
            raise TooLarge(str(e)) from None

    # -- connection life ------------------------------------------------------

    def connectionReady(self) -> None:
        """
        Banana negotiation is done: announce our version, run the connect
        notifiers, tell the factory.
        """
        self.sendCall(b"version", self.version)
        if self.options.keepAliveInterval is not None:
            self._startKeepAlive(self.options.keepAliveInterval)
        connects, self.connects = self.connects or [], None
        for notifier in connects:
            try:
                notifier()
            except Exception:
                self._log.failure("in a connect notifier")
        if self.factory is not None:
            self.factory.clientConnectionMade(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.disconnected = True
        if self._keepAlive is not None and self._keepAlive.running:
            self._keepAlive.stop()
        waiting, self.waitingForAnswers = self.waitingForAnswers, {}
        self._timeouts = {}
        self._stopTimer()
        for d in waiting.values():
            d.errback(Failure(PBConnectionLost(_reasonText(reason) if reason else "connection lost")))
        cached, self.remotelyCachedObjects = self.remotelyCachedObjects, {}
        self.remotelyCachedLUIDs = {}
        for lobj in cached.values():
            cacheable = lobj.object
            try:
                cacheable.stoppedObserving(
                    lobj.perspective, RemoteCacheObserver(self, cacheable, lobj.perspective)
                )
            except Exception:
                self._log.failure("in stoppedObserving")
        disconnects, self.disconnects = self.disconnects, []
        for notifier in disconnects:
            try:
                notifier()
            except Exception:
                self._log.failure("in a disconnect notifier")
        self.localObjects = {}
        self.luids = {}
        self._localCleanup = {}
        for cache in self.locallyCachedObjects.values():
            cache.broker = None
        self.locallyCachedObjects = {}
        self._unsent = {}

    def notifyOnDisconnect(self, notifier: Callable[[], Any]) -> None:
        """
        Call C{notifier()} when the connection is lost.
        """
        if not callable(notifier):
            raise TypeError("notifier must be callable")
        self.disconnects.append(notifier)

    def dontNotifyOnDisconnect(self, notifier: Callable[[], Any]) -> None:
        try:
            self.disconnects.remove(notifier)
        except ValueError:
            pass

    def notifyOnConnect(self, notifier: Callable[[], Any]) -> None:
        """
        Call C{notifier()} when PB negotiation is done (at once if it is).
        """
        if self.connects is None:
            notifier()
        else:
            self.connects.append(notifier)

    # -- reference tables -----------------------------------------------------

    def localObjectForID(self, luid: Any) -> Any:
        """
        The local object lent under C{luid}, or L{None}.
        """
        if isinstance(luid, str):
            luid = luid.encode("utf-8")
        lobj = self.localObjects.get(luid)
        return None if lobj is None else lobj.object

    def registerReference(self, object: Any) -> int:
        """
        Lend C{object} to the peer (again): the ID it is known by there.
        """
        if object is None:
            raise TypeError("cannot lend None")
        puid = object.processUniqueID()
        luid = self.luids.get(puid)
        if luid is None:
            if len(self.localObjects) >= self.options.maxReferences:
                raise TooLarge(
                    f"this connection already holds {self.options.maxReferences} references"
                )
            luid = self.newLocalID()
            self.localObjects[luid] = Local(object)
            self.luids[puid] = luid
        else:
            self.localObjects[luid].refcount += 1
        if self._lent is not None:
            self._lent.append(("ref", luid))
        return luid

    def unregisterReference(self, refnum: Any) -> None:
        """
        Forget the object lent under C{refnum} whatever its reference count:
        the peer's later calls on it fail with "Invalid Object ID".  Its
        cleanup (e.g. an avatar's logout) runs.
        """
        lobj = self.localObjects.pop(refnum, None)
        if lobj is None:
            return
        puid = lobj.object.processUniqueID()
        self.luids.pop(puid, None)
        cleanup = self._localCleanup.pop(puid, None)
        if cleanup is not None:
            cleanup()

    def setNameForLocal(self, name: str | bytes, object: Any) -> None:
        """
        Publish C{object} under a well-known name (C{"root"}).
        """
        if isinstance(name, str):
            name = name.encode("utf-8")
        self.localObjects[name] = Local(object)

    def remoteForName(self, name: str | bytes) -> RemoteReference:
        """
        A reference to the peer's object published under C{name}.
        """
        if isinstance(name, str):
            name = name.encode("utf-8")
        return RemoteReference(None, self, name, False)

    def cachedRemotelyAs(self, instance: Any, incref: bool = False) -> int | None:
        luid = self.remotelyCachedLUIDs.get(instance.processUniqueID())
        if luid is not None and incref:
            self.remotelyCachedObjects[luid].refcount += 1
            if self._lent is not None:
                self._lent.append(("cache", luid))
        return luid

    def remotelyCachedForLUID(self, luid: int) -> Any:
        return self.remotelyCachedObjects[luid].object

    def cacheRemotely(self, instance: Any) -> int:
        if len(self.remotelyCachedObjects) >= self.options.maxReferences:
            raise TooLarge(f"this connection already holds {self.options.maxReferences} caches")
        luid = self.newLocalID()
        self.remotelyCachedLUIDs[instance.processUniqueID()] = luid
        self.remotelyCachedObjects[luid] = Local(instance, self.serializingPerspective)
        if self._lent is not None:
            self._lent.append(("cache", luid))
        return luid

    def uncacheRemotely(self, luid: int) -> None:
        """
        Forget a cache that was never sent (its serialization failed).
        """
        lobj = self.remotelyCachedObjects.get(luid)
        if lobj is not None:
            lobj.refcount = 1
            self._giveBack([("cache", luid)])

    def cacheLocally(self, cid: Any, instance: Any) -> None:
        self.locallyCachedObjects[cid] = instance

    def cachedLocallyAs(self, cid: Any) -> Any:
        return self.locallyCachedObjects[cid]

    def unjellyGenericCache(
        self, unjellier: Unjellier, typeName: str, luid: int, state: Any
    ) -> Any:
        cache = GenericRemoteCache.__new__(GenericRemoteCache)
        cache.typeName = typeName
        return cache.unjellyFor(unjellier, [typeName.encode("utf-8"), luid, state])

    def refuseCache(self, luid: Any) -> None:
        """
        Release a cache we will not hold (its type is not allowed here).
        """
        if self._unjellied is not None:
            self._unjellied.append(("decache", luid))
        if not self.disconnected:
            self.sendCall(b"decache", luid)

    def newLocalID(self) -> int:
        self.currentLocalID += 1
        return self.currentLocalID

    def newRequestID(self) -> int:
        self.currentRequestID += 1
        return self.currentRequestID

    # -- (un)serialization ----------------------------------------------------

    def serialize(self, object: Any, perspective: Any = None, method: Any = None,
                  args: Any = None, kw: Any = None) -> Any:
        """
        Jelly C{object} for this connection (a Deferred is serialized when it
        fires).
        """
        sexp = jellyPlain(object, self._text)
        if sexp is not NOT_PLAIN:
            return sexp
        # Deferred's metaclass is ABCMeta, whose isinstance is slow: try the
        # exact type first.
        if type(object) is Deferred or isinstance(object, Deferred):
            return object.addCallback(self.serialize, perspective)
        return self._serializeFull(object, perspective)

    @withoutCycleCollection
    def _serializeFull(self, object: Any, perspective: Any) -> Any:
        previous = self.serializingPerspective
        self.serializingPerspective = perspective
        outer = self._lent
        lent: list[tuple[str, Any]] = []
        self._lent = lent
        try:
            sexp = Jellier(self, self.registry, True, self.options.sizeLimit).jelly(object)
        except BaseException:
            self._giveBack(lent)
            raise
        finally:
            self._lent = outer
            self.serializingPerspective = previous
        if lent:
            if outer is not None:
                outer.extend(lent)
            else:
                # Serialized outside a message (a remote method's result):
                # remembered until the answer carrying it is sent or fails.
                self._unsent[id(sexp)] = (sexp, lent)
        return sexp

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        """
        Unjelly an s-expression received on this connection.

        @raise UnsafeValue: it names a type this broker does not accept, or
            is malformed.
        """
        value = unjellyPlain(sexp)
        if value is not NOT_PLAIN:
            return value
        return self._unserializeFull(sexp, perspective)

    @withoutCycleCollection
    def _unserializeFull(self, sexp: Any, perspective: Any) -> Any:
        previous = self.unserializingPerspective
        self.unserializingPerspective = perspective
        outer, self._unjellied = self._unjellied, []
        made = self._unjellied
        try:
            return Unjellier(self, self.registry, _BROKER_ATOMS).unjellyFull(sexp)
        except InsecureJelly as e:
            self._releaseUnreached(sexp, made)
            raise UnsafeValue(str(e)) from None
        except UnsafeValue:
            # Refused by a class (a RemoteCopy's state): already the answer.
            self._releaseUnreached(sexp, made)
            raise
        except (IndexError, KeyError, ValueError, AttributeError, TypeError) as e:
            self._releaseUnreached(sexp, made)
            raise UnsafeValue(f"malformed value: {e}") from None
        except BaseException:
            self._releaseUnreached(sexp, made)
            raise
        finally:
            self.unserializingPerspective = previous
            self._unjellied = outer

    def _releaseUnreached(self, sexp: Any, made: list[Any]) -> None:
        """
        After a value failed to unjelly, give back what the peer lent in it
        that was never reached: a decref for each reference not made into a
        L{RemoteReference} (those made send theirs when they are collected),
        a decache for each new cache not taken.  Without this the peer would
        hold those objects for us until the connection closes.
        """
        if self.disconnected:
            return
        unmade = Counter(made)
        stack = [sexp]
        while stack:
            node = stack.pop()
            if type(node) is not list or not node:
                continue
            tag = node[0]
            if tag == b"remote":
                if len(node) == 2:
                    luid = node[1]
                    if unmade[luid]:
                        unmade[luid] -= 1
                    else:
                        self.sendDecRef(luid)
                continue
            if (
                len(node) == 3
                and type(tag) is bytes
                and tag not in _BROKER_ATOMS
                and type(node[1]) is int
                and node[1] not in self.locallyCachedObjects
                and not unmade[("decache", node[1])]
            ):
                # A cache never taken (a refused one was released already).
                self.refuseCache(node[1])
                continue
            stack.extend(node[1:])

    def _beginLending(self) -> None:
        self._lent = []

    def _endLending(self, success: bool) -> None:
        lent, self._lent = self._lent or [], None
        self._lastLent = lent if success else []
        if not success:
            self._giveBack(lent)

    def _giveBack(self, lent: list[tuple[str, Any]]) -> None:
        """
        Nothing was sent: give back what a message would have lent.
        """
        for kind, luid in reversed(lent):
            table = self.localObjects if kind == "ref" else self.remotelyCachedObjects
            lobj = table.get(luid)
            if lobj is None:
                continue
            lobj.refcount -= 1
            if lobj.refcount <= 0:
                del table[luid]
                puid = lobj.object.processUniqueID()
                if kind == "ref":
                    self.luids.pop(puid, None)
                else:
                    self.remotelyCachedLUIDs.pop(puid, None)
                    # The cacheable handed out an observer for this message;
                    # the peer will never hold the cache, so it stops now.
                    cacheable = lobj.object
                    try:
                        cacheable.stoppedObserving(
                            lobj.perspective,
                            RemoteCacheObserver(self, cacheable, lobj.perspective),
                        )
                    except Exception:
                        self._log.failure("in stoppedObserving")

    def _encodeMessage(self, build: Callable[[], list[Any]], carried: Any = None) -> bytes:
        """
        Serialize and encode one message, or raise with nothing lent.

        @param carried: an s-expression serialized earlier that the message
            carries: what it lent is given back too if the message fails.
        """
        self._beginLending()
        if carried is not None:
            earlier = self._unsent.pop(id(carried), None)
            if earlier is not None and self._lent is not None:
                self._lent.extend(earlier[1])
        success = False
        try:
            data = self._encode(build())
            success = True
            return data
        except JellyError as e:
            raise UnsafeValue(str(e)) from None
        except UnicodeEncodeError as e:
            raise UnsafeValue(f"a string cannot be encoded as UTF-8: {e}") from None
        except RecursionError:
            raise TooLarge("value nested too deeply to send") from None
        finally:
            self._endLending(success)

    # -- calls out ------------------------------------------------------------

    def sendMessage(
        self,
        prefix: bytes,
        perspective: Any,
        objectID: Any,
        message: str,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        timeout: Any = _noTimeout,
    ) -> Deferred[Any]:
        """
        Send a call (C{prefix} C{b"cache"} for a cache observer's) and return
        the Deferred of its answer.
        """
        if self.disconnected:
            return fail(DeadReferenceError("Calling Stale Broker (the connection is lost)"))
        requestID = self.newRequestID()
        name = message.encode("utf-8")
        pinned: list[Any] = []
        # Plain arguments (the usual case) lend nothing: no bookkeeping.
        try:
            netArgs = jellyPlain(args, self._text)
            netKw = jellyPlain(kw, self._text)
        except UnicodeEncodeError:
            # Left to the general path, which turns it into UnsafeValue.
            netArgs = netKw = NOT_PLAIN
        try:
            if netArgs is not NOT_PLAIN and netKw is not NOT_PLAIN:
                data = self._encode(
                    [prefix + b"message", requestID, objectID, name, 1, netArgs, netKw]
                )
            else:

                def build() -> list[Any]:
                    return [
                        prefix + b"message",
                        requestID,
                        objectID,
                        name,
                        1,
                        self.serialize(args, perspective),
                        self.serialize(kw, perspective),
                    ]

                data = self._encodeMessage(build)
                pinned = [luid for kind, luid in self._lastLent if kind == "ref"]
        except Exception:
            return fail()
        d: Deferred[Any] = Deferred(lambda _: self._cancelled(requestID))
        if pinned:
            # Objects lent in a call stay ours until its answer arrives: a
            # peer (Twisted's) may send its decref before an answer that
            # names the object again.
            for luid in pinned:
                self.localObjects[luid].refcount += 1
            d.addBoth(self._unpin, pinned)
        self.waitingForAnswers[requestID] = d
        if timeout is _noTimeout:
            timeout = self.options.callTimeout
        if timeout is not None:
            self._startTimeout(requestID, message, timeout)
        self._write(data)
        return d

    def _unpin(self, result: Any, pinned: list[Any]) -> Any:
        for luid in pinned:
            lobj = self.localObjects.get(luid)
            if lobj is not None:
                lobj.refcount -= 1
                if lobj.refcount <= 0:
                    self.unregisterReference(luid)
        return result

    def _forget(self, requestID: int) -> Deferred[Any] | None:
        timeouts = self._timeouts
        if timeouts.pop(requestID, None) is not None and not timeouts:
            self._stopTimer()
        return self.waitingForAnswers.pop(requestID, None)

    def _cancelled(self, requestID: int) -> None:
        self._forget(requestID)

    # -- call timeouts --------------------------------------------------------
    #
    # A timer per call would cost a callLater and a cancel (and the reactor's
    # heap work) for every call.  Instead one timer per broker is set for the
    # earliest deadline of the calls waiting; when it fires it fails the
    # calls whose deadline has passed and is set again for the next one.  An
    # answer only removes its call's entry, and stops the timer when no call
    # is left waiting, so an idle broker holds no timer.

    def _startTimeout(self, requestID: int, message: str, timeout: float) -> None:
        clock = self.clock
        deadline = clock.seconds() + timeout
        self._timeouts[requestID] = (deadline, message, timeout)
        timer = self._timer
        if timer is None:
            self._timer = clock.callLater(timeout, self._expireCalls)
            self._timerAt = deadline
        elif deadline < self._timerAt:
            timer.reset(timeout)
            self._timerAt = deadline

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expireCalls(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        # The timer was set for _timerAt as "now + delay", which float
        # rounding may put a hair before it: the deadlines it was set for
        # are due anyway.
        due = max(now, self._timerAt)
        timeouts = self._timeouts
        expired = sorted(
            (entry[0], requestID) for requestID, entry in timeouts.items() if entry[0] <= due
        )
        for _, requestID in expired:
            entry = timeouts.pop(requestID, None)
            d = self.waitingForAnswers.pop(requestID, None)
            if entry is not None and d is not None:
                _, message, timeout = entry
                d.errback(CallTimeout(f"no answer to {message!r} within {timeout:g} seconds"))
        timeouts = self._timeouts
        if timeouts and self._timer is None:
            deadline = min(entry[0] for entry in timeouts.values())
            self._timer = self.clock.callLater(max(deadline - now, 0.0), self._expireCalls)
            self._timerAt = deadline

    def proto_answer(self, requestID: int, netResult: Any) -> None:
        d = self._forget(requestID)
        try:
            result = self.unserialize(netResult)
        except ProtocolError:
            # The call fails before the connection closes: its Deferred is
            # no longer in waitingForAnswers, so connectionLost cannot fail it.
            if d is not None:
                d.errback()
            raise
        except Exception:
            # Whatever stops the answer being rebuilt (a refused type, a value
            # nested too deeply for this side) fails this call only.
            if d is not None:
                d.errback()
            return
        if d is not None:
            d.callback(result)

    def proto_error(self, requestID: int, fail: Any) -> None:
        d = self._forget(requestID)
        try:
            value = self.unserialize(fail)
        except ProtocolError:
            if d is not None:
                d.errback()
            raise
        except Exception:
            if d is not None:
                d.errback()
            return
        if d is None:
            return
        if isinstance(value, BaseException):
            d.errback(Failure(value))
        else:
            d.errback(RemoteError("builtins.Exception", _text(value), "", ()))

    # -- calls in -------------------------------------------------------------

    def proto_version(self, vnum: int) -> None:
        if vnum != self.version:
            raise ProtocolError(f"Version Incompatibility: {self.version} {vnum}")

    def proto_didNotUnderstand(self, command: Any) -> None:
        self._log.info("The peer didn't understand {command!r}", command=command)

    # -- keep-alive -------------------------------------------------------

    def _startKeepAlive(self, interval: float) -> None:
        from twisted.internet.task import LoopingCall

        self._lastReceived = self.clock.seconds()
        self._keepAlive = LoopingCall(self._probe, interval)
        self._keepAlive.clock = self.clock
        started = self._keepAlive.start(min(interval, self.options.keepAliveTimeout) / 2, now=False)
        started.addErrback(self._logUnexpected)

    def _probe(self, interval: float) -> None:
        idle = self.clock.seconds() - self._lastReceived
        if idle >= interval + self.options.keepAliveTimeout:
            self._log.warn("PB peer {broker} silent for {idle:.1f} s: dropping it",
                           broker=self, idle=idle)
            self.disconnected = True
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        elif idle >= interval:
            # A call on an object no peer publishes: every PB broker (ours
            # or Twisted's) answers "Invalid Object ID" without logging it.
            probe = self.remoteForName(_PROBE).callRemote("ping", _timeout=None)
            probe.addErrback(lambda _: None)

    def proto_message(self, requestID: int, objectID: Any, message: bytes,
                      answerRequired: int, netArgs: Any, netKw: Any) -> None:
        self._recvMessage(self.localObjectForID, requestID, objectID, message,
                          answerRequired, netArgs, netKw)

    def proto_cachemessage(self, requestID: int, objectID: Any, message: bytes,
                           answerRequired: int, netArgs: Any, netKw: Any) -> None:
        self._recvMessage(self.locallyCachedObjects.get, requestID, objectID, message,
                          answerRequired, netArgs, netKw)

    def _recvMessage(self, find: Callable[[Any], Any], requestID: int, objectID: Any,
                     message: Any, answerRequired: int, netArgs: Any, netKw: Any) -> None:
        if type(requestID) is not int or not isinstance(message, bytes):
            raise ProtocolError("malformed message")
        self.callsReceived += 1
        held: list[RemoteReference] = []
        outer, self._holding = self._holding, held
        try:
            name = message.decode("utf-8")
            obj = find(objectID) if isinstance(objectID, (int, bytes)) else None
            if obj is None:
                raise Error("Invalid Object ID")
            if name == DESCRIBE:
                netResult = self.serialize(describe(obj))
            else:
                netResult = obj.remoteMessageReceived(self, name, netArgs, netKw)
        except Exception:
            if answerRequired:
                self._sendFailure(Failure(), requestID)
            else:
                self._logUnexpected(Failure())
            return
        finally:
            self._holding = outer
        # Deferred's metaclass is ABCMeta, whose isinstance is slow; a
        # serialized result is mostly of a built-in type.
        kind = type(netResult)
        deferred = kind is Deferred or (
            kind not in _SEXP_TYPES and isinstance(netResult, Deferred)
        )
        if not answerRequired:
            if deferred:
                netResult.addCallbacks(self._discardResult, self._logUnexpected)
            else:
                self._discardResult(netResult)
            return
        if deferred:
            netResult.addCallbacks(
                self._sendAnswer,
                self._sendFailure,
                callbackArgs=(requestID,),
                errbackArgs=(requestID,),
            ).addErrback(self._logUnexpected).addBoth(_release, held)
        else:
            self._sendAnswer(netResult, requestID)
        del held

    def _discardResult(self, netResult: Any) -> None:
        earlier = self._unsent.pop(id(netResult), None)
        if earlier is not None:
            self._giveBack(earlier[1])

    def _sendAnswer(self, netResult: Any, requestID: int) -> None:
        if self.disconnected:
            return
        try:
            if self._unsent:
                data = self._encodeMessage(lambda: [b"answer", requestID, netResult], netResult)
            else:
                # Nothing lent is waiting to be sent: the answer lends nothing.
                data = self._encode([b"answer", requestID, netResult])
        except Exception:
            self._sendFailure(Failure(), requestID)
            return
        self._write(data)

    def _logUnexpected(self, failure: Failure) -> None:
        if failure.check(Error) is None:
            self._log.failure("Unexpected error in a PB call", failure)

    def _sendFailure(self, failure: Failure, requestID: int) -> None:
        """
        Answer a call with its failure: a Copyable exception travels as
        itself, anything else as a L{CopyableFailure}.  Failures that are not
        L{Error}s are logged with their traceback.
        """
        if self.disconnected:
            return
        if failure.check(Error) is None:
            self._log.failure("Peer will receive the following PB traceback", failure)
        candidates: list[Any] = []
        if isinstance(failure.value, Copyable):
            candidates.append(failure.value)
        copyable = CopyableFailure(failure)
        copyable.unsafeTracebacks = self.options.unsafeTracebacks
        candidates.append(copyable)
        for candidate in candidates:
            try:
                data = self._encodeMessage(partial(self._errorMessage, requestID, candidate))
            except Exception:
                continue
            self._write(data)
            return
        self._log.error("Could not send the failure of request {requestID}", requestID=requestID)

    def _errorMessage(self, requestID: int, candidate: Any) -> list[Any]:
        return [b"error", requestID, self.serialize(candidate)]

    # -- reference counting ---------------------------------------------------

    def sendDecRef(self, objectID: Any) -> None:
        if not self.disconnected:
            self.sendCall(b"decref", objectID)

    def proto_decref(self, objectID: Any) -> None:
        if isinstance(objectID, str):
            objectID = objectID.encode("utf-8")
        lobj = self.localObjects.get(objectID)
        if lobj is None:
            self._log.info("decref of unknown object {id!r} ignored", id=objectID)
            return
        lobj.refcount -= 1
        if lobj.refcount <= 0:
            self.unregisterReference(objectID)

    def decCacheRef(self, objectID: Any) -> None:
        if not self.disconnected:
            self.sendCall(b"decache", objectID)

    def proto_decache(self, objectID: Any) -> None:
        lobj = self.remotelyCachedObjects.get(objectID)
        if lobj is None:
            self._log.info("decache of unknown cache {id!r} ignored", id=objectID)
            return
        lobj.refcount -= 1
        if lobj.refcount > 0:
            return
        cacheable = lobj.object
        try:
            cacheable.stoppedObserving(
                lobj.perspective, RemoteCacheObserver(self, cacheable, lobj.perspective)
            )
        except Exception:
            self._log.failure("in stoppedObserving")
        self.remotelyCachedLUIDs.pop(cacheable.processUniqueID(), None)
        del self.remotelyCachedObjects[objectID]
        self.sendCall(b"uncache", objectID)

    def proto_uncache(self, objectID: Any) -> None:
        cache = self.locallyCachedObjects.pop(objectID, None)
        if cache is not None:
            cache.broker = None

    _handlers: dict[bytes, Callable[..., None]] = {}


Broker._handlers = {
    name[len("proto_"):].encode(): method
    for name, method in vars(Broker).items()
    if name.startswith("proto_")
}


def _release(result: Any, held: list[Any]) -> Any:
    held.clear()
    return result


def _reasonText(reason: Any) -> str:
    if isinstance(reason, Failure):
        return reason.getErrorMessage()
    return str(reason)

