"""
The JSON value mapping: PB values to JSON and back, lossless both ways.

Plain JSON maps to None/bool/int/float/str/list/dict.  Everything else PB
carries is an object with one C{$}-key (see C{docs/json-mapping.md})::

    {"$bytes": base64}            {"$tuple": [...]}       {"$set": [...]}
    {"$frozenset": [...]}         {"$datetime": iso}      {"$date": iso}
    {"$time": iso}                {"$timedelta": seconds} {"$decimal": "1.10"}
    {"$float": "nan"|"inf"|"-inf"}
    {"$dict": [[key, value], ...]}            # non-string keys, or keys starting with "$"
    {"$ref": HANDLE}                          # a reference, by handle
    {"$copy": TYPE, "state": {...}}           # a Copyable
    {"$cache": HANDLE, "type": TYPE, "state": ..., "seq": N}   # a Cacheable
    {"$unpersistable": reason}                # what a Twisted peer could not send

REST, WebSocket and SSE all use this one codec; they differ only in framing.
Handles are looked up in the caller's session through L{Handles}, so a
handle of another session is simply unknown.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import math
from collections.abc import Callable
from typing import Any, Protocol

import pb

from .errors import BadRequest, GatewayError

__all__ = ["Handles", "dumps", "jsonFromPB", "loads", "pbFromJSON"]


class Handles(Protocol):
    """
    What the codec needs from a session: handles for references and caches.
    """

    def handleForRef(self, ref: pb.RemoteReference) -> str: ...

    def refForHandle(self, handle: str) -> pb.RemoteReference: ...

    def cacheJSON(self, cache: pb.GenericRemoteCache) -> dict[str, Any]: ...

    def cacheForHandle(self, handle: str) -> pb.GenericRemoteCache: ...


class UnmappableResult(GatewayError):
    """
    The broker answered with a value JSON cannot carry (e.g. a cycle).
    """

    type = "unmappable_result"
    status = 502
    rpcCode = -32022


_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _floatJSON(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return {"$float": "nan"}
    return {"$float": "inf" if value > 0 else "-inf"}


class _Encoder:
    def __init__(self, handles: Handles | None, tagTuples: bool) -> None:
        self.handles = handles
        self.tagTuples = tagTuples
        self.active: set[int] = set()

    def encode(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is float:
            return _floatJSON(value)
        handler = _ENCODERS.get(kind)
        if handler is not None:
            return handler(self, value)
        return self.encodeOther(value)

    def container(self, value: Any, build: Callable[[], Any]) -> Any:
        key = id(value)
        if key in self.active:
            raise UnmappableResult("the broker's value contains a cycle", "cycle")
        self.active.add(key)
        try:
            return build()
        finally:
            self.active.discard(key)

    def encodeList(self, value: list[Any]) -> Any:
        return self.container(value, lambda: [self.encode(item) for item in value])

    def encodeTuple(self, value: tuple[Any, ...]) -> Any:
        items = self.container(value, lambda: [self.encode(item) for item in value])
        return {"$tuple": items} if self.tagTuples else items

    def encodeSet(self, value: set[Any] | frozenset[Any]) -> Any:
        tag = "$set" if type(value) is set else "$frozenset"
        return {tag: self.container(value, lambda: [self.encode(item) for item in value])}

    def encodeDict(self, value: dict[Any, Any]) -> Any:
        if all(type(key) is str and not key.startswith("$") for key in value):
            return self.container(
                value, lambda: {key: self.encode(item) for key, item in value.items()}
            )
        return {
            "$dict": self.container(
                value,
                lambda: [[self.encode(key), self.encode(item)] for key, item in value.items()],
            )
        }

    def encodeOther(self, value: Any) -> Any:
        if isinstance(value, pb.RemoteReference):
            return {"$ref": self._handles().handleForRef(value)}
        if isinstance(value, pb.GenericRemoteCache):
            return self._handles().cacheJSON(value)
        if isinstance(value, pb.GenericCopy):
            return {"$copy": value.typeName, "state": self.encode(value.state)}
        if isinstance(value, pb.jelly.Unpersistable):
            return {"$unpersistable": value.reason}
        if isinstance(value, bool):
            return bool(value)
        for base, handler in _ENCODERS.items():
            if isinstance(value, base):
                return handler(self, value)
        for plain in (int, float, str):
            # __mro__[-2] is not the builtin base of e.g. an IntEnum.
            if isinstance(value, plain):
                return self.encode(plain(value))
        raise UnmappableResult(
            f"the broker's value of type {type(value).__name__} has no JSON form", "unmappable"
        )

    def _handles(self) -> Handles:
        if self.handles is None:
            raise UnmappableResult("references need a session", "no_session")
        return self.handles


_ENCODERS: dict[type, Callable[[_Encoder, Any], Any]] = {
    list: _Encoder.encodeList,
    tuple: _Encoder.encodeTuple,
    dict: _Encoder.encodeDict,
    set: _Encoder.encodeSet,
    frozenset: _Encoder.encodeSet,
    bytes: lambda _, v: {"$bytes": base64.b64encode(v).decode("ascii")},
    datetime.datetime: lambda _, v: {"$datetime": v.isoformat()},
    datetime.date: lambda _, v: {"$date": v.isoformat()},
    datetime.time: lambda _, v: {"$time": v.isoformat()},
    datetime.timedelta: lambda _, v: {"$timedelta": v.total_seconds()},
    decimal.Decimal: lambda _, v: {"$decimal": str(v)},
}


def jsonFromPB(value: Any, handles: Handles | None = None, tagTuples: bool = False) -> Any:
    """
    The JSON form of a PB value; references and caches get handles in
    C{handles} (the caller's session).
    """
    return _Encoder(handles, tagTuples).encode(value)


def _bad(message: str, code: str = "bad_value") -> BadRequest:
    return BadRequest(message, code)


def _expect(value: Any, kind: type | tuple[type, ...], tag: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _bad(f"{tag} needs a {getattr(kind, '__name__', 'value')} value")
    return value


def _fromTag(obj: dict[str, Any], handles: Handles | None, depth: int) -> Any:
    tags = [key for key in obj if key.startswith("$")]
    if len(tags) != 1:
        raise _bad(f"a tagged value has exactly one $-key, not {sorted(tags)}")
    tag = tags[0]
    extra = set(obj) - {tag}
    allowed = {"$copy": {"state"}, "$cache": {"type", "state", "seq"}}.get(tag, set())
    if extra - allowed:
        raise _bad(f"{tag} does not take {sorted(extra - allowed)}")
    payload = obj[tag]
    convert = _Decoder(handles, depth + 1).decode
    try:
        if tag == "$bytes":
            return base64.b64decode(_expect(payload, str, tag), validate=True)
        if tag == "$tuple":
            return tuple(convert(item) for item in _expect(payload, list, tag))
        if tag == "$set":
            return {convert(item) for item in _expect(payload, list, tag)}
        if tag == "$frozenset":
            return frozenset(convert(item) for item in _expect(payload, list, tag))
        if tag == "$dict":
            pairs = _expect(payload, list, tag)
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
                raise _bad("$dict takes a list of [key, value] pairs")
            return {convert(key): convert(item) for key, item in pairs}
        if tag == "$datetime":
            stamp = datetime.datetime.fromisoformat(_expect(payload, str, tag))
            if stamp.tzinfo is not None:
                raise _bad("PB carries no time zones: send a naive $datetime")
            return stamp
        if tag == "$date":
            return datetime.date.fromisoformat(_expect(payload, str, tag))
        if tag == "$time":
            moment = datetime.time.fromisoformat(_expect(payload, str, tag))
            if moment.tzinfo is not None:
                raise _bad("PB carries no time zones: send a naive $time")
            return moment
        if tag == "$timedelta":
            return datetime.timedelta(seconds=_expect(payload, (int, float), tag))
        if tag == "$decimal":
            number = decimal.Decimal(_expect(payload, str, tag))
            if not number.is_finite():
                raise _bad("PB carries only finite decimals")
            return number
        if tag == "$float":
            if payload not in _FLOAT_NAMES:
                raise _bad('$float is one of "nan", "inf", "-inf"')
            return _FLOAT_NAMES[payload]
        if tag == "$ref":
            return _needHandles(handles).refForHandle(_expect(payload, str, tag))
        if tag == "$cache":
            return _needHandles(handles).cacheForHandle(_expect(payload, str, tag))
        if tag == "$copy":
            typeName = _expect(payload, str, tag)
            if not typeName:
                raise _bad("$copy needs a type name")
            return pb.GenericCopy(typeName, convert(obj.get("state", {})))
    except (ValueError, TypeError, OverflowError, binascii.Error, decimal.InvalidOperation) as e:
        if isinstance(e, GatewayError):
            raise
        raise _bad(f"bad {tag} value: {e}") from None
    raise _bad(f"unknown tag {tag}", "unknown_tag")


def _needHandles(handles: Handles | None) -> Handles:
    if handles is None:
        raise _bad("references and caches need a session", "no_session")
    return handles


MAX_DEPTH = 200


class _Decoder:
    def __init__(self, handles: Handles | None, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise _bad(f"values nest at most {MAX_DEPTH} deep", "too_deep")
        self.handles = handles
        self.depth = depth

    def decode(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is float or kind is bool or value is None:
            return value
        if kind is list:
            inner = _Decoder(self.handles, self.depth + 1).decode
            return [inner(item) for item in value]
        if kind is dict:
            for key in value:
                if key.startswith("$"):
                    return _fromTag(value, self.handles, self.depth)
            inner = _Decoder(self.handles, self.depth + 1).decode
            return {key: inner(item) for key, item in value.items()}
        raise _bad(f"unexpected {kind.__name__} in JSON")


def pbFromJSON(value: Any, handles: Handles | None = None) -> Any:
    """
    The PB value for parsed JSON; handles are looked up in C{handles}.

    @raise BadRequest: an unknown or malformed tag, or nesting too deep.
    """
    try:
        return _Decoder(handles).decode(value)
    except TypeError as e:
        raise _bad(f"unmappable value: {e}") from None


def _rejectConstant(name: str) -> Any:
    raise _bad(f"{name} is not JSON; send {{\"$float\": ...}}", "bad_json")


# json.loads and json.dumps build a new decoder or encoder on every call that
# passes options; one of each, made once, does the same work.
_JSON_DECODER = json.JSONDecoder(parse_constant=_rejectConstant)
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(data: bytes | str) -> Any:
    """
    Parse a JSON text strictly (no NaN/Infinity), as the API receives it.

    @raise BadRequest: not UTF-8, not JSON, or nested too deeply.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("the body is not UTF-8", "bad_json") from None
    try:
        return _JSON_DECODER.decode(data)
    except RecursionError:
        raise _bad("the JSON nests too deeply", "bad_json") from None
    except json.JSONDecodeError as e:
        raise _bad(f"not JSON: {e}", "bad_json") from None
    except ValueError as e:
        # e.g. an integer with more digits than Python converts.
        raise _bad(f"not acceptable JSON: {e}", "bad_json") from None


def dumps(value: Any) -> bytes:
    """
    Serialize a JSON-ready value (as L{jsonFromPB} makes them) compactly.
    """
    return _JSON_ENCODER.encode(value).encode("utf-8")
