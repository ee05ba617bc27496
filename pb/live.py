"""
Live objects: ready-made L{Cacheable}s that a service changes and every
observer follows, the kind of state a dashboard shows.

A L{LiveDict} (a mapping) or L{LiveList} (an ordered list) is sent like any
Cacheable.  Each peer that receives it becomes an observer: it first gets the
state C{{"seq": n, "value": <dict or list>}}, then every change as one small
delta, a call of an C{observe_*} method whose first argument is the new
sequence number.  The deltas are a fixed vocabulary of seven methods (see
L{applyDelta}), so that native clients (L{LiveDictMirror}, L{LiveListMirror}),
Twisted clients and the web gateway all keep their copies the same way.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import DeadReferenceError, PBConnectionLost
from .flavors import Cacheable, RemoteCache, RemoteCacheObserver
from .jelly import setUnjellyableForClass

__all__ = [
    "DELTA_METHODS",
    "LiveDict",
    "LiveDictMirror",
    "LiveList",
    "LiveListMirror",
    "applyDelta",
]

_DICT_DELTAS = ("observe_set", "observe_update", "observe_delete", "observe_reset")
_LIST_DELTAS = ("observe_insert", "observe_replace", "observe_remove", "observe_reset")

DELTA_METHODS: frozenset[str] = frozenset(_DICT_DELTAS + _LIST_DELTAS)
"""The names of every delta method, as the mirror's C{observe_*} methods spell them."""

ChangeCallback = Callable[[Any, str, tuple[Any, ...]], Any]
"""C{callback(mirror, method, args)}: what L{LiveDictMirror.onChange} accepts."""


# -- the pure delta codec -------------------------------------------------------


def _isSeq(seq: Any) -> bool:
    return type(seq) is int


def _index(value: list[Any], index: Any, *, end: bool) -> int:
    """
    Check a delta's list index: C{0 <= index < len}, or C{<= len} when C{end}.
    """
    if type(index) is not int:
        raise ValueError(f"list index must be an int, not {type(index).__name__}")
    limit = len(value) if end else len(value) - 1
    if not 0 <= index <= limit:
        raise ValueError(f"list index {index} out of range for a list of {len(value)}")
    return index


def _arity(method: str, args: tuple[Any, ...], count: int) -> None:
    if len(args) != count:
        raise ValueError(f"{method} takes {count} arguments (seq first), not {len(args)}")


def _expect(value: Any, kind: type, method: str) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{method} applies to a {kind.__name__}, not a {type(value).__name__}")


def applyDelta(value: Any, method: str, args: tuple[Any, ...] | list[Any]) -> Any:
    """
    Apply one delta to a plain C{dict} or C{list} and return the result.

    C{value} is changed in place (so references to it stay current) and
    returned.  C{method} is the C{observe_*} name and C{args} the call's
    positional arguments, the new sequence number first:

      - C{observe_set(seq, key, value)}: C{d[key] = value} (dict)
      - C{observe_update(seq, changes)}: C{d.update(changes)} (dict)
      - C{observe_delete(seq, key)}: C{del d[key]}, the key must exist (dict)
      - C{observe_insert(seq, index, value)}: C{l.insert(index, value)},
        C{0 <= index <= len(l)} (list; append is insert at C{len(l)})
      - C{observe_replace(seq, index, value)}: C{l[index] = value},
        C{0 <= index < len(l)} (list)
      - C{observe_remove(seq, index)}: C{del l[index]},
        C{0 <= index < len(l)} (list)
      - C{observe_reset(seq, value)}: replace the whole content with
        C{value}, of the same kind (dict or list)

    The sequence number is only checked to be an C{int}; detecting gaps is
    the caller's business.

    @raise ValueError: the method is unknown, or does not apply to this
        kind of value, or its arguments are malformed (wrong number, index
        not an int or out of range, unhashable or missing key).
    """
    if not isinstance(method, str) or method not in DELTA_METHODS:
        raise ValueError(f"unknown delta method {method!r}")
    if not isinstance(args, (tuple, list)):
        raise ValueError(f"{method} arguments must be a tuple, not {type(args).__name__}")
    args = tuple(args)
    if not args or not _isSeq(args[0]):
        raise ValueError(f"{method} needs the sequence number (an int) as first argument")
    if method == "observe_reset":
        _arity(method, args, 2)
        new = args[1]
        if isinstance(value, dict):
            _expect(new, dict, method)
            value.clear()
            value.update(new)
        elif isinstance(value, list):
            _expect(new, list, method)
            value[:] = new
        else:
            raise ValueError(f"{method} applies to a dict or a list, not {type(value).__name__}")
        return value
    if method in _DICT_DELTAS:
        _expect(value, dict, method)
        try:
            if method == "observe_set":
                _arity(method, args, 3)
                value[args[1]] = args[2]
            elif method == "observe_update":
                _arity(method, args, 2)
                _expect(args[1], dict, method + " changes")
                value.update(args[1])
            else:
                _arity(method, args, 2)
                if args[1] not in value:
                    raise ValueError(f"{method}: no key {args[1]!r}")
                del value[args[1]]
        except TypeError as e:
            raise ValueError(f"{method}: {e}") from None
        return value
    _expect(value, list, method)
    if method == "observe_insert":
        _arity(method, args, 3)
        value.insert(_index(value, args[1], end=True), args[2])
    elif method == "observe_replace":
        _arity(method, args, 3)
        value[_index(value, args[1], end=False)] = args[2]
    else:
        _arity(method, args, 2)
        del value[_index(value, args[1], end=False)]
    return value


