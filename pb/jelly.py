"""
Jelly: turning Python values into PB s-expressions and back.

This is the serialization layer of Perspective Broker, wire-compatible with
Twisted's ``twisted.spread.jelly`` (the same s-expressions for the same values,
including shared and recursive structures), and sans-IO like L{pb.banana}.

It differs from Twisted's in what it trusts:

  - Receiving never imports anything.  The only instances it builds are of
    classes registered in a L{TypeRegistry}: the default one (filled by the
    module-level L{setUnjellyableForClass}) or one given to a broker, so two
    brokers in one process can accept different classes.  The legacy
    C{class}, C{module}, C{function}, C{method}, C{instance} and C{persistent}
    atoms are refused.
  - Sending a value that cannot be serialized raises L{JellyError} at the
    sender, instead of silently sending an C{Unpersistable}.
  - A registry can opt in to inert generic holders (L{GenericCopy}) for type
    tags it does not know, instead of refusing them.
"""

from __future__ import annotations

import datetime
import decimal
import gc
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.persisted.crefutil import (
    NotKnown,
    _Container,
    _Dereference,
    _DictKeyAndValue,
)

from .banana import SIZE_LIMIT, rawUnicode
from .banana import _rawUnicodeCache as _rawCache

__all__ = [
    "DEFAULT_REGISTRY",
    "GenericCopy",
    "InsecureJelly",
    "JellyError",
    "Jellyable",
    "TypeRegistry",
    "Unjellyable",
    "Unpersistable",
    "jelly",
    "qual",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClass",
    "setUnjellyableForClassTree",
    "unjelly",
]

None_atom = b"None"
dereference_atom = b"dereference"
reference_atom = b"reference"
dictionary_atom = b"dictionary"
list_atom = b"list"
set_atom = b"set"
tuple_atom = b"tuple"
frozenset_atom = b"frozenset"
unpersistable_atom = b"unpersistable"
unicode_atom = b"unicode"


class InsecureJelly(Exception):
    """
    A received s-expression names a type this side does not accept.

    The broker reports it to the caller of the one call it arrived in; the
    connection goes on.
    """


class JellyError(TypeError):
    """
    A value cannot be serialized; raised at the sender, before anything is sent.
    """


def qual(cls: type) -> str:
    """
    The fully qualified name of a class, as Twisted's C{reflect.qual} spells it.
    """
    return cls.__module__ + "." + cls.__qualname__


def _tagBytes(classname: str | bytes | type) -> bytes:
    if isinstance(classname, type):
        classname = qual(classname)
    if isinstance(classname, str):
        classname = classname.encode("utf-8")
    return classname


