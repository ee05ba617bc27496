"""
The flavors of objects PB can pass: by reference, by view, by copy, by cache.

  - L{Referenceable}: passed as a handle; the peer calls its C{remote_*}
    methods.  L{Root} is the one a connection starts from.
  - L{Viewable}: passed as a L{ViewPoint} that adds the caller's perspective
    as the first argument of its C{view_*} methods.
  - L{Copyable}: passed as a copy of its state, rebuilt as a L{RemoteCopy}.
  - L{Cacheable}: copied once per connection, then kept up to date: the peer's
    L{RemoteCache} receives C{observe_*} calls through a
    L{RemoteCacheObserver}.

Remote methods may be plain functions, return Deferreds, or be C{async def}.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from .errors import ArgumentError, NoSuchMethod, ProtocolError, UnsafeValue
from .jelly import Jellier, Jellyable, Unjellier, Unjellyable, qual

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "Cacheable",
    "Copyable",
    "GenericRemoteCache",
    "IPBRoot",
    "Referenceable",
    "RemoteCache",
    "RemoteCacheObserver",
    "RemoteCopy",
    "Root",
    "Serializable",
    "ViewPoint",
    "Viewable",
    "callLocal",
]

_log = Logger(namespace="pb.flavors")


def callLocal(method: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """
    Call a C{remote_*}/C{perspective_*}/C{view_*}/C{observe_*} method.

    Coroutines become Deferreds.  Arguments that do not fit the method's
    signature raise L{ArgumentError} (the caller's mistake), while a
    C{TypeError} raised inside the method stays what it is.
    """
    try:
        result = method(*args, **kw)
    except TypeError:
        try:
            inspect.signature(method).bind(*args, **kw)
        except TypeError as e:
            raise ArgumentError(f"{getattr(method, '__name__', 'method')}(): {e}") from None
        except ValueError:
            pass
        raise
    if isinstance(result, CoroutineType):
        return Deferred.fromCoroutine(result)
    return result


def _decodeKeywords(kw: Any) -> dict[str, Any]:
    if not isinstance(kw, dict):
        raise ProtocolError("keyword arguments must be a dictionary")
    for key in kw:
        if type(key) is not str:
            break
    else:
        return kw
    # Python 2 era peers send bytes keys.
    decoded = {}
    for key, value in kw.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8")
        if not isinstance(key, str):
            raise ArgumentError("keyword argument names must be strings")
        decoded[key] = value
    return decoded


def _positional(args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple):
        return args
    if isinstance(args, list):
        return tuple(args)
    raise ArgumentError("positional arguments must be a sequence")


def findMethod(obj: object, prefix: str, message: str) -> Callable[..., Any]:
    """
    Find C{obj}'s method C{prefix + message}, or raise L{NoSuchMethod}.
    """
    method = getattr(obj, prefix + message, None) if message.isidentifier() else None
    if method is None or not callable(method):
        raise NoSuchMethod(f"No such method: {prefix}{message}")
    return method


class IPBRoot(Interface):
    """
    Factory for root Referenceable objects for PB servers.
    """

    def rootObject(broker: Any) -> Any:
        """
        Return the root Referenceable for C{broker}.
        """


class Serializable(Jellyable):
    """
    An object that can be passed to or returned from a remote method.
    """

    def processUniqueID(self) -> Any:
        """
        An ID that identifies this object within the process; objects with
        the same ID are the same reference to the peer.
        """
        return id(self)


class Referenceable(Serializable):
    """
    An object passed by reference: the peer gets a L{pb.RemoteReference} and
    calling C{callRemote("x", ...)} on it runs my C{remote_x(...)}.
    """

    perspective: Any = None

    def remoteMessageReceived(
        self, broker: Broker, message: str, args: Any, kw: Any
    ) -> Any:
        """
        Dispatch a remote call to C{remote_<message>}.
        """
        args = _positional(broker.unserialize(args))
        kw = _decodeKeywords(broker.unserialize(kw))
        method = findMethod(self, "remote_", message)
        return broker.serialize(callLocal(method, args, kw), self.perspective)

    def jellyFor(self, jellier: Jellier) -> Any:
        if jellier.invoker is None:
            raise_cannotSendOutsideBroker(self)
        return [b"remote", jellier.invoker.registerReference(self)]


def raise_cannotSendOutsideBroker(obj: object) -> None:
    from .jelly import JellyError

    raise JellyError(f"{qual(type(obj))} can only be sent through a PB broker")


@implementer(IPBRoot)
class Root(Referenceable):
    """
    The object a connection starts from: L{pb.PBServerFactory} publishes
    C{rootObject(broker)} under the name C{"root"} for every connection.
    """

    def rootObject(self, broker: Broker) -> Referenceable:
        """
        The root object for one connection; by default, myself.
        """
        return self


class ViewPoint(Referenceable):
    """
    A reference to C{object} as seen from C{perspective}: calling
    C{callRemote("x", ...)} runs C{object.view_x(perspective, ...)}.
    """

    def __init__(self, perspective: Any, object: Any) -> None:
        self.perspective = perspective
        self.object = object

    def processUniqueID(self) -> Any:
        return (id(self.perspective), id(self.object))

    def remoteMessageReceived(
        self, broker: Broker, message: str, args: Any, kw: Any
    ) -> Any:
        args = _positional(broker.unserialize(args, self.perspective))
        kw = _decodeKeywords(broker.unserialize(kw, self.perspective))
        method = findMethod(self.object, "view_", message)
        result = callLocal(method, (self.perspective, *args), kw)
        return broker.serialize(result, self.perspective)


class Viewable(Serializable):
    """
    Passed as a L{ViewPoint} for the perspective of the call that sends it.
    """

    def jellyFor(self, jellier: Jellier) -> Any:
        if jellier.invoker is None:
            raise_cannotSendOutsideBroker(self)
        return ViewPoint(jellier.invoker.serializingPerspective, self).jellyFor(jellier)


class Copyable(Serializable):
    """
    Passed by copy: the peer rebuilds me from C{getStateToCopyFor(perspective)}
    with the L{RemoteCopy} class registered for C{getTypeToCopyFor(perspective)}.
    """

    def getStateToCopy(self) -> Any:
        return self.__dict__

    def getStateToCopyFor(self, perspective: Any) -> Any:
        return self.getStateToCopy()

    def getTypeToCopy(self) -> bytes:
        return qual(self.__class__).encode("utf-8")

    def getTypeToCopyFor(self, perspective: Any) -> bytes:
        return self.getTypeToCopy()

    def jellyFor(self, jellier: Jellier) -> Any:
        perspective = jellier.invoker.serializingPerspective if jellier.invoker else None
        typeTag = self.getTypeToCopyFor(perspective)
        if isinstance(typeTag, str):
            typeTag = typeTag.encode("utf-8")
        state = self.getStateToCopyFor(perspective)
        sxp = jellier.prepare(self)
        sxp.extend([typeTag, jellier.jelly(state)])
        return jellier.preserve(self, sxp)


class RemoteCopy(Unjellyable):
    """
    The local copy of a remote L{Copyable}.  Built without calling
    C{__init__}, then given the state with L{setCopyableState}.
    """

    def setCopyableState(self, state: Any) -> None:
        """
        Take the copied state: a dictionary of attributes.  Any other state
        is refused with L{UnsafeValue}, which fails the one call or answer
        carrying it (a subclass taking other states overrides this).
        """
        if not state:
            state = {}
        if not isinstance(state, dict):
            raise UnsafeValue(f"{qual(type(self))} expects a dictionary state, not "
                              f"{type(state).__name__}")
        self.__dict__ = {
            key.decode("utf-8") if isinstance(key, bytes) else key: value
            for key, value in state.items()
        }

    def unjellyFor(self, unjellier: Unjellier, jellyList: list[Any]) -> Any:
        if len(jellyList) != 2:
            raise ProtocolError(f"malformed copy of {jellyList[0]!r}")
        self.setCopyableState(unjellier.unjelly(jellyList[1]))
        return self


class Cacheable(Copyable):
    """
    Copied once per connection and kept up to date.

    The first time I am sent on a connection, L{getStateToCacheAndObserveFor}
    gives the state and an observer; calling C{observer.callRemote("x", ...)}
    runs C{observe_x(...)} on the peer's copy.  L{stoppedObserving} runs when
    the peer has released every copy, or the connection is gone.
    """

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return self.getStateToCopyFor(perspective)

    def stoppedObserving(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        """
        C{observer} will not be told of changes any more.
        """

    def jellyFor(self, jellier: Jellier) -> Any:
        broker = jellier.invoker
        if broker is None:
            return Copyable.jellyFor(self, jellier)
        luid = broker.cachedRemotelyAs(self, incref=True)
        if luid is not None:
            return [b"cached", luid]
        perspective = broker.serializingPerspective
        typeTag = self.getTypeToCopyFor(perspective)
        if isinstance(typeTag, str):
            typeTag = typeTag.encode("utf-8")
        luid = broker.cacheRemotely(self)
        observer = RemoteCacheObserver(broker, self, perspective)
        try:
            state = self.getStateToCacheAndObserveFor(perspective, observer)
            sxp = jellier.prepare(self)
            sxp.extend([typeTag, luid, jellier.jelly(state)])
        except BaseException:
            broker.uncacheRemotely(luid)
            raise
        return jellier.preserve(self, sxp)


class RemoteCache(RemoteCopy, Serializable):
    """
    The local copy of a remote L{Cacheable}: C{observe_x} methods receive its
    changes.

    Each time the cache arrives the receiver gets a new object sharing one
    C{__dict__} (as in Twisted), and each tells the sender when it is
    collected; when all are gone the sender stops observing.
    """

    broker: Any = None
    luid: Any = None

    def remoteMessageReceived(
        self, broker: Broker, message: str, args: Any, kw: Any
    ) -> Any:
        args = _positional(broker.unserialize(args))
        kw = _decodeKeywords(broker.unserialize(kw))
        method = findMethod(self, "observe_", message)
        return broker.serialize(callLocal(method, args, kw))

    def setCacheableState(self, state: Any) -> None:
        """
        Receive the cached state; by default, L{setCopyableState}.  (Twisted
        never calls this name; we call it, and its default keeps subclasses
        written for Twisted working.)
        """
        self.setCopyableState(state)

    def jellyFor(self, jellier: Jellier) -> Any:
        if jellier.invoker is None or jellier.invoker is not self.broker:
            from .jelly import JellyError

            raise JellyError("a cache can only be sent back through the broker it came from")
        return [b"lcache", self.luid]

    def unjellyFor(self, unjellier: Unjellier, jellyList: list[Any]) -> Any:
        broker = unjellier.invoker
        if broker is None or len(jellyList) != 3:
            raise ProtocolError("a cache can only arrive through a broker")
        luid = jellyList[1]
        self.broker = broker
        self.luid = luid
        copy = self._borgify()
        init = getattr(copy, "__init__", None)
        if init is not None and type(copy).__init__ is not object.__init__:
            init()
        broker.cacheLocally(luid, self)
        copy.setCacheableState(unjellier.unjelly(jellyList[2]))
        self.__dict__ = copy.__dict__
        self.broker = broker
        self.luid = luid
        return copy

    def _borgify(self) -> Any:
        blank = self.__class__.__new__(self.__class__)
        blank.__dict__ = self.__dict__
        return blank

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteCache):
            return self.__dict__ is other.__dict__
        return NotImplemented

    def __hash__(self) -> int:
        return id(self.__dict__) % sys.maxsize

    def __del__(self) -> None:
        try:
            if self.broker is not None:
                self.broker.decCacheRef(self.luid)
        except BaseException:
            _log.failure("while releasing a remote cache")


class GenericRemoteCache(RemoteCache):
    """
    An inert copy of a Cacheable whose type tag this side has no class for,
    built only by brokers whose registry allows generic holders.

    It keeps the state it arrived with and turns every C{observe_*} call into
    an event: each listener added with L{addListener} gets
    C{(method, args, kwargs)}.  The gateway mirrors caches with it.
    """

    typeName: str = ""

    def setCacheableState(self, state: Any) -> None:
        self.__dict__["state"] = state
        self.__dict__.setdefault("listeners", [])

    def addListener(self, listener: Callable[[str, tuple[Any, ...], dict[str, Any]], Any]) -> None:
        self.__dict__.setdefault("listeners", []).append(listener)

    def removeListener(self, listener: Callable[..., Any]) -> None:
        listeners = self.__dict__.get("listeners", [])
        if listener in listeners:
            listeners.remove(listener)

    def remoteMessageReceived(
        self, broker: Broker, message: str, args: Any, kw: Any
    ) -> Any:
        args = _positional(broker.unserialize(args))
        kw = _decodeKeywords(broker.unserialize(kw))
        for listener in list(self.__dict__.get("listeners", [])):
            try:
                listener("observe_" + message, args, kw)
            except Exception:
                _log.failure("cache listener failed for {message}", message=message)
        return broker.serialize(None)


class RemoteCacheObserver:
    """
    The sender's handle on one peer's copy of a L{Cacheable}: C{callRemote}
    runs C{observe_*} methods there.  Observers of the same cache, connection
    and perspective are equal.
    """

    def __init__(self, broker: Broker, cached: Cacheable, perspective: Any) -> None:
        self.broker = broker
        self.cached = cached
        self.perspective = perspective

    def __repr__(self) -> str:
        return f"<RemoteCacheObserver {self.cached!r} on {self.broker!r}>"

    def _key(self) -> tuple[int, int, int]:
        return (id(self.broker), id(self.cached), id(self.perspective))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteCacheObserver):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def callRemote(self, _name: str | bytes, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Call C{observe_<_name>} on the peer's copy.
        """
        if isinstance(_name, bytes):
            _name = _name.decode("utf-8")
        cacheID = self.broker.cachedRemotelyAs(self.cached)
        if cacheID is None:
            from twisted.internet.defer import fail

            return fail(ProtocolError("the peer does not hold this cache (any more)"))
        return self.broker.sendMessage(b"cache", self.perspective, cacheID, _name, args, kw)

    def remoteMethod(self, key: str) -> Callable[..., Deferred[Any]]:
        """
        A callable that calls C{observe_<key>} on the peer's copy.
        """

        def call(*args: Any, **kw: Any) -> Deferred[Any]:
            return self.callRemote(key, *args, **kw)

        return call
