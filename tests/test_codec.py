"""
Unit tests of the JSON value mapping (C{gateway.codec}): each tag in both
directions, the rules for malformed input, strict parsing, and hypothesis
round trips of PB-like values.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import pb
from gateway.codec import MAX_DEPTH, UnmappableResult, dumps, jsonFromPB, loads, pbFromJSON
from gateway.errors import BadRequest, NotFound


def makeRef(luid: int) -> pb.RemoteReference:
    return pb.RemoteReference(None, None, luid, False)  # type: ignore[arg-type]


def makeCache(typeName: str, state: Any) -> pb.GenericRemoteCache:
    cache = pb.GenericRemoteCache()
    cache.typeName = typeName
    cache.setCacheableState(state)
    return cache


class FakeHandles:
    """
    The codec's view of a session: stable handles for references and caches.
    """

    def __init__(self) -> None:
        self.refs: dict[str, pb.RemoteReference] = {}
        self.caches: dict[str, pb.GenericRemoteCache] = {}

    def handleForRef(self, ref: pb.RemoteReference) -> str:
        for handle, known in self.refs.items():
            if known is ref:
                return handle
        handle = f"r{len(self.refs)}"
        self.refs[handle] = ref
        return handle

    def refForHandle(self, handle: str) -> pb.RemoteReference:
        if handle not in self.refs:
            raise NotFound(f"no reference {handle!r}", "unknown_handle")
        return self.refs[handle]

    def cacheJSON(self, cache: pb.GenericRemoteCache) -> dict[str, Any]:
        handle = next((h for h, c in self.caches.items() if c is cache), None)
        if handle is None:
            handle = f"c{len(self.caches)}"
            self.caches[handle] = cache
        return {"$cache": handle, "type": cache.typeName,
                "state": jsonFromPB(cache.__dict__["state"], self), "seq": 0}

    def cacheForHandle(self, handle: str) -> pb.GenericRemoteCache:
        if handle not in self.caches:
            raise NotFound(f"no cache {handle!r}", "unknown_handle")
        return self.caches[handle]


# (PB value, its JSON form): each row round-trips exactly.
TAGGED: list[tuple[Any, Any]] = [
    (b"\x00\xffhi", {"$bytes": "AP9oaQ=="}),
    (b"", {"$bytes": ""}),
    ({1, 2}, {"$set": [1, 2]}),
    (frozenset({"a"}), {"$frozenset": ["a"]}),
    (datetime.datetime(2024, 2, 29, 23, 59, 59, 1), {"$datetime": "2024-02-29T23:59:59.000001"}),
    (datetime.datetime(1, 1, 1), {"$datetime": "0001-01-01T00:00:00"}),
    (datetime.date(2024, 2, 29), {"$date": "2024-02-29"}),
    (datetime.time(7, 5), {"$time": "07:05:00"}),
    (datetime.timedelta(days=-1, seconds=1, microseconds=5), {"$timedelta": -86398.999995}),
    (decimal.Decimal("1.10"), {"$decimal": "1.10"}),
    (decimal.Decimal("-1E+30"), {"$decimal": "-1E+30"}),
    (math.inf, {"$float": "inf"}),
    (-math.inf, {"$float": "-inf"}),
    ({1: "one", None: "none"}, {"$dict": [[1, "one"], [None, "none"]]}),
    ({"$ref": 1}, {"$dict": [["$ref", 1]]}),
    ({b"k": [b"v"]}, {"$dict": [[{"$bytes": "aw=="}, [{"$bytes": "dg=="}]]]}),
    ({frozenset({1}): 2}, {"$dict": [[{"$frozenset": [1]}, 2]]}),
    (pb.GenericCopy("app.Point", {"x": 1, "y": [2]}),
     {"$copy": "app.Point", "state": {"x": 1, "y": [2]}}),
    ([{"a": {1}}], [{"a": {"$set": [1]}}]),
]


class JSONFromPBTests(SynchronousTestCase):
    """
    PB values going out as JSON.
    """

    def test_plainValues(self) -> None:
        """
        None, bools, ints of any size, finite floats, strings, lists and
        string-keyed dicts are plain JSON.
        """
        value = [None, True, False, 0, -(2**400), 1.5, -0.0, "é☃", [], {"a": [1, {"b": None}]}]
        self.assertEqual(jsonFromPB(value), value)
        self.assertIs(jsonFromPB(True), True)

    def test_tags(self) -> None:
        """
        Everything else is one object with one $-key.
        """
        for value, expected in TAGGED:
            self.assertEqual(jsonFromPB(value), expected, value)

    def test_nan(self) -> None:
        """
        NaN is C{{"$float": "nan"}}, never a bare NaN literal.
        """
        self.assertEqual(jsonFromPB([math.nan]), [{"$float": "nan"}])
        self.assertEqual(dumps(jsonFromPB(math.nan)), b'{"$float":"nan"}')

    def test_tuples(self) -> None:
        """
        Tuples go out as arrays unless tagTuples asks for C{$tuple}.
        """
        value = (1, (2, [3]))
        self.assertEqual(jsonFromPB(value), [1, [2, [3]]])
        self.assertEqual(
            jsonFromPB(value, tagTuples=True), {"$tuple": [1, {"$tuple": [2, [3]]}]}
        )

    def test_subclasses(self) -> None:
        """
        Subclasses of the plain types map like their base (datetime is not
        a date, an int subclass is an int).
        """
        import enum

        class Colour(enum.IntEnum):
            RED = 1

        class Name(str):
            pass

        self.assertEqual(jsonFromPB([Colour.RED, Name("x")]), [1, "x"])
        self.assertIs(type(jsonFromPB(Colour.RED)), int)
        self.assertEqual(
            jsonFromPB(datetime.datetime(2020, 1, 2)), {"$datetime": "2020-01-02T00:00:00"}
        )

    def test_references(self) -> None:
        """
        A reference is C{$ref} with a handle lent by the session, the same
        handle each time; a cache is the session's C{$cache} snapshot.
        """
        handles = FakeHandles()
        ref = makeRef(7)
        cache = makeCache("pb.live.LiveDict", {"seq": 0, "value": {}})
        result = jsonFromPB({"r": ref, "again": ref, "c": cache}, handles)
        self.assertEqual(result["r"], {"$ref": "r0"})
        self.assertEqual(result["again"], {"$ref": "r0"})
        self.assertEqual(result["c"]["$cache"], "c0")
        self.assertEqual(result["c"]["type"], "pb.live.LiveDict")

    def test_unpersistable(self) -> None:
        """
        What a Twisted peer could not send is C{$unpersistable} with its
        reason.
        """
        self.assertEqual(
            jsonFromPB(pb.jelly.Unpersistable("no")), {"$unpersistable": "no"}
        )

    def test_referencesNeedSession(self) -> None:
        """
        Without a session a reference has no JSON form (a 502 unmappable).
        """
        with self.assertRaises(UnmappableResult) as caught:
            jsonFromPB([makeRef(1)])
        self.assertEqual((caught.exception.status, caught.exception.code), (502, "no_session"))

    def test_cycles(self) -> None:
        """
        A cyclic value is unmappable; a value shared twice is not a cycle.
        """
        shared = [1]
        self.assertEqual(jsonFromPB([shared, shared]), [[1], [1]])
        loop: list[Any] = []
        loop.append(loop)
        with self.assertRaises(UnmappableResult) as caught:
            jsonFromPB(loop)
        self.assertEqual(caught.exception.code, "cycle")
        selfKeyed: dict[Any, Any] = {}
        selfKeyed[1] = selfKeyed
        self.assertRaises(UnmappableResult, jsonFromPB, selfKeyed)

    def test_unknownType(self) -> None:
        """
        A Python object PB would not carry is unmappable.
        """
        with self.assertRaises(UnmappableResult) as caught:
            jsonFromPB({"x": object()})
        self.assertEqual(caught.exception.code, "unmappable")


class PBFromJSONTests(SynchronousTestCase):
    """
    JSON coming in as PB values.
    """

    def test_tags(self) -> None:
        """
        Each tag becomes the value it names, with its exact type.
        """
        for expected, tagged in TAGGED:
            value = pbFromJSON(tagged)
            self.assertEqual(value, expected, tagged)
            self.assertIs(type(value), type(expected), tagged)
        self.assertTrue(math.isnan(pbFromJSON({"$float": "nan"})))
        self.assertEqual(pbFromJSON({"$tuple": [1, {"$tuple": []}]}), (1, ()))
        self.assertEqual(pbFromJSON({"$copy": "x.Y"}), pb.GenericCopy("x.Y", {}))

    def test_objectsWithoutDollarKeys(self) -> None:
        """
        An object is a tag only when it has a $-key; keys merely containing
        a dollar are plain.
        """
        self.assertEqual(pbFromJSON({"a$": 1, "b": {"c$d": []}}), {"a$": 1, "b": {"c$d": []}})

    def test_handles(self) -> None:
        """
        C{$ref} and C{$cache} are looked up in the session; unknown handles
        are 404s, and without a session they are refused.
        """
        handles = FakeHandles()
        ref = makeRef(3)
        handle = jsonFromPB(ref, handles)["$ref"]
        self.assertIs(pbFromJSON({"$ref": handle}, handles), ref)
        cache = makeCache("app.Board", {})
        cacheHandle = jsonFromPB(cache, handles)["$cache"]
        self.assertIs(pbFromJSON({"$cache": cacheHandle}, handles), cache)
        self.assertIs(pbFromJSON({"$cache": cacheHandle, "type": "x", "seq": 3}, handles), cache)
        with self.assertRaises(NotFound):
            pbFromJSON([{"$ref": "r99"}], handles)
        with self.assertRaises(NotFound):
            pbFromJSON({"$cache": "c99"}, handles)
        with self.assertRaises(BadRequest) as caught:
            pbFromJSON({"$ref": handle})
        self.assertEqual(caught.exception.code, "no_session")

    def test_malformed(self) -> None:
        """
        Malformed tags are 400s naming the problem: wrong payload types,
        unparseable text, time zones, non-finite decimals, unhashable set
        members and keys, several tags in one object, extra keys.
        """
        malformed = [
            {"$bytes": 1}, {"$bytes": "@@@@"}, {"$bytes": "abc"},
            {"$tuple": {}}, {"$set": 1}, {"$set": [[1]]}, {"$frozenset": [{}]},
            {"$datetime": "2020-01-01T00:00:00Z"}, {"$datetime": "soon"}, {"$datetime": 1},
            {"$date": "2020-1-1x"}, {"$time": "12:00+02:00"}, {"$time": "noon"},
            {"$timedelta": "1"}, {"$timedelta": False}, {"$timedelta": 1e300},
            {"$decimal": "Infinity"}, {"$decimal": "sNaN"}, {"$decimal": "x"}, {"$decimal": 1},
            {"$float": "Infinity"}, {"$float": 0}, {"$float": {}},
            {"$dict": {}}, {"$dict": [[1, 2, 3]]}, {"$dict": [1]}, {"$dict": [[{}, 1]]},
            {"$ref": None}, {"$cache": 1}, {"$copy": ""}, {"$copy": None},
            {"$copy": "a.B", "extra": 1}, {"$bytes": "", "$set": []}, {"$set": [], "x": 1},
        ]
        for tagged in malformed:
            with self.assertRaises(BadRequest, msg=repr(tagged)) as caught:
                pbFromJSON(["ok", tagged], FakeHandles())
            self.assertEqual(caught.exception.status, 400)
            self.assertEqual(caught.exception.code, "bad_value", tagged)

    def test_unknownTag(self) -> None:
        """
        An unknown $-key (and the outbound-only C{$unpersistable}) is
        unknown_tag.
        """
        for tagged in ({"$what": 1}, {"$unpersistable": "x"}, {"$": None}):
            with self.assertRaises(BadRequest) as caught:
                pbFromJSON(tagged)
            self.assertEqual(caught.exception.code, "unknown_tag")

    def test_depth(self) -> None:
        """
        Values nest at most MAX_DEPTH deep, in arrays, objects and tags.
        """
        def nested(depth: int, wrap: Any) -> Any:
            value: Any = 1
            for _ in range(depth):
                value = wrap(value)
            return value

        self.assertEqual(pbFromJSON(nested(MAX_DEPTH - 1, lambda v: [v]))[0] is not None, True)
        for wrap in (lambda v: [v], lambda v: {"k": v}, lambda v: {"$tuple": [v]}):
            with self.assertRaises(BadRequest) as caught:
                pbFromJSON(nested(MAX_DEPTH + 5, wrap))
            self.assertEqual(caught.exception.code, "too_deep")

    def test_nonJSONInput(self) -> None:
        """
        Python values that JSON parsing never produces are refused.
        """
        self.assertRaises(BadRequest, pbFromJSON, [b"bytes"])
        self.assertRaises(BadRequest, pbFromJSON, {"a": object()})


class LoadsDumpsTests(SynchronousTestCase):
    """
    Strict parsing and compact serializing.
    """

    def test_loads(self) -> None:
        """
        UTF-8 JSON text (bytes or str) parses to plain values.
        """
        self.assertEqual(loads(b'{"a": [1, 2.5, "\xc3\xa9"]}'), {"a": [1, 2.5, "é"]})
        self.assertEqual(loads("[null]"), [None])

    def test_loadsRefuses(self) -> None:
        """
        Non-UTF-8, non-JSON, NaN/Infinity literals, runaway nesting and
        5000-digit integers are 400 bad_json.
        """
        for text in [b"\xff", b"[", b"[1] 2", b"NaN", b"[Infinity]", b"-Infinity",
                     b"[" * 100000, b"[" * 10000 + b"]" * 10000, b"9" * 5000, b"{'a': 1}"]:
            with self.assertRaises(BadRequest, msg=repr(text[:20])) as caught:
                loads(text)
            self.assertEqual(caught.exception.code, "bad_json")

    def test_dumps(self) -> None:
        """
        Output is compact UTF-8 (not ASCII-escaped) and never contains NaN.
        """
        self.assertEqual(dumps({"a": ["é", 1]}), '{"a":["é",1]}'.encode())
        self.assertRaises(ValueError, dumps, [math.nan])


# -- round trips ------------------------------------------------------------


def canonical(value: Any, tuples: bool = True) -> Any:
    """
    A hashable, type-exact form of a value, so that 1, 1.0 and True differ
    and NaN equals NaN.  With C{tuples=False}, tuples count as lists.
    """
    kind = type(value)
    if kind is list or kind is tuple:
        name = "tuple" if kind is tuple and tuples else "list"
        return (name, tuple(canonical(item, tuples) for item in value))
    if kind is set or kind is frozenset:
        return (kind.__name__, frozenset(canonical(item, tuples) for item in value))
    if kind is dict:
        return ("dict", frozenset(
            (canonical(key, tuples), canonical(item, tuples)) for key, item in value.items()
        ))
    if kind is float and math.isnan(value):
        return ("float", "nan")
    if kind is pb.GenericCopy:
        return ("copy", value.typeName, canonical(value.state, tuples))
    return (kind.__name__, value)


# $timedelta travels as float seconds: exact to the microsecond within
# about +-270 years (float precision); the strategy stays well inside.
_timedeltas = st.timedeltas(
    min_value=datetime.timedelta(days=-25000), max_value=datetime.timedelta(days=25000)
)
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10) | st.datetimes() | st.dates() | st.times() | _timedeltas
    | st.decimals(allow_nan=False, allow_infinity=False)
)


def pbValues(tuples: bool) -> st.SearchStrategy[Any]:
    """
    PB-like values; tuples only where a value need not be hashable unless
    C{tuples} (tagged tuples) is set, since untagged tuples come back as
    lists.
    """
    hashables = st.recursive(
        _scalars,
        lambda inner: st.frozensets(inner, max_size=3)
        | (st.lists(inner, max_size=3).map(tuple) if tuples else st.nothing()),
        max_leaves=5,
    )
    return st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
        | st.dictionaries(st.text(max_size=5) | hashables, inner, max_size=3)
        | st.builds(pb.GenericCopy, st.text(min_size=1, max_size=10),
                    st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=12,
    )


class RoundTripTests(SynchronousTestCase):
    """
    pbFromJSON(jsonFromPB(v)) gives v back, also through the JSON text.
    """

    @settings(max_examples=300, deadline=None)
    @given(pbValues(tuples=True))
    def test_roundTripTaggedTuples(self, value: Any) -> None:
        """
        With tagged tuples the mapping is exact, through dumps and loads
        too.
        """
        mapped = jsonFromPB(value, tagTuples=True)
        self.assertEqual(canonical(pbFromJSON(mapped)), canonical(value))
        self.assertEqual(canonical(pbFromJSON(loads(dumps(mapped)))), canonical(value))

    @settings(max_examples=300, deadline=None)
    @given(pbValues(tuples=False))
    def test_roundTripTuplesAsLists(self, value: Any) -> None:
        """
        By default tuples come back as lists and everything else exactly.
        """
        text = dumps(jsonFromPB(value))
        self.assertEqual(
            canonical(pbFromJSON(loads(text)), tuples=False), canonical(value, tuples=False)
        )

    @settings(max_examples=200, deadline=None)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    ))
    def test_plainJSONUnchanged(self, value: Any) -> None:
        """
        Plain JSON without $-keys passes through both ways unchanged.
        """
        encoded = jsonFromPB(value)
        if "$" not in json.dumps(value):
            self.assertEqual(canonical(encoded), canonical(value))
            self.assertEqual(canonical(pbFromJSON(value)), canonical(value))
        self.assertEqual(canonical(pbFromJSON(encoded)), canonical(value))