class Unpersistable:
    """
    What arrives in place of a value the peer marked as unpersistable.

    Twisted peers send these for values they could not serialize; we never
    send one ourselves.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unpersistable({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unpersistable) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)


class GenericCopy:
    """
    An inert copy of a Copyable whose type tag the receiver has no class for.

    Only brokers that opt in (C{TypeRegistry(allowGeneric=True)}) build these;
    the gateway uses them to mirror any service's values.  Sending one back
    sends the same type tag and state again.
    """

    def __init__(self, typeName: str, state: Any) -> None:
        self.typeName = typeName
        self.state = state

    def __repr__(self) -> str:
        return f"GenericCopy({self.typeName!r}, {self.state!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GenericCopy)
            and other.typeName == self.typeName
            and other.state == self.state
        )

    def __hash__(self) -> int:
        return hash(self.typeName)

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        sxp = jellier.prepare(self)
        sxp.extend([self.typeName.encode("utf-8"), jellier.jelly(self.state)])
        return jellier.preserve(self, sxp)


class Jellyable:
    """
    Inherit from me to control how you are serialized.

    The default sends C{[qualified class name, state]} with the state from
    L{getStateFor}; a registered L{Unjellyable} rebuilds it on the other side.
    """

    def getStateFor(self, jellier: Jellier) -> Any:
        return self.__dict__

    def jellyFor(self, jellier: Jellier) -> Any:
        sxp = jellier.prepare(self)
        sxp.extend([qual(self.__class__).encode("utf-8"), jellier.jelly(self.getStateFor(jellier))])
        return jellier.preserve(self, sxp)


class Unjellyable:
    """
    Inherit from me to control how you are rebuilt from an s-expression.
    """

    def setStateFor(self, unjellier: Unjellier, state: Any) -> None:
        self.__dict__ = state

    def unjellyFor(self, unjellier: Unjellier, jellyList: list[Any]) -> Any:
        state = unjellier.unjelly(jellyList[1])
        self.setStateFor(unjellier, state)
        return self


def _newInstance(cls: Any, state: Any) -> Any:
    instance = cls.__new__(cls)
    setter = getattr(instance, "__setstate__", None)
    if setter is not None:
        setter(state)
    elif isinstance(state, dict):
        instance.__dict__ = state
    else:
        raise InsecureJelly(f"state of {qual(cls)} must be a dictionary")
    return instance


_Entry = tuple[str, Any]
"""A registry entry: (C{"class"}, cls) or (C{"factory"}, callable)."""


class TypeRegistry:
    """
    Which type tags a broker accepts, and what local class represents each.

    Registries chain: a lookup that misses here asks C{inherit}.  The module
    level L{DEFAULT_REGISTRY} is what L{setUnjellyableForClass} fills and what
    brokers use unless given their own; C{TypeRegistry()} inherits from it,
    C{TypeRegistry(inherit=None)} starts empty.

    @ivar allowGeneric: mirror unknown Copyable and Cacheable tags as inert
        holders (L{GenericCopy}, L{pb.flavors.GenericRemoteCache}) instead of
        refusing them.
    """

    def __init__(
        self, inherit: TypeRegistry | object | None = ..., allowGeneric: bool = False
    ) -> None:
        if inherit is ...:
            inherit = DEFAULT_REGISTRY if "DEFAULT_REGISTRY" in globals() else None
        self.inherit: TypeRegistry | None = inherit  # type: ignore[assignment]
        self.allowGeneric = allowGeneric
        self._entries: dict[bytes, _Entry] = {}
        self._instanceClasses: set[type] = set()

    def setUnjellyableForClass(self, classname: str | bytes | type, unjellyable: Any) -> None:
        """
        Represent the remote type C{classname} by C{unjellyable}: a class (a
        L{RemoteCopy}/L{RemoteCache} subclass or any L{Unjellyable}) or a
        function C{(unjellier, jellyList) -> object}.
        """
        self._entries[_tagBytes(classname)] = ("class", unjellyable)

    def setUnjellyableFactoryForClass(
        self, classname: str | bytes | type, copyFactory: Callable[[Any], Any]
    ) -> None:
        """
        Build the remote type C{classname} by calling C{copyFactory(state)}.
        """
        self._entries[_tagBytes(classname)] = ("factory", copyFactory)

    def setUnjellyableForClassTree(
        self, module: Any, baseClass: type, prefix: str | None = None
    ) -> None:
        """
        Register every subclass of C{baseClass} found in C{module} under
        C{prefix.ClassName} (the prefix defaults to the module's name).
        """
        if prefix is None:
            prefix = module.__name__
        if prefix:
            prefix = prefix + "."
        for name in dir(module):
            loaded = getattr(module, name)
            if isinstance(loaded, type) and issubclass(loaded, baseClass):
                self.setUnjellyableForClass(f"{prefix}{name}", loaded)

    def allowInstancesOf(self, *classes: type) -> None:
        """
        Allow plain instances of these classes in both directions: sent as
        C{[qualified name, __dict__ or __getstate__()]}, rebuilt without
        calling C{__init__}.
        """
        for cls in classes:
            self._instanceClasses.add(cls)
            self._entries.setdefault(_tagBytes(cls), ("class", cls))

    def unregister(self, classname: str | bytes | type) -> None:
        """
        Stop accepting C{classname} here (inherited entries are untouched).
        """
        self._entries.pop(_tagBytes(classname), None)

    def lookup(self, tag: bytes) -> _Entry | None:
        registry: TypeRegistry | None = self
        while registry is not None:
            entry = registry._entries.get(tag)
            if entry is not None:
                return entry
            registry = registry.inherit
        return None

    def isInstanceAllowed(self, cls: type) -> bool:
        registry: TypeRegistry | None = self
        while registry is not None:
            if cls in registry._instanceClasses:
                return True
            registry = registry.inherit
        return False


DEFAULT_REGISTRY = TypeRegistry(inherit=None)


def setUnjellyableForClass(classname: str | bytes | type, unjellyable: Any) -> None:
    """
    Register C{unjellyable} for the remote type C{classname} in the default
    registry, which every broker without a registry of its own uses.
    """
    DEFAULT_REGISTRY.setUnjellyableForClass(classname, unjellyable)


def setUnjellyableFactoryForClass(
    classname: str | bytes | type, copyFactory: Callable[[Any], Any]
) -> None:
    """
    Register a factory for the remote type C{classname} in the default registry.
    """
    DEFAULT_REGISTRY.setUnjellyableFactoryForClass(classname, copyFactory)


def setUnjellyableForClassTree(module: Any, baseClass: type, prefix: str | None = None) -> None:
    """
    Register a module's subclasses of C{baseClass} in the default registry.
    """
    DEFAULT_REGISTRY.setUnjellyableForClassTree(module, baseClass, prefix)


class Jellier:
    """
    The state of one serialization: which containers were seen, so that
    shared and recursive structures become C{reference}/C{dereference} pairs
    exactly as Twisted writes them.

    @ivar invoker: the broker doing the sending, or L{None} outside PB.
    """

    def __init__(
        self,
        invoker: Any = None,
        registry: TypeRegistry | None = None,
        wire: bool = False,
        sizeLimit: int = SIZE_LIMIT,
    ) -> None:
        self.invoker = invoker
        # For the wire (a broker), strings become pre-encoded banana tokens;
        # one longer than the size limit stays a list, for banana to refuse.
        self._text = wireText(sizeLimit) if wire else _sexpText
        self.registry = registry if registry is not None else DEFAULT_REGISTRY
        self.preserved: dict[int, list[Any]] = {}
        self.cooked: dict[int, list[Any]] = {}
        self.cooker: dict[int, Any] = {}
        self._refID = 1

    def _cook(self, obj: Any) -> list[Any]:
        aList = self.preserved[id(obj)]
        newList = list(aList)
        refid = self._refID
        self._refID += 1
        aList[:] = [reference_atom, refid, newList]
        self.cooked[id(obj)] = [dereference_atom, refid]
        return aList

    def prepare(self, obj: Any) -> list[Any]:
        """
        Start the s-expression of a container, so that references to it made
        while serializing its contents can be resolved.
        """
        self.preserved[id(obj)] = []
        self.cooker[id(obj)] = obj
        return []

    def preserve(self, obj: Any, sexp: list[Any]) -> list[Any]:
        """
        Finish the s-expression of a container started with L{prepare}.
        """
        oid = id(obj)
        if oid in self.cooked:
            self.preserved[oid][2] = sexp
            return self.preserved[oid]
        self.preserved[oid] = sexp
        return sexp

    def _seen(self, oid: int, obj: Any) -> list[Any] | None:
        cooked = self.cooked.get(oid)
        if cooked is not None:
            return cooked
        if oid in self.preserved:
            self._cook(obj)
            return self.cooked[oid]
        return None

    def jelly(self, obj: Any) -> Any:
        objType = type(obj)
        if objType is str:
            return self._text(obj)
        if objType is int or objType is float or objType is bytes:
            return obj
        if obj is None:
            return [None_atom]
        if objType is bool:
            return [b"boolean", b"true" if obj else b"false"]
        oid = id(obj)
        if oid in self.preserved:
            return self._seen(oid, obj)
        if objType is dict:
            self.preserved[oid] = []
            self.cooker[oid] = obj
            jelly = self.jelly
            sxp: list[Any] = [dictionary_atom]
            append = sxp.append
            for key, value in obj.items():
                append([jelly(key), jelly(value)])
            return self.preserve(obj, sxp)
        if objType is list:
            return self._jellyIterable(oid, list_atom, obj)
        if objType is tuple:
            return self._jellyIterable(oid, tuple_atom, obj)
        if objType is set:
            return self._jellyIterable(oid, set_atom, obj)
        if objType is frozenset:
            return self._jellyIterable(oid, frozenset_atom, obj)
        jellyFor = getattr(obj, "jellyFor", None)
        if jellyFor is not None and not isinstance(obj, type):
            return jellyFor(self)
        return self._jellyOther(obj, objType)

    def _jellyIterable(self, oid: int, atom: bytes, obj: Iterable[Any]) -> list[Any]:
        self.preserved[oid] = []
        self.cooker[oid] = obj
        jelly = self.jelly
        sxp: list[Any] = [atom]
        for item in obj:
            t = type(item)
            if t is int or t is float or t is bytes:
                sxp.append(item)
            elif t is str:
                sxp.append(self._text(item))
            else:
                sxp.append(jelly(item))
        return self.preserve(obj, sxp)

    def _jellyOther(self, obj: Any, objType: type) -> Any:
        if objType is datetime.datetime:
            if obj.tzinfo is not None:
                raise JellyError("cannot send a datetime with a tzinfo (PB has no time zones)")
            fields: tuple[int, ...] = (
                obj.year,
                obj.month,
                obj.day,
                obj.hour,
                obj.minute,
                obj.second,
                obj.microsecond,
            )
            return [b"datetime", " ".join(map(str, fields)).encode()]
        if objType is datetime.date:
            return [b"date", f"{obj.year} {obj.month} {obj.day}".encode()]
        if objType is datetime.time:
            if obj.tzinfo is not None:
                raise JellyError("cannot send a time with a tzinfo (PB has no time zones)")
            fields = (obj.hour, obj.minute, obj.second, obj.microsecond)
            return [b"time", " ".join(map(str, fields)).encode()]
        if objType is datetime.timedelta:
            return [b"timedelta", f"{obj.days} {obj.seconds} {obj.microseconds}".encode()]
        if objType is decimal.Decimal:
            if not obj.is_finite():
                raise JellyError(f"cannot send the non-finite Decimal {obj}")
            sign, digits, exponent = obj.as_tuple()
            value = 0
            for digit in digits:
                value = value * 10 + digit
            return [b"decimal", -value if sign else value, exponent]
        for base in _BASIC_TYPES:
            if isinstance(obj, base):
                # Subclasses of the basic types travel as the basic type.
                return self.jelly(base(obj))
        if self.registry.isInstanceAllowed(objType):
            sxp = self.prepare(obj)
            getstate = getattr(obj, "__getstate__", None)
            state = getstate() if getstate is not None else obj.__dict__
            sxp.extend([qual(objType).encode("utf-8"), self.jelly(state)])
            return self.preserve(obj, sxp)
        raise JellyError(
            f"cannot send {qual(objType)} objects: make the class a pb.Copyable, "
            f"pb.Referenceable or pb.Cacheable, or allow it with "
            f"TypeRegistry.allowInstancesOf ({obj!r:.80})"
        )


_BASIC_TYPES: tuple[Any, ...] = (bool, int, float, str, bytes, dict, list, tuple, set, frozenset)


def _sexpText(text: str) -> list[bytes]:
    return [unicode_atom, text.encode("utf-8")]


def wireText(sizeLimit: int) -> Callable[[str], Any]:
    """
    How a broker's jellier writes a string: as pre-encoded banana tokens
    (L{pb.banana.Raw}), or as a C{unicode} s-expression when it is longer
    than C{sizeLimit} (for banana to refuse) or is a vocabulary word.
    """
    if sizeLimit < 32:
        return lambda text: rawUnicode(text, sizeLimit) or _sexpText(text)

    def text(text: str) -> Any:
        return _rawCache.get(text) or rawUnicode(text, sizeLimit) or _sexpText(text)

    return text


# -- plain values -------------------------------------------------------------
#
# Most PB calls carry only plain values: ints, floats, strings, bytes, bools,
# None, and a few small lists, tuples and dicts of them.  For those, a
# Jellier's or an Unjellier's bookkeeping (the tables of shared containers,
# the post-unjelly hooks) is pure cost, and building the two objects costs
# more than the work itself.  The functions below turn such values into
# exactly the s-expression a Jellier would (or back into exactly the value an
# Unjellier would), and give up with NOT_PLAIN, having changed nothing, on
# anything else: another type, a container met twice (which jelly writes as
# a reference), or more than _PLAIN_ITEMS items in all, so that the work
# wasted before giving up stays small.

NOT_PLAIN: Any = object()
"""What L{jellyPlain} and L{unjellyPlain} return for a value that is not plain."""

_PLAIN_ITEMS = 64

_TRUE = b"true"
_FALSE = b"false"
_BOOLEAN = b"boolean"


def jellyPlain(obj: Any, text: Callable[[str], Any] = _sexpText) -> Any:
    """
    The s-expression C{Jellier(wire=...).jelly(obj)} makes of a plain value,
    or L{NOT_PLAIN}.

    @param text: how strings are written: L{wireText} as a broker's jellier
        does, or by default as C{unicode} s-expressions.
    """
    kind = type(obj)
    if kind is int or kind is float or kind is bytes:
        return obj
    if kind is str:
        return text(obj)
    if kind is tuple or kind is list:
        if len(obj) > _PLAIN_ITEMS:
            return NOT_PLAIN
        sxp: list[Any] = [tuple_atom if kind is tuple else list_atom]
        append = sxp.append
        for item in obj:
            itemKind = type(item)
            if itemKind is int or itemKind is float or itemKind is bytes:
                append(item)
            elif itemKind is str:
                append(text(item))
            else:
                return _jellyPlainNested(obj, text, set(), [_PLAIN_ITEMS])
        return sxp
    if kind is dict:
        if not obj:
            return [dictionary_atom]
        return _jellyPlainNested(obj, text, set(), [_PLAIN_ITEMS])
    if obj is None:
        return [None_atom]
    if kind is bool:
        return [_BOOLEAN, _TRUE if obj else _FALSE]
    return NOT_PLAIN


def _jellyPlainNested(
    obj: Any, text: Callable[[str], Any], seen: set[int], budget: list[int]
) -> Any:
    """
    L{jellyPlain} for values with containers inside: C{seen} holds the ids of
    the containers met so far, C{budget} how many more items may be taken.
    """
    kind = type(obj)
    if kind is int or kind is float or kind is bytes:
        return obj
    if kind is str:
        return text(obj)
    if obj is None:
        return [None_atom]
    if kind is bool:
        return [_BOOLEAN, _TRUE if obj else _FALSE]
    if kind is not tuple and kind is not list and kind is not dict:
        return NOT_PLAIN
    oid = id(obj)
    if oid in seen:
        return NOT_PLAIN
    seen.add(oid)
    budget[0] -= len(obj)
    if budget[0] < 0:
        return NOT_PLAIN
    if kind is dict:
        sxp: list[Any] = [dictionary_atom]
        for key, value in obj.items():
            key = _jellyPlainNested(key, text, seen, budget)
            if key is NOT_PLAIN:
                return NOT_PLAIN
            value = _jellyPlainNested(value, text, seen, budget)
            if value is NOT_PLAIN:
                return NOT_PLAIN
            sxp.append([key, value])
        return sxp
    sxp = [tuple_atom if kind is tuple else list_atom]
    for item in obj:
        item = _jellyPlainNested(item, text, seen, budget)
        if item is NOT_PLAIN:
            return NOT_PLAIN
        sxp.append(item)
    return sxp


def unjellyPlain(sexp: Any) -> Any:
    """
    The value an L{Unjellier} (with the base atoms, or a broker's) rebuilds
    from the s-expression of a plain value, or L{NOT_PLAIN}.
    """
    if type(sexp) is not list:
        return sexp
    if not sexp:
        return NOT_PLAIN
    tag = sexp[0]
    if tag == tuple_atom or tag == list_atom:
        if len(sexp) > _PLAIN_ITEMS + 1:
            return NOT_PLAIN
        items = sexp[1:]
        for item in items:
            if type(item) is list:
                return _unjellyPlainNested(sexp, [_PLAIN_ITEMS])
        return tuple(items) if tag == tuple_atom else items
    if tag == dictionary_atom and len(sexp) == 1:
        return {}
    return _unjellyPlainNested(sexp, [_PLAIN_ITEMS])


def _unjellyPlainNested(sexp: list[Any], budget: list[int]) -> Any:
    """
    L{unjellyPlain} for s-expressions with lists inside: C{budget} is how
    many more items may be taken.
    """
    if not sexp:
        return NOT_PLAIN
    tag = sexp[0]
    size = len(sexp)
    if tag == unicode_atom:
        raw = sexp[1] if size == 2 else None
        if type(raw) is not bytes:
            return NOT_PLAIN
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return NOT_PLAIN
    budget[0] -= size - 1
    if budget[0] < 0:
        return NOT_PLAIN
    if tag == tuple_atom or tag == list_atom:
        items = sexp[1:]
        for index, item in enumerate(items):
            if type(item) is list:
                item = _unjellyPlainNested(item, budget)
                if item is NOT_PLAIN:
                    return NOT_PLAIN
                items[index] = item
        return tuple(items) if tag == tuple_atom else items
    if tag == dictionary_atom:
        result: dict[Any, Any] = {}
        for pair in sexp[1:]:
            if type(pair) is not list or len(pair) != 2:
                return NOT_PLAIN
            key, value = pair
            if type(key) is list:
                key = _unjellyPlainNested(key, budget)
                if key is NOT_PLAIN:
                    return NOT_PLAIN
            if type(value) is list:
                value = _unjellyPlainNested(value, budget)
                if value is NOT_PLAIN:
                    return NOT_PLAIN
            try:
                result[key] = value
            except TypeError:
                return NOT_PLAIN
        return result
    if tag == None_atom:
        return None
    if tag == _BOOLEAN and size == 2:
        if sexp[1] == _TRUE:
            return True
        if sexp[1] == _FALSE:
            return False
    return NOT_PLAIN


class Unjellier:
    """
    The state of one deserialization: references seen so far, post-unjelly
    hooks, and the broker (C{invoker}) that resolves PB's reference atoms.
    """

    def __init__(
        self,
        invoker: Any = None,
        registry: TypeRegistry | None = None,
        atoms: dict[bytes, Callable[[Unjellier, list[Any]], Any]] | None = None,
    ) -> None:
        self.invoker = invoker
        self.registry = registry if registry is not None else DEFAULT_REGISTRY
        self.references: dict[int, Any] = {}
        self.postCallbacks: list[Callable[[], Any]] = []
        self._placeholders = False
        self._atoms = atoms if atoms is not None else BASE_ATOMS

    def unjellyFull(self, obj: Any) -> Any:
        result = self.unjelly(obj)
        if self._placeholders:
            for refid, value in self.references.items():
                if isinstance(value, NotKnown) and not getattr(value, "resolved", False):
                    raise InsecureJelly(f"dereference of undefined reference {refid}")
        for callback in self.postCallbacks:
            callback()
        return result

    def unjelly(self, obj: Any) -> Any:
        if type(obj) is not list:
            return obj
        if not obj:
            raise InsecureJelly("empty s-expression")
        tag = obj[0]
        handler = self._atoms.get(tag)
        if handler is not None:
            return handler(self, obj)
        if type(tag) is not bytes:
            raise InsecureJelly(f"s-expression tag must be bytes, not {type(tag).__name__}")
        return self._unjellyRegistered(tag, obj)

    def _unjellyRegistered(self, tag: bytes, obj: list[Any]) -> Any:
        entry = self.registry.lookup(tag)
        if entry is None:
            if self.registry.allowGeneric:
                return self._unjellyGeneric(tag, obj)
            if self.invoker is not None and len(obj) == 3 and type(obj[1]) is int:
                # An unknown Cacheable: release it at once, so the sender's
                # observer does not outlive this refusal.
                self.invoker.refuseCache(obj[1])
            raise InsecureJelly(f"type not allowed here: {tag.decode('utf-8', 'replace')!r}")
        kind, thing = entry
        if kind == "factory":
            if len(obj) < 2:
                raise InsecureJelly(f"{tag!r} s-expression has no state")
            return self._postUnjelly(thing(self.unjelly(obj[1])))
        if isinstance(thing, type):
            unjellyFor = getattr(thing, "unjellyFor", None)
            if unjellyFor is not None:
                blank: Any = cast(Any, thing).__new__(thing)
                return self._postUnjelly(blank.unjellyFor(self, obj))
            if len(obj) < 2:
                raise InsecureJelly(f"{tag!r} s-expression has no state")
            return self._postUnjelly(_newInstance(thing, self.unjelly(obj[1])))
        return self._postUnjelly(thing(self, obj))

    def _unjellyGeneric(self, tag: bytes, obj: list[Any]) -> Any:
        typeName = tag.decode("utf-8", "replace")
        if len(obj) == 3 and type(obj[1]) is int and self.invoker is not None:
            return self.invoker.unjellyGenericCache(self, typeName, obj[1], obj[2])
        if len(obj) != 2:
            raise InsecureJelly(f"malformed s-expression for {typeName!r}")
        return GenericCopy(typeName, self.unjelly(obj[1]))

    def _postUnjelly(self, unjellied: Any) -> Any:
        hook = getattr(unjellied, "postUnjelly", None)
        if hook is not None:
            self.postCallbacks.append(hook)
        return unjellied

    def _unjellyNone(self, exp: list[Any]) -> None:
        return None

    def _unjellyUnicode(self, exp: list[Any]) -> str:
        raw = exp[1]
        if type(raw) is not bytes:
            raise InsecureJelly("unicode atom without bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InsecureJelly(f"invalid UTF-8 in a string: {e}") from None

    def _unjellyBoolean(self, exp: list[Any]) -> bool:
        if exp[1] == b"true":
            return True
        if exp[1] == b"false":
            return False
        raise InsecureJelly(f"bad boolean {exp[1]!r}")

    def _fields(self, exp: list[Any], count: int) -> list[int]:
        try:
            fields = [int(x) for x in exp[1].split()]
        except (AttributeError, ValueError, IndexError):
            raise InsecureJelly(f"bad {exp[0].decode()} value") from None
        if len(fields) != count:
            raise InsecureJelly(f"bad {exp[0].decode()} value")
        return fields

    def _unjellyDatetime(self, exp: list[Any]) -> datetime.datetime:
        try:
            y, mo, d, h, mi, s, us = self._fields(exp, 7)
            return datetime.datetime(y, mo, d, h, mi, s, us)
        except (ValueError, OverflowError) as e:
            raise InsecureJelly(f"bad datetime: {e}") from None

    def _unjellyDate(self, exp: list[Any]) -> datetime.date:
        try:
            return datetime.date(*self._fields(exp, 3))
        except (ValueError, OverflowError) as e:
            raise InsecureJelly(f"bad date: {e}") from None

    def _unjellyTime(self, exp: list[Any]) -> datetime.time:
        try:
            h, mi, s, us = self._fields(exp, 4)
            return datetime.time(h, mi, s, us)
        except (ValueError, OverflowError) as e:
            raise InsecureJelly(f"bad time: {e}") from None

    def _unjellyTimedelta(self, exp: list[Any]) -> datetime.timedelta:
        days, seconds, microseconds = self._fields(exp, 3)
        try:
            return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)
        except OverflowError as e:
            raise InsecureJelly(f"bad timedelta: {e}") from None

    def _unjellyDecimal(self, exp: list[Any]) -> decimal.Decimal:
        if len(exp) != 3 or type(exp[1]) is not int or type(exp[2]) is not int:
            raise InsecureJelly("bad decimal")
        value, exponent = exp[1], exp[2]
        digits = decimal.Decimal(abs(value)).as_tuple().digits
        return decimal.Decimal((1 if value < 0 else 0, digits, exponent))

    def _unjellyUnpersistable(self, exp: list[Any]) -> Unpersistable:
        reason = exp[1] if len(exp) > 1 else b""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return Unpersistable(f"Unpersistable data: {reason}")

    def _items(self, exp: list[Any]) -> list[Any]:
        unjelly = self.unjelly
        return [item if type(item) is not list else unjelly(item) for item in exp[1:]]

    def _unjellyList(self, exp: list[Any]) -> list[Any]:
        result = self._items(exp)
        if self._placeholders:
            for index, value in enumerate(result):
                if isinstance(value, NotKnown):
                    value.addDependant(result, index)
        return result

    def _unjellyContainer(self, exp: list[Any], containerType: type) -> Any:
        items = self._items(exp)
        try:
            if self._placeholders and any(isinstance(v, NotKnown) for v in items):
                return _Container(items, containerType)
            return containerType(items)
        except TypeError as e:
            raise InsecureJelly(f"unhashable set member: {e}") from None

    def _unjellyTuple(self, exp: list[Any]) -> Any:
        return self._unjellyContainer(exp, tuple)

    def _unjellySet(self, exp: list[Any]) -> Any:
        return self._unjellyContainer(exp, set)

    def _unjellyFrozenset(self, exp: list[Any]) -> Any:
        return self._unjellyContainer(exp, frozenset)

    def _unjellyDictionary(self, exp: list[Any]) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        unjelly = self.unjelly
        try:
            for pair in exp[1:]:
                if type(pair) is not list or len(pair) != 2:
                    raise InsecureJelly("dictionary entries must be [key, value] pairs")
                key, value = pair
                if type(key) is list:
                    key = unjelly(key)
                if type(value) is list:
                    value = unjelly(value)
                if self._placeholders and (
                    isinstance(key, NotKnown) or isinstance(value, NotKnown)
                ):
                    entry = _DictKeyAndValue(result)
                    for index, part in ((0, key), (1, value)):
                        if isinstance(part, NotKnown):
                            part.addDependant(entry, index)
                        entry[index] = part
                else:
                    result[key] = value
        except TypeError as e:
            raise InsecureJelly(f"unhashable dictionary key: {e}") from None
        return result

    def _unjellyReference(self, exp: list[Any]) -> Any:
        if len(exp) != 3 or type(exp[1]) is not int:
            raise InsecureJelly("malformed reference")
        refid = exp[1]
        value = self.unjelly(exp[2])
        known = self.references.get(refid)
        if known is None:
            self.references[refid] = value
        elif isinstance(known, NotKnown):
            known.resolveDependants(value)
            self.references[refid] = value
        else:
            raise InsecureJelly(f"reference {refid} defined twice")
        return value

    def _unjellyDereference(self, exp: list[Any]) -> Any:
        if len(exp) != 2 or type(exp[1]) is not int:
            raise InsecureJelly("malformed dereference")
        refid = exp[1]
        known = self.references.get(refid)
        if known is not None:
            if isinstance(known, NotKnown) and getattr(known, "resolved", False):
                return known.resolvedObject
            return known
        self._placeholders = True
        placeholder = _Dereference(refid)
        self.references[refid] = placeholder
        return placeholder


BASE_ATOMS: dict[bytes, Callable[[Unjellier, list[Any]], Any]] = {
    None_atom: Unjellier._unjellyNone,
    unicode_atom: Unjellier._unjellyUnicode,
    b"boolean": Unjellier._unjellyBoolean,
    list_atom: Unjellier._unjellyList,
    tuple_atom: Unjellier._unjellyTuple,
    dictionary_atom: Unjellier._unjellyDictionary,
    set_atom: Unjellier._unjellySet,
    frozenset_atom: Unjellier._unjellyFrozenset,
    reference_atom: Unjellier._unjellyReference,
    dereference_atom: Unjellier._unjellyDereference,
    b"datetime": Unjellier._unjellyDatetime,
    b"date": Unjellier._unjellyDate,
    b"time": Unjellier._unjellyTime,
    b"timedelta": Unjellier._unjellyTimedelta,
    b"decimal": Unjellier._unjellyDecimal,
    unpersistable_atom: Unjellier._unjellyUnpersistable,
}
"""The atoms every unjellier understands; brokers add PB's reference atoms."""


def jelly(obj: Any, invoker: Any = None, registry: TypeRegistry | None = None) -> Any:
    """
    Serialize C{obj} to an s-expression (lists, bytes, ints and floats), ready
    for L{pb.banana.encode}.

    @raise JellyError: C{obj} holds something that cannot be sent.
    """
    sexp = jellyPlain(obj)
    if sexp is not NOT_PLAIN:
        return sexp
    if not gc.isenabled():
        return Jellier(invoker, registry).jelly(obj)
    gc.disable()
    try:
        return Jellier(invoker, registry).jelly(obj)
    finally:
        gc.enable()


def unjelly(
    sexp: Any,
    invoker: Any = None,
    registry: TypeRegistry | None = None,
    atoms: dict[bytes, Callable[[Unjellier, list[Any]], Any]] | None = None,
) -> Any:
    """
    Rebuild a value from an s-expression, building only the classes that
    C{registry} (by default L{DEFAULT_REGISTRY}) allows.

    @raise InsecureJelly: the s-expression names a type that is not allowed,
        or is malformed.
    """
    if atoms is None:
        value = unjellyPlain(sexp)
        if value is not NOT_PLAIN:
            return value
    paused = gc.isenabled()
    if paused:
        # Paused before anything is allocated: a collection now would scan
        # the s-expression just decoded.
        gc.disable()
    try:
        return Unjellier(invoker, registry, atoms).unjellyFull(sexp)
    except (IndexError, KeyError, ValueError, AttributeError) as e:
        raise InsecureJelly(f"malformed s-expression: {e!r}") from None
    finally:
        if paused:
            gc.enable()
