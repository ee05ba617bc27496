"""
Tests for L{pb.jelly}: values round-trip (alone and through L{pb.banana}), the bytes on the
wire are Twisted's byte for byte, each side rebuilds what the other jellies, nothing a peer
names is ever imported, unserializable values fail at the sender, and each
L{pb.TypeRegistry} accepts only the types it was given.
"""

from __future__ import annotations

import datetime
import decimal
import io
import math
import socket
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana as twistedBanana
from twisted.spread import flavors as twistedFlavors
from twisted.spread import jelly as twistedJelly
from twisted.trial.unittest import SynchronousTestCase

import pb
from pb import banana
from pb.jelly import DEFAULT_REGISTRY, jelly, qual, unjelly

_codecSettings = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# -- values ---------------------------------------------------------------------------

_ints = st.integers(min_value=-(2**447), max_value=2**447)
_decimals = st.builds(
    lambda digits, exponent: decimal.Decimal(f"{digits}E{exponent}"),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=-60, max_value=60),
)
_hashable = st.recursive(
    st.none()
    | st.booleans()
    | _ints
    | st.floats(allow_nan=False)
    | st.binary(max_size=10)
    | st.text(max_size=10)
    | st.dates()
    | st.datetimes()
    | st.timedeltas()
    | _decimals,
    lambda children: st.tuples(children, children) | st.frozensets(children, max_size=3),
    max_leaves=6,
)
_scalars = (
    st.none()
    | st.booleans()
    | _ints
    | st.floats()
    | st.binary(max_size=30)
    | st.text(max_size=30)
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.timedeltas()
    | _decimals
)
values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(_hashable, children, max_size=4)
        | st.sets(_hashable, max_size=4)
        | st.frozensets(_hashable, max_size=4)
    ),
    max_leaves=25,
)
"""Nested values of every type jelly sends: str and non-str dictionary keys, sets of
tuples, NaN and signed zeros, naive dates and times, finite Decimals."""