def _same(a: Any, b: Any) -> bool:
    """
    Whether sending C{b} in place of C{a} would change nothing: equal, and of
    the same types all the way down (C{1}, C{1.0} and C{True} are equal in
    Python but not to a JSON client).
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(map(_same, a, b))
        return bool(a == b)
    except Exception:
        # Uncomparable (or too deep to compare): assume it changed.
        return False


def _parseState(state: Any, kind: type) -> tuple[int, Any]:
    if not isinstance(state, dict):
        raise ValueError(f"live object state must be a dict, not {type(state).__name__}")
    seq: Any = state.get("seq")
    value: Any = state.get("value")
    if not _isSeq(seq) or not isinstance(value, kind):
        raise ValueError(f"live object state must be {{'seq': int, 'value': {kind.__name__}}}")
    return seq, value


# -- the server side ------------------------------------------------------------


class _LiveObject(Cacheable, metaclass=abc.ABCMeta):
    """
    What L{LiveDict} and L{LiveList} share: the sequence number, the
    observers, and sending a delta to each of them.
    """

    log = Logger()
    typeName: ClassVar[str]

    def __init__(self) -> None:
        self.seq = 0
        self._observers: set[RemoteCacheObserver] = set()

    @property
    def observers(self) -> frozenset[RemoteCacheObserver]:
        """
        The peers currently told of changes, one per connection.
        """
        return frozenset(self._observers)

    @abc.abstractmethod
    def snapshot(self) -> Any:
        """
        A copy of the current value (a dict or a list).
        """

    def getTypeToCopy(self) -> bytes:
        # Subclasses keep the tag, so every client mirrors them as the base.
        return self.typeName.encode("utf-8")

    def getStateToCopy(self) -> dict[str, Any]:
        # Sent outside a broker (no observer): the same state, frozen.
        return {"seq": self.seq, "value": self.snapshot()}

    def getStateToCacheAndObserveFor(
        self, perspective: Any, observer: RemoteCacheObserver
    ) -> dict[str, Any]:
        self._observers.add(observer)
        return self.getStateToCopy()

    def stoppedObserving(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self._observers.discard(observer)

    def _publish(self, name: str, *args: Any) -> None:
        """
        Count one delta and send C{observe_<name>(seq, *args)} to every
        observer, without waiting for any answer (PB keeps the order of
        calls on one connection).
        """
        self.seq += 1
        seq = self.seq
        for observer in list(self._observers):
            d: Deferred[Any]
            try:
                d = observer.callRemote(name, seq, *args)
            except Exception:
                d = fail()
            d.addErrback(self._observerFailed, observer, name, seq)

    def _observerFailed(
        self, failure: Failure, observer: RemoteCacheObserver, name: str, seq: int
    ) -> None:
        """
        A delta did not reach C{observer}: stop telling it, leaving the
        others alone.
        """
        self._observers.discard(observer)
        if failure.check(DeadReferenceError, PBConnectionLost):
            self.log.info(
                "Dropped observer {observer} of {live}: connection lost before delta {seq}",
                observer=observer,
                live=self,
                seq=seq,
            )
            return
        self.log.failure(
            "Dropped observer {observer} of {live}: delta {seq} ({name}) failed",
            failure,
            observer=observer,
            live=self,
            seq=seq,
            name=name,
        )


class LiveDict(_LiveObject):
    """
    A mapping whose observers follow every change.

    Keys should be strings (web clients see JSON objects); values may be
    anything PB can send.  Values are treated as immutable: changing a value
    in place sends nothing, so set it again instead.  A change that leaves
    the mapping equal (same values, same types) sends nothing.
    """

    typeName: ClassVar[str] = "pb.live.LiveDict"

    def __init__(self, initial: Mapping[Any, Any] | None = None) -> None:
        super().__init__()
        self._value: dict[Any, Any] = dict(initial) if initial is not None else {}

    def __repr__(self) -> str:
        return (
            f"<LiveDict seq={self.seq} keys={len(self._value)} observers={len(self._observers)}>"
        )

    # -- reading

    def __getitem__(self, key: Any) -> Any:
        return self._value[key]

    def __contains__(self, key: object) -> bool:
        return key in self._value

    def __len__(self) -> int:
        return len(self._value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._value)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._value.get(key, default)

    def keys(self) -> list[Any]:
        return list(self._value)

    def values(self) -> list[Any]:
        return list(self._value.values())

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._value.items())

    def snapshot(self) -> dict[Any, Any]:
        """
        A copy of the current content.
        """
        return dict(self._value)

    # -- changing

    def set(self, key: Any, value: Any) -> None:
        """
        Set one key; observers get C{observe_set(seq, key, value)}.
        """
        if key in self._value and _same(self._value[key], value):
            return
        self._value[key] = value
        self._publish("set", key, value)

    def update(self, changes: Mapping[Any, Any]) -> None:
        """
        Set several keys at once; observers get one
        C{observe_update(seq, changes)} holding only the keys that changed.
        """
        changed = {
            key: value
            for key, value in changes.items()
            if key not in self._value or not _same(self._value[key], value)
        }
        if not changed:
            return
        self._value.update(changed)
        self._publish("update", changed)

    def delete(self, key: Any) -> None:
        """
        Remove a key; observers get C{observe_delete(seq, key)}.

        @raise KeyError: there is no such key.
        """
        del self._value[key]
        self._publish("delete", key)

    def reset(self, newValue: Mapping[Any, Any]) -> None:
        """
        Replace the whole content; observers get C{observe_reset(seq, value)}.
        """
        new = dict(newValue)
        if _same(self._value, new):
            return
        self._value = new
        self._publish("reset", new)


class LiveList(_LiveObject):
    """
    An ordered list (of records, say) whose observers follow every change.

    Indexes may be negative as in Python; deltas always carry the resulting
    non-negative index.  Values are treated as immutable, and a change that
    leaves the list equal sends nothing.
    """

    typeName: ClassVar[str] = "pb.live.LiveList"

    def __init__(self, initial: Iterable[Any] | None = None) -> None:
        super().__init__()
        self._value: list[Any] = list(initial) if initial is not None else []

    def __repr__(self) -> str:
        return f"<LiveList seq={self.seq} len={len(self._value)} observers={len(self._observers)}>"

    # -- reading

    def __getitem__(self, index: Any) -> Any:
        return self._value[index]

    def __contains__(self, value: object) -> bool:
        return value in self._value

    def __len__(self) -> int:
        return len(self._value)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._value))

    def index(self, value: Any) -> int:
        return self._value.index(value)

    def snapshot(self) -> list[Any]:
        """
        A copy of the current content.
        """
        return list(self._value)

    # -- changing

    def _position(self, index: int, *, end: bool) -> int:
        if type(index) is not int:
            raise TypeError(f"list index must be an int, not {type(index).__name__}")
        size = len(self._value) + (1 if end else 0)
        position = index + len(self._value) if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(f"list index {index} out of range")
        return position

    def append(self, value: Any) -> None:
        """
        Add C{value} at the end; observers get C{observe_insert(seq, len, value)}.
        """
        self.insert(len(self._value), value)

    def insert(self, index: int, value: Any) -> None:
        """
        Insert C{value} before C{index} (C{len} appends); observers get
        C{observe_insert(seq, index, value)}.

        @raise IndexError: C{index} is beyond either end (unlike
            C{list.insert}, which clamps it).
        """
        position = self._position(index, end=True)
        self._value.insert(position, value)
        self._publish("insert", position, value)

    def replace(self, index: int, value: Any) -> None:
        """
        Replace the item at C{index}; observers get
        C{observe_replace(seq, index, value)}.
        """
        position = self._position(index, end=False)
        if _same(self._value[position], value):
            return
        self._value[position] = value
        self._publish("replace", position, value)

    def remove(self, index: int) -> Any:
        """
        Remove and return the item at C{index}; observers get
        C{observe_remove(seq, index)}.
        """
        position = self._position(index, end=False)
        removed = self._value.pop(position)
        self._publish("remove", position)
        return removed

    def reset(self, newValue: Iterable[Any]) -> None:
        """
        Replace the whole content; observers get C{observe_reset(seq, value)}.
        """
        new = list(newValue)
        if _same(self._value, new):
            return
        self._value = new
        self._publish("reset", new)


# -- the native client side -----------------------------------------------------


class _LiveMirror(RemoteCache):
    """
    What L{LiveDictMirror} and L{LiveListMirror} share.

    All copies of one cache share C{__dict__} (they are "borg" objects), so
    everything here, the callbacks included, lives in it.

    @ivar seq: the sequence number of the last delta received (or of the
        state, before any delta).
    @ivar value: the current content, a plain C{dict} or C{list}; its
        identity never changes, deltas change it in place.
    @ivar missed: a delta arrived out of sequence, or could not be applied:
        C{value} may differ from the server's.  Fetch the object again for a
        fresh copy.
    """

    log = Logger()
    kind: ClassVar[type]
    seq: int
    value: Any
    missed: bool

    def setCacheableState(self, state: Any) -> None:
        seq, value = _parseState(state, self.kind)
        self.seq = seq
        self.value = value
        self.missed = False
        self.__dict__.setdefault("_callbacks", [])

    def setCopyableState(self, state: Any) -> None:
        self.setCacheableState(state)

    def onChange(self, callback: ChangeCallback) -> None:
        """
        Call C{callback(mirror, method, args)} after each delta, with the
        C{observe_*} name and its arguments (seq first).  Check C{missed} to
        know whether the mirror may be out of date.
        """
        self.__dict__.setdefault("_callbacks", []).append(callback)

    def removeOnChange(self, callback: ChangeCallback) -> None:
        """
        Undo L{onChange}.
        """
        callbacks = self.__dict__.get("_callbacks", [])
        if callback in callbacks:
            callbacks.remove(callback)

    def _receive(self, method: str, args: tuple[Any, ...]) -> None:
        seq = args[0]
        if _isSeq(seq):
            if seq != self.seq + 1:
                self.missed = True
            self.seq = seq
        try:
            self.value = applyDelta(self.value, method, args)
        except ValueError as e:
            # Raising would only make the server drop us; saying so here
            # lets the application fetch a fresh copy.
            self.missed = True
            self.log.warn(
                "Could not apply {method} to {mirror}: {error}",
                method=method,
                mirror=self,
                error=str(e),
            )
        for callback in list(self.__dict__.get("_callbacks", [])):
            try:
                callback(self, method, args)
            except Exception:
                self.log.failure(
                    "Live object change callback {callback!r} failed", callback=callback
                )

    def observe_reset(self, seq: int, value: Any) -> None:
        self._receive("observe_reset", (seq, value))


class LiveDictMirror(_LiveMirror):
    """
    A native client's copy of a L{LiveDict}: C{value} is a plain dict.
    """

    kind = dict

    def __repr__(self) -> str:
        return (
            f"<LiveDictMirror seq={self.__dict__.get('seq')} missed={self.__dict__.get('missed')}>"
        )

    def observe_set(self, seq: int, key: Any, value: Any) -> None:
        self._receive("observe_set", (seq, key, value))

    def observe_update(self, seq: int, changes: dict[Any, Any]) -> None:
        self._receive("observe_update", (seq, changes))

    def observe_delete(self, seq: int, key: Any) -> None:
        self._receive("observe_delete", (seq, key))


class LiveListMirror(_LiveMirror):
    """
    A native client's copy of a L{LiveList}: C{value} is a plain list.
    """

    kind = list

    def __repr__(self) -> str:
        return (
            f"<LiveListMirror seq={self.__dict__.get('seq')} missed={self.__dict__.get('missed')}>"
        )

    def observe_insert(self, seq: int, index: int, value: Any) -> None:
        self._receive("observe_insert", (seq, index, value))

    def observe_replace(self, seq: int, index: int, value: Any) -> None:
        self._receive("observe_replace", (seq, index, value))

    def observe_remove(self, seq: int, index: int) -> None:
        self._receive("observe_remove", (seq, index))


setUnjellyableForClass(LiveDict.typeName, LiveDictMirror)
setUnjellyableForClass(LiveList.typeName, LiveListMirror)