def equivalent(a: Any, b: Any) -> bool:
    """
    Whether C{a} and C{b} are the same value of the same types all the way down: NaN
    matches NaN, C{0.0} does not match C{-0.0}, C{1} does not match C{True}, and
    Decimals must have the same digits and exponent.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(equivalent(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        keys = {key: key for key in b}
        return len(a) == len(b) and all(
            key in keys and equivalent(key, keys[key]) and equivalent(value, b[key])
            for key, value in a.items()
        )
    if isinstance(a, set | frozenset):
        members = {member: member for member in b}
        return len(a) == len(b) and all(
            member in members and equivalent(member, members[member]) for member in a
        )
    return bool(a == b)


def twistedBytes(sexp: Any) -> bytes:
    """
    Twisted's banana encoding of C{sexp} in the C{"pb"} dialect, as a Twisted PB
    broker writes it.
    """
    codec = twistedBanana.Banana()
    codec.connectionMade()
    codec._selectDialect(b"pb")
    stream = io.BytesIO()
    codec.transport = stream
    codec.sendEncoded(sexp)
    return stream.getvalue()


def ourBytes(sexp: Any) -> bytes:
    """
    Our banana encoding of C{sexp} in the C{"pb"} dialect.
    """
    return banana.encode(sexp, vocabulary=banana.PB_VOCABULARY)


def decodeOne(data: bytes, split: int = 0) -> Any:
    """
    Decode the one expression in C{data} with our decoder, fed in two chunks cut at
    C{split}.
    """
    decoder = banana.Decoder(vocabulary={v: k for k, v in banana.PB_VOCABULARY.items()})
    expressions = decoder.feed(data[:split]) + decoder.feed(data[split:])
    if len(expressions) != 1:
        raise AssertionError(f"expected one expression, got {expressions!r}")
    return expressions[0]


def sharedStructures() -> dict[str, Any]:
    """
    Values with shared and recursive parts, which jelly writes as reference and
    dereference pairs.
    """
    selfList: list[Any] = []
    selfList.append(selfList)
    sharedDict: dict[str, int] = {"n": 1}
    tupleBack: list[Any] = [1]
    tupleBack.append((tupleBack, 2))
    selfDict: dict[str, Any] = {}
    selfDict["self"] = selfDict
    sharedList = [1, 2]
    return {
        "a list containing itself": selfList,
        "the same dict twice": [sharedDict, sharedDict],
        "a tuple inside a list referring back": tupleBack,
        "a dict containing itself": selfDict,
        "the same list in a tuple and a dict": ((sharedList,), {"l": sharedList}),
    }


class EquivalentTests(SynchronousTestCase):
    """
    The strict comparison the round-trip tests rely on tells apart what plain
    equality does not.
    """

    def test_distinguishes(self) -> None:
        """
        NaN matches NaN; C{0.0} and C{-0.0}, C{1} and C{True}, C{(1,)} and C{[1]},
        C{Decimal("1.0")} and C{Decimal("1")} do not match.
        """
        self.assertTrue(equivalent([math.nan, {1: (b"x",)}], [math.nan, {1: (b"x",)}]))
        self.assertFalse(equivalent(0.0, -0.0))
        self.assertFalse(equivalent({1: None}, {True: None}))
        self.assertFalse(equivalent((1,), [1]))
        self.assertFalse(equivalent(decimal.Decimal("1.0"), decimal.Decimal("1")))
        self.assertFalse(equivalent({frozenset([1])}, {frozenset([True])}))


class RoundTripTests(SynchronousTestCase):
    """
    C{unjelly(jelly(v))} rebuilds C{v}, alone and through banana.
    """

    @_codecSettings
    @given(values)
    def test_jellyRoundTrip(self, value: Any) -> None:
        """
        Every value of the supported types comes back equivalent from
        C{unjelly(jelly(value))}.
        """
        self.assertTrue(equivalent(unjelly(jelly(value)), value))

    @_codecSettings
    @given(values, st.data())
    def test_bananaRoundTrip(self, value: Any, data: st.DataObject) -> None:
        """
        Jellied, banana-encoded, decoded in two chunks of any sizes and unjellied,
        every value comes back equivalent.
        """
        encoded = ourBytes(jelly(value))
        split = data.draw(st.integers(min_value=0, max_value=len(encoded)))
        self.assertTrue(equivalent(unjelly(decodeOne(encoded, split)), value))

    def test_sharedStructures(self) -> None:
        """
        Shared and recursive parts come back shared: a list that contains itself
        contains itself again, the same dict sent twice arrives as one dict.
        """
        structures = sharedStructures()
        selfList = unjelly(decodeOne(ourBytes(jelly(structures["a list containing itself"]))))
        self.assertIs(selfList[0], selfList)
        twice = unjelly(jelly(structures["the same dict twice"]))
        self.assertIs(twice[0], twice[1])
        self.assertEqual(twice[0], {"n": 1})
        tupleBack = unjelly(jelly(structures["a tuple inside a list referring back"]))
        self.assertEqual(tupleBack[0], 1)
        self.assertIsInstance(tupleBack[1], tuple)
        self.assertIs(tupleBack[1][0], tupleBack)
        selfDict = unjelly(jelly(structures["a dict containing itself"]))
        self.assertIs(selfDict["self"], selfDict)
        inTuple, inDict = unjelly(jelly(structures["the same list in a tuple and a dict"]))
        self.assertIs(inTuple[0], inDict["l"])

    def test_negativeZeroDecimal(self) -> None:
        """
        C{Decimal("-0")} arrives as C{Decimal("0")}: the wire format carries the sign
        in the integer of digits (Twisted behaves the same).
        """
        self.assertEqual(unjelly(jelly(decimal.Decimal("-0"))).as_tuple().sign, 0)
        self.assertEqual(twistedJelly.jelly(decimal.Decimal("-0")), jelly(decimal.Decimal("-0")))


class TwistedEquivalenceTests(SynchronousTestCase):
    """
    Twisted is the oracle for the wire format: the same value gives the same bytes,
    and each implementation rebuilds what the other jellies.
    """

    @_codecSettings
    @given(values)
    def test_sameBytesAsTwisted(self, value: Any) -> None:
        """
        Our jelly and banana encode every value to exactly the bytes Twisted's jelly
        and banana (pb dialect) produce.
        """
        self.assertEqual(ourBytes(jelly(value)), twistedBytes(twistedJelly.jelly(value)))

    @_codecSettings
    @given(values)
    def test_wireJellierSameBytesAsTwisted(self, value: Any) -> None:
        """
        The brokers' jellier, which pre-encodes strings as banana tokens,
        still gives exactly Twisted's bytes.
        """
        wire = pb.jelly.Jellier(wire=True).jelly(value)
        self.assertEqual(ourBytes(wire), twistedBytes(twistedJelly.jelly(value)))

    def test_wireJellierVocabularyWords(self) -> None:
        """
        Strings that are vocabulary words ("None", "list", ...) go out as their
        vocabulary numbers, as Twisted sends them, not as pre-encoded strings.
        """
        words = [word.decode() for word in banana.PB_VOCABULARY]
        value = [words, {word: word for word in words}]
        wire = pb.jelly.Jellier(wire=True).jelly(value)
        self.assertEqual(ourBytes(wire), twistedBytes(twistedJelly.jelly(value)))

    def test_wireJellierRespectsSizeLimit(self) -> None:
        """
        A string over the size limit is not pre-encoded, so banana refuses it.
        """
        wire = pb.jelly.Jellier(wire=True, sizeLimit=10).jelly(["x" * 11, "short"])
        with self.assertRaises(banana.BananaTooLarge):
            banana.encode(wire, sizeLimit=10)

    def test_sharedStructuresSameBytesAsTwisted(self) -> None:
        """
        Shared and recursive structures give Twisted's reference and dereference
        numbering byte for byte.
        """
        for name, value in sharedStructures().items():
            ours = ourBytes(jelly(value))
            self.assertEqual(ours, twistedBytes(twistedJelly.jelly(value)), name)
            self.assertIn(b"\x03\x87", ours, name)  # the "dereference" vocabulary word

    @_codecSettings
    @given(values)
    def test_weUnjellyTwisted(self, value: Any) -> None:
        """
        What Twisted jellies, decoded by our banana and unjellied by us, is the value
        Twisted sent.
        """
        sexp = decodeOne(twistedBytes(twistedJelly.jelly(value)))
        self.assertTrue(equivalent(unjelly(sexp), value))

    @_codecSettings
    @given(values)
    def test_twistedUnjellysOurs(self, value: Any) -> None:
        """
        What we jelly, Twisted unjellies to the value we sent.
        """
        self.assertTrue(equivalent(twistedJelly.unjelly(jelly(value)), value))

    def test_referencesAcrossImplementations(self) -> None:
        """
        Shared and recursive structures keep their sharing in both directions.
        """
        for source, sink in (
            (twistedJelly.jelly, unjelly),
            (jelly, twistedJelly.unjelly),
        ):
            structures = sharedStructures()
            selfList = sink(source(structures["a list containing itself"]))
            self.assertIs(selfList[0], selfList)
            twice = sink(source(structures["the same dict twice"]))
            self.assertIs(twice[0], twice[1])
            tupleBack = sink(source(structures["a tuple inside a list referring back"]))
            self.assertIs(tupleBack[1][0], tupleBack)
            selfDict = sink(source(structures["a dict containing itself"]))
            self.assertIs(selfDict["self"], selfDict)


def wireJelly(value: Any) -> Any:
    """
    A broker's jellier's s-expression of C{value} (strings pre-encoded).
    """
    return pb.jelly.Jellier(wire=True).jelly(value)


WIRE_TEXT = pb.jelly.wireText(banana.SIZE_LIMIT)

# Arbitrary s-expressions, well-formed or not, made of jelly's own atoms.
_atoms = st.sampled_from(
    [b"tuple", b"list", b"dictionary", b"unicode", b"None", b"boolean", b"true", b"false",
     b"reference", b"dereference", b"set", b"x", b"\xff\xfe", b""]
)
sexps = st.recursive(
    _atoms | st.integers(-3, 3) | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(_atoms, children).map(list)
    | st.tuples(_atoms, children, children).map(list)
    | st.lists(st.tuples(children, children).map(list), max_size=3).map(
        lambda pairs: [b"dictionary", *pairs]
    ),
    max_leaves=20,
)


class PlainValueTests(SynchronousTestCase):
    """
    Plain values (numbers, strings, bytes, bools, None and small containers of
    them) skip the Jellier and the Unjellier: the shortcut gives exactly what
    they give, and declines everything else.
    """

    @_codecSettings
    @given(values)
    def test_jellyPlainSameAsJellier(self, value: Any) -> None:
        """
        Where L{pb.jelly.jellyPlain} takes a value, it gives the Jellier's
        s-expression, type for type, with strings as unicode s-expressions or
        pre-encoded as a broker's jellier writes them; so the bytes are the same.
        """
        plain = pb.jelly.jellyPlain(value)
        if plain is not pb.jelly.NOT_PLAIN:
            self.assertTrue(equivalent(plain, pb.jelly.Jellier().jelly(value)))
        wire = pb.jelly.jellyPlain(value, WIRE_TEXT)
        self.assertEqual(wire is pb.jelly.NOT_PLAIN, plain is pb.jelly.NOT_PLAIN)
        if wire is not pb.jelly.NOT_PLAIN:
            self.assertTrue(equivalent(wire, wireJelly(value)))
            self.assertEqual(ourBytes(wire), twistedBytes(twistedJelly.jelly(value)))

    def test_whatIsPlain(self) -> None:
        """
        Scalars, strings and containers of them holding up to 64 items in all
        (an item of a dict being a key and its value) are plain; other types, subclasses of the plain ones, a container met twice
        (which jelly writes as a reference) and bigger values are not.
        """
        inner = [1, "two"]
        for value in [
            5, 2.5, b"raw", "text", None, True, (), [], {},
            (1, "a", b"b", 2.5, None, False),
            {"a": [1, 2], "b": (None, {"c": "d"})},
            [inner, [1, "two"]],
            list(range(64)),
            [list(range(32)), list(range(30))],
        ]:
            self.assertIsNot(pb.jelly.jellyPlain(value), pb.jelly.NOT_PLAIN, value)
            self.assertIsNot(pb.jelly.unjellyPlain(jelly(value)), pb.jelly.NOT_PLAIN, value)
        selfList: list[Any] = []
        selfList.append(selfList)
        for value in [
            [inner, inner],
            {"a": inner, "b": inner},
            ((), ()),
            selfList,
            {1, 2},
            frozenset(),
            datetime.date(2024, 1, 1),
            decimal.Decimal("1.5"),
            Point(1, 2),
            socket.AF_INET,
            list(range(65)),
            [list(range(32)), list(range(33))],
            [[b"deep"] * 40, [b"deep"] * 40],
        ]:
            self.assertIs(pb.jelly.jellyPlain(value), pb.jelly.NOT_PLAIN, value)

    @_codecSettings
    @given(values)
    def test_unjellyPlainSameAsUnjellier(self, value: Any) -> None:
        """
        Where L{pb.jelly.unjellyPlain} takes an s-expression, as jellied or as
        decoded from the wire, it rebuilds what the Unjellier rebuilds.
        """
        for sexp in (jelly(value), decodeOne(ourBytes(wireJelly(value)))):
            plain = pb.jelly.unjellyPlain(sexp)
            if plain is not pb.jelly.NOT_PLAIN:
                self.assertTrue(
                    equivalent(plain, pb.jelly.Unjellier().unjellyFull(sexp)), (value, sexp)
                )

    @_codecSettings
    @given(sexps)
    def test_unjellyPlainDeclinesWhatUnjellierRefuses(self, sexp: Any) -> None:
        """
        Given any s-expression, well-formed or not, L{pb.jelly.unjellyPlain}
        either declines it or gives what the Unjellier gives; it never takes
        one the Unjellier refuses, so malformed input meets the same errors.
        """
        plain = pb.jelly.unjellyPlain(sexp)
        if plain is pb.jelly.NOT_PLAIN:
            return
        self.assertTrue(equivalent(plain, pb.jelly.Unjellier().unjellyFull(sexp)), sexp)


_NEVER_IMPORTED = "pb_test_module_that_does_not_exist"


class SecurityTests(SynchronousTestCase):
    """
    Unjelly builds only what a registry allows and imports nothing; jelly refuses what
    it cannot send, at the sender.
    """

    def setUp(self) -> None:
        # A real module that unjelly must not import: take it out of sys.modules for
        # the test, so that importing it would show.
        saved = sys.modules.pop("xml.dom.minidom", None)
        if saved is not None:
            self.addCleanup(sys.modules.__setitem__, "xml.dom.minidom", saved)

    def assertNothingImported(self) -> None:
        self.assertNotIn("xml.dom.minidom", sys.modules)
        self.assertNotIn(_NEVER_IMPORTED, sys.modules)

    def test_legacyAtomsRefused(self) -> None:
        """
        Twisted's legacy C{class}, C{module}, C{function}, C{instance}, C{method} and
        C{persistent} atoms raise L{pb.InsecureJelly} and import nothing they name.
        """
        node = b"xml.dom.minidom.Node"
        payloads = [
            [b"class", node],
            [b"class", _NEVER_IMPORTED.encode() + b".Thing"],
            [b"module", b"xml.dom.minidom"],
            [b"module", _NEVER_IMPORTED.encode()],
            [b"function", b"xml.dom.minidom.parseString"],
            [b"function", b"os.system"],
            [b"instance", node, [b"dictionary"]],
            [b"method", b"cloneNode", [b"instance", node, [b"dictionary"]], [b"class", node]],
            [b"persistent", b"1"],
            # As Twisted itself writes them.
            twistedJelly.jelly(SecurityTests),
            twistedJelly.jelly(equivalent),
        ]
        for payload in payloads:
            self.assertRaises(pb.InsecureJelly, unjelly, payload)
            self.assertRaises(pb.InsecureJelly, unjelly, [b"list", payload])
        self.assertNothingImported()

    def test_arbitraryClassNameRefused(self) -> None:
        """
        An s-expression tagged with a dotted class name that is not registered raises
        L{pb.InsecureJelly}, whether or not the module exists, and imports nothing.
        """
        for tag in (b"xml.dom.minidom.Node", _NEVER_IMPORTED.encode() + b".Thing"):
            with self.assertRaises(pb.InsecureJelly) as caught:
                unjelly([b"dictionary", [[b"unicode", b"k"], [tag, [b"dictionary"]]]])
            self.assertIn(tag.decode(), str(caught.exception))
        self.assertNothingImported()

    def test_twistedUnjellyWouldImport(self) -> None:
        """
        The payloads above are dangerous: Twisted's own module-level unjelly, given
        one, imports the module it names.  (This shows the absence test above can
        fail.)
        """
        self.assertNotIn("xml.dom.minidom", sys.modules)
        twistedJelly.unjelly([b"module", b"xml.dom.minidom"])
        self.assertIn("xml.dom.minidom", sys.modules)

    def test_unserializableRaisesJellyError(self) -> None:
        """
        Jellying something PB cannot send (a socket, a lambda, a bare C{object()}, a
        class, a module, a generator) raises L{pb.JellyError} at once; nothing is
        silently replaced by an Unpersistable.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        for value in (
            sock,
            lambda: None,
            object(),
            pb.Copyable,
            sys,
            (n for n in range(3)),
        ):
            self.assertRaises(pb.JellyError, jelly, value)
            self.assertRaises(pb.JellyError, jelly, {"nested": [value]})

    def test_jellyErrorIsATypeError(self) -> None:
        """
        L{pb.JellyError} is a L{TypeError}, so generic callers that guard
        serialization with C{except TypeError} still catch it.
        """
        self.assertTrue(issubclass(pb.JellyError, TypeError))

    def test_timezoneAwareRefused(self) -> None:
        """
        Datetimes and times with a tzinfo raise L{pb.JellyError}: PB has no time
        zones, and dropping the zone would change the value.
        """
        utc = datetime.UTC
        self.assertRaises(pb.JellyError, jelly, datetime.datetime(2024, 1, 2, 3, 4, tzinfo=utc))
        self.assertRaises(pb.JellyError, jelly, datetime.time(3, 4, tzinfo=utc))

    def test_nonFiniteDecimalRefused(self) -> None:
        """
        Decimal NaN, sNaN and infinities raise L{pb.JellyError}: the wire format has
        no way to say them.
        """
        for text in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity"):
            self.assertRaises(pb.JellyError, jelly, decimal.Decimal(text))


class Point(pb.Copyable):
    """
    A Copyable sent in registry tests.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class RemotePoint(pb.RemoteCopy):
    """
    The receiving side's class for L{Point}.
    """


class Other(pb.Copyable):
    """
    Another Copyable, registered where L{Point} is not.
    """

    def __init__(self) -> None:
        self.z = 3


class RemoteOther(pb.RemoteCopy):
    """
    The receiving side's class for L{Other}.
    """


class TwistedPoint(twistedFlavors.Copyable):
    """
    A Copyable as a Twisted peer defines it.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class TypeRegistryTests(SynchronousTestCase):
    """
    A L{pb.TypeRegistry} decides which type tags unjelly accepts, independently of
    every other registry.
    """

    def test_registriesAreIndependent(self) -> None:
        """
        Two registries in one process accept different classes: each builds its own
        and refuses the other's.
        """
        first = pb.TypeRegistry(inherit=None)
        first.setUnjellyableForClass(Point, RemotePoint)
        second = pb.TypeRegistry(inherit=None)
        second.setUnjellyableForClass(Other, RemoteOther)
        point, other = jelly(Point(1, 2)), jelly(Other())

        rebuilt = unjelly(point, registry=first)
        self.assertIsInstance(rebuilt, RemotePoint)
        self.assertEqual((rebuilt.x, rebuilt.y), (1, 2))
        self.assertIsInstance(unjelly(other, registry=second), RemoteOther)
        self.assertRaises(pb.InsecureJelly, unjelly, other, registry=first)
        self.assertRaises(pb.InsecureJelly, unjelly, point, registry=second)
        # The default registry was not touched by either.
        self.assertRaises(pb.InsecureJelly, unjelly, point)

    def test_inheritNoneIgnoresDefault(self) -> None:
        """
        C{TypeRegistry()} sees what C{pb.setUnjellyableForClass} put in the default
        registry; C{TypeRegistry(inherit=None)} does not.
        """
        pb.setUnjellyableForClass(Point, RemotePoint)
        self.addCleanup(DEFAULT_REGISTRY.unregister, Point)
        point = jelly(Point(1, 2))
        self.assertIsInstance(unjelly(point), RemotePoint)
        self.assertIsInstance(unjelly(point, registry=pb.TypeRegistry()), RemotePoint)
        self.assertRaises(pb.InsecureJelly, unjelly, point, registry=pb.TypeRegistry(inherit=None))

    def test_unregister(self) -> None:
        """
        After C{unregister}, a registry refuses the type again.
        """
        registry = pb.TypeRegistry(inherit=None)
        registry.setUnjellyableForClass(Point, RemotePoint)
        registry.unregister(Point)
        self.assertRaises(pb.InsecureJelly, unjelly, jelly(Point(1, 2)), registry=registry)

    def test_allowGenericBuildsGenericCopy(self) -> None:
        """
        With C{allowGeneric=True} an unknown Copyable tag becomes an inert
        L{pb.GenericCopy} of its type name and state, which jellies back to the same
        s-expression and the same bytes.
        """
        sexp = jelly(Point(1, [2, "three"]))
        generic = unjelly(sexp, registry=pb.TypeRegistry(inherit=None, allowGeneric=True))
        self.assertEqual(generic, pb.GenericCopy(qual(Point), {"x": 1, "y": [2, "three"]}))
        self.assertEqual(jelly(generic), sexp)
        self.assertEqual(ourBytes(jelly(generic)), ourBytes(sexp))

    def test_genericCopyOfTwistedCopyable(self) -> None:
        """
        A Copyable jellied by Twisted arrives as a L{pb.GenericCopy} with Twisted's
        type name.
        """
        sexp = decodeOne(twistedBytes(twistedJelly.jelly(TwistedPoint(5, 6))))
        generic = unjelly(sexp, registry=pb.TypeRegistry(allowGeneric=True))
        self.assertIsInstance(generic, pb.GenericCopy)
        self.assertEqual(generic.typeName, qual(TwistedPoint))
        self.assertEqual(generic.state, {"x": 5, "y": 6})

    def test_withoutAllowGenericRefused(self) -> None:
        """
        Without C{allowGeneric} the same s-expression raises L{pb.InsecureJelly}.
        """
        sexp = jelly(Point(1, 2))
        self.assertRaises(pb.InsecureJelly, unjelly, sexp, registry=pb.TypeRegistry(inherit=None))
