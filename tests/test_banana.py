"""
Tests for L{pb.banana}: round trips, byte-for-byte agreement with Twisted's
C{twisted.spread.banana} in both dialects, every limit and error, and the
decoder's linear handling of its buffer.
"""

from __future__ import annotations

import enum
import gc
import struct
import sys
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana as twistedBanana
from twisted.trial.unittest import SynchronousTestCase

from pb.banana import (
    MAX_DEPTH,
    PB_VOCABULARY,
    PREFIX_LIMIT,
    SIZE_LIMIT,
    BananaError,
    BananaTooLarge,
    Decoder,
    Encoder,
    b1282int,
    encode,
    int2b128,
)

INCOMING_VOCABULARY = {number: word for word, number in PB_VOCABULARY.items()}
LARGEST = 2 ** (7 * PREFIX_LIMIT) - 1

ints = st.one_of(
    st.integers(-(2**40), 2**40),
    st.integers(-LARGEST, LARGEST),
    st.sampled_from(
        [0, 127, 128, 16383, 16384, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, LARGEST, -LARGEST]
    ),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
strings = st.one_of(st.binary(max_size=300), st.sampled_from(sorted(PB_VOCABULARY)))
scalars = st.one_of(ints, floats, strings)
expressions = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.lists(children, max_size=6).map(tuple)
    ),
    max_leaves=40,
)
# Twisted also sends bools, as ints.
twistedExpressions = st.recursive(
    st.one_of(scalars, st.booleans()),
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.lists(children, max_size=6).map(tuple)
    ),
    max_leaves=40,
)
vocabularies = st.sampled_from([None, PB_VOCABULARY])
codecSettings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def canonical(value: object) -> object:
    """
    Make C{value} comparable with C{==} to what decoding its encoding gives:
    tuples become lists, bools ints, and floats their bits, so that NaNs and
    -0.0 compare exactly.
    """
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, float):
        return ("float", struct.pack("!d", value))
    if isinstance(value, bool):
        return int(value)
    return value


class ReceivingBanana(twistedBanana.Banana):
    """
    Twisted's Banana protocol, keeping the expressions it receives.
    """

    def __init__(self) -> None:
        super().__init__(isClient=1)
        self.received: list[object] = []

    def expressionReceived(self, lst: object) -> None:
        self.received.append(lst)


def twistedProtocol(dialect: bytes) -> ReceivingBanana:
    """
    Make a Twisted Banana protocol that has settled on C{dialect}.
    """
    protocol = ReceivingBanana()
    protocol.connectionMade()
    protocol._selectDialect(dialect)
    return protocol


def twistedEncode(value: object, dialect: bytes) -> bytes:
    """
    Encode C{value} with Twisted's Banana in C{dialect}.
    """
    if dialect == b"none":
        return bytes(twistedBanana.encode(value))
    pieces: list[bytes] = []
    twistedProtocol(dialect)._encode(value, pieces.append)
    return b"".join(pieces)


def twistedDecode(data: bytes, dialect: bytes) -> list[object]:
    """
    Decode C{data} with Twisted's Banana in C{dialect}.
    """
    protocol = twistedProtocol(dialect)
    protocol.dataReceived(data)
    return protocol.received


def decodeInChunks(decoder: Decoder, data: bytes, splits: list[int]) -> list[object]:
    """
    Feed C{data} to C{decoder} cut at the offsets in C{splits}.
    """
    received: list[object] = []
    start = 0
    for stop in [*sorted(splits), len(data)]:
        received.extend(decoder.feed(data[start:stop]))
        start = stop
    return received


def nested(depth: int) -> list[object]:
    """
    Make lists nested C{depth} deep, the innermost one empty.
    """
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class RoundTripTests(SynchronousTestCase):
    """
    Whatever L{encode} produces, L{Decoder} turns back into the same values,
    however the bytes are chunked.
    """

    @codecSettings
    @given(st.lists(expressions, min_size=1, max_size=4), vocabularies, st.data())
    def test_roundTrip(
        self,
        values: list[object],
        vocabulary: dict[bytes, int] | None,
        data: st.DataObject,
    ) -> None:
        """
        A stream of expressions decodes to the same expressions when fed whole,
        byte by byte, and cut at arbitrary places, with or without the
        vocabulary.
        """
        stream = b"".join(encode(value, vocabulary) for value in values)
        incoming = INCOMING_VOCABULARY if vocabulary is not None else None
        expected = canonical(values)
        randomSplits = data.draw(
            st.lists(st.integers(0, len(stream)), max_size=20), label="splits"
        )
        for splits in ([], list(range(len(stream))), randomSplits):
            decoded = decodeInChunks(Decoder(incoming), stream, splits)
            self.assertEqual(canonical(decoded), expected)

    def test_valueTypes(self) -> None:
        """
        Lists decode as lists, strings as bytes, ints of every width and sign
        as ints, floats as floats, and vocabulary numbers as their words.
        """
        value = [b"abc", 5, -5, 2**40, -(2**40), 1.25, [], b"dictionary"]
        decoded = Decoder(INCOMING_VOCABULARY).feed(encode(value, PB_VOCABULARY))
        self.assertEqual(decoded, [value])
        [result] = decoded
        assert isinstance(result, list)
        self.assertEqual(
            [type(item) for item in result], [bytes, int, int, int, int, float, list, bytes]
        )

    def test_partialStateAcrossFeeds(self) -> None:
        """
        An expression cut inside nested lists, a prefix, a string body and a
        float is completed by later feeds, and only complete top-level
        expressions are returned.
        """
        value = [[b"x" * 200, [2**40, 1.5]], [b"y"], 7]
        stream = encode(value) + encode(b"next")
        decoder = Decoder()
        self.assertEqual(decoder.feed(stream[:4]), [])
        self.assertEqual(decoder.feed(stream[4:150]), [])
        self.assertEqual(decoder.feed(stream[150:-10]), [])
        self.assertEqual(decoder.feed(stream[-10:]), [value, b"next"])

    def test_bytesLikeInput(self) -> None:
        """
        Chunks given as C{bytearray} or C{memoryview} still decode strings as
        immutable L{bytes}.
        """
        stream = encode([b"abc", [b"de"]])
        decoder = Decoder()
        received = decoder.feed(bytearray(stream[:9])) + decoder.feed(memoryview(stream)[9:])
        self.assertEqual(received, [[b"abc", [b"de"]]])
        [value] = received
        assert isinstance(value, list)
        self.assertIs(type(value[0]), bytes)
        self.assertIs(type(value[1][0]), bytes)


    def test_idleDecoderHoldsNoMessage(self) -> None:
        """
        Once a chunk ends between messages, the decoder keeps no reference to
        what it returned: an idle connection does not hold its last message
        (for the gateway, a large introspection answer per PB login).
        """
        decoder = Decoder()
        received = decoder.feed(encode([b"x" * 100, [1, 2]]) + encode(b"last"))
        self.assertEqual(received, [[b"x" * 100, [1, 2]], b"last"])
        # One reference from the name, one from getrefcount's argument.
        self.assertEqual(sys.getrefcount(received), 2)

class TwistedCompatibilityTests(SynchronousTestCase):
    """
    The bytes are the ones Twisted's Banana sends and accepts.
    """

    @codecSettings
    @given(twistedExpressions)
    def test_sameBytesAsTwistedWithoutVocabulary(self, value: object) -> None:
        """
        Without a vocabulary, L{encode} gives the bytes of Twisted's "none"
        dialect.
        """
        self.assertEqual(encode(value), twistedEncode(value, b"none"))

    @codecSettings
    @given(twistedExpressions)
    def test_sameBytesAsTwistedWithVocabulary(self, value: object) -> None:
        """
        With L{PB_VOCABULARY}, L{encode} gives the bytes of Twisted's "pb"
        dialect.
        """
        self.assertEqual(encode(value, PB_VOCABULARY), twistedEncode(value, b"pb"))

    @codecSettings
    @given(twistedExpressions, st.sampled_from([b"none", b"pb"]))
    def test_decodeTwistedBytes(self, value: object, dialect: bytes) -> None:
        """
        L{Decoder} decodes what Twisted sends to what Twisted's own decoder
        makes of it.
        """
        data = twistedEncode(value, dialect)
        decoder = Decoder(INCOMING_VOCABULARY if dialect == b"pb" else None)
        self.assertEqual(
            canonical(decoder.feed(data)), canonical(twistedDecode(data, dialect))
        )

    def test_floatPrefixIgnored(self) -> None:
        """
        A float token with a prefix, which Twisted never sends but accepts,
        decodes as Twisted decodes it: the prefix is ignored.
        """
        data = b"\x05\x84" + struct.pack("!d", 1.5)
        self.assertEqual(twistedDecode(data, b"none"), [1.5])
        self.assertEqual(Decoder().feed(data), [1.5])

    def test_boundaryValues(self) -> None:
        """
        Values at the edges of Twisted's encodings (INT against LONGINT, NEG
        against LONGNEG, one-, two- and three-byte prefixes, the largest int and
        string) encode exactly as Twisted encodes them.
        """
        values: list[object] = [
            0,
            127,
            128,
            16383,
            16384,
            2**31 - 1,
            2**31,
            -1,
            -(2**31),
            -(2**31) - 1,
            LARGEST,
            -LARGEST,
            True,
            False,
            b"x" * 1023,
            b"x" * 1024,
            b"x" * 16384,
            b"x" * SIZE_LIMIT,
            list(range(1024)),
            [b"version", b"not a word", [b"None"]],
        ]
        for value in values:
            self.assertEqual(encode(value), twistedEncode(value, b"none"))
            self.assertEqual(encode(value, PB_VOCABULARY), twistedEncode(value, b"pb"))

    def test_bigMessage(self) -> None:
        """
        A message of many nested lists, whose pieces the encoder joins as it
        goes, encodes exactly as Twisted encodes it.
        """
        value = [[b"item", i, [b"dictionary", i * 0.5, [b"x" * (i % 300)]]] for i in range(5000)]
        self.assertEqual(encode(value), twistedEncode(value, b"none"))
        self.assertEqual(encode(value, PB_VOCABULARY), twistedEncode(value, b"pb"))

    def test_subclasses(self) -> None:
        """
        Instances of subclasses of the types Banana sends are sent as Twisted
        sends them, a bytes subclass found in the vocabulary included.
        """

        class Colour(enum.IntEnum):
            red = 300

        class Word(bytes):
            pass

        class Ratio(float):
            pass

        class Items(list[object]):
            pass

        value = [Colour.red, Word(b"answer"), Word(b"other"), Ratio(0.5), Items([1, (2,)])]
        self.assertEqual(encode(value), twistedEncode(value, b"none"))
        self.assertEqual(encode(value, PB_VOCABULARY), twistedEncode(value, b"pb"))

    def test_vocabulary(self) -> None:
        """
        L{PB_VOCABULARY} is Twisted's outgoing vocabulary, and the limits'
        defaults are Twisted's.
        """
        self.assertEqual(PB_VOCABULARY, twistedBanana.Banana.outgoingVocabulary)
        self.assertEqual(SIZE_LIMIT, twistedBanana.SIZE_LIMIT)
        self.assertEqual(PREFIX_LIMIT, twistedBanana._PREFIX_LIMIT)

    @given(st.integers(0, 2**500))
    def test_int2b128(self, integer: int) -> None:
        """
        L{int2b128} writes the bytes Twisted's writes, and L{b1282int} reads
        them back.
        """
        pieces: list[bytes] = []
        twistedBanana.int2b128(integer, pieces.append)
        self.assertEqual(int2b128(integer), b"".join(pieces))
        self.assertEqual(b1282int(int2b128(integer)), integer)

    @given(st.binary(max_size=70))
    def test_b1282int(self, data: bytes) -> None:
        """
        L{b1282int} reads any bytes as Twisted's does, high bits included.
        """
        self.assertEqual(b1282int(data), twistedBanana.b1282int(data))

    def test_int2b128Negative(self) -> None:
        """
        L{int2b128} refuses negative integers.
        """
        self.assertRaises(ValueError, int2b128, -1)


class EncodeLimitTests(SynchronousTestCase):
    """
    L{encode} refuses values the peer would refuse, with L{BananaTooLarge}
    naming the limit, and accepts values exactly at each limit.
    """

    def assertTooLarge(self, message: str, call: Callable[[], object]) -> None:
        """
        C{call()} raises L{BananaTooLarge} with C{message}.
        """
        error = self.assertRaises(BananaTooLarge, call)
        self.assertEqual(str(error), message)

    def test_stringSize(self) -> None:
        """
        A string of C{sizeLimit} bytes is sent; one more byte is refused.
        """
        self.assertTrue(encode(b"x" * SIZE_LIMIT).startswith(int2b128(SIZE_LIMIT) + b"\x82"))
        self.assertTooLarge(
            "string of 655361 bytes exceeds the size limit of 655360",
            lambda: encode([b"x" * (SIZE_LIMIT + 1)]),
        )

    def test_smallStringSizeLimit(self) -> None:
        """
        A size limit below the lengths whose headers are cached still bounds
        short strings.
        """
        self.assertEqual(encode(b"x" * 10, sizeLimit=10), b"\x0a\x82" + b"x" * 10)
        self.assertTooLarge(
            "string of 11 bytes exceeds the size limit of 10",
            lambda: encode(b"x" * 11, sizeLimit=10),
        )

    def test_listSize(self) -> None:
        """
        A list or tuple of C{sizeLimit} items is sent; one more item is
        refused.
        """
        self.assertTrue(encode([0] * SIZE_LIMIT).startswith(int2b128(SIZE_LIMIT) + b"\x80"))
        self.assertTooLarge(
            "list of 655361 items exceeds the size limit of 655360",
            lambda: encode((0,) * (SIZE_LIMIT + 1)),
        )
        self.assertEqual(encode([0] * 3, sizeLimit=3), b"\x03\x80" + b"\x00\x81" * 3)
        self.assertTooLarge(
            "list of 4 items exceeds the size limit of 3", lambda: encode([0] * 4, sizeLimit=3)
        )

    def test_intSize(self) -> None:
        """
        Ints of magnitude up to C{2 ** (7 * prefixLimit) - 1} are sent; larger
        ones are refused.
        """
        self.assertEqual(encode(LARGEST), b"\x7f" * 64 + b"\x85")
        self.assertEqual(encode(-LARGEST), b"\x7f" * 64 + b"\x86")
        message = "int of 449 bits exceeds the prefix limit of 64 bytes (448 bits)"
        self.assertTooLarge(message, lambda: encode(LARGEST + 1))
        self.assertTooLarge(message, lambda: encode(-LARGEST - 1))
        self.assertEqual(encode(2**14 - 1, prefixLimit=2), b"\x7f\x7f\x81")
        self.assertTooLarge(
            "int of 15 bits exceeds the prefix limit of 2 bytes (14 bits)",
            lambda: encode([-(2**14)], prefixLimit=2),
        )

    def test_depth(self) -> None:
        """
        Lists nested C{maxDepth} deep are sent; one level more is refused,
        however short the lists.
        """
        self.assertEqual(encode(nested(3), maxDepth=3), b"\x01\x80\x01\x80\x00\x80")
        self.assertTooLarge(
            "lists nested 4 deep exceed the depth limit of 3",
            lambda: encode(nested(4), maxDepth=3),
        )
        self.assertTooLarge(
            "lists nested 3 deep exceed the depth limit of 2",
            lambda: encode([1, [2, (3,)]], maxDepth=2),
        )
        encode(nested(MAX_DEPTH))
        self.assertRaises(BananaTooLarge, encode, nested(MAX_DEPTH + 1))

    def test_cycle(self) -> None:
        """
        A list that contains itself is refused by the depth limit instead of
        exhausting the stack.
        """
        loop: list[object] = []
        loop.append(loop)
        self.assertRaises(BananaTooLarge, encode, loop)

    def test_unsupportedTypes(self) -> None:
        """
        Values of types Banana cannot send raise a plain L{BananaError} naming
        the type, wherever they are.
        """
        for value in ["text", None, {}, {1}, object(), [1, [b"x", "text"]]]:
            error = self.assertRaises(BananaError, encode, value)
            self.assertNotIsInstance(error, BananaTooLarge)
            self.assertIn("Banana cannot send", str(error))
        error = self.assertRaises(BananaError, encode, [b"x", "text"])
        self.assertEqual(str(error), "Banana cannot send builtins.str objects")

    def test_prefixLimitAtLeastOne(self) -> None:
        """
        A prefix limit below 1, which would leave no room for any int, is
        refused.
        """
        self.assertRaises(ValueError, encode, 0, prefixLimit=0)
        self.assertRaises(ValueError, Decoder, prefixLimit=0)


class DecoderErrorTests(SynchronousTestCase):
    """
    L{Decoder} raises L{BananaError} for malformed input and input beyond its
    limits, as early as it can tell, and stays failed.
    """

    def assertFails(self, message: str, decoder: Decoder, data: bytes) -> None:
        """
        Feeding C{data} to C{decoder} raises L{BananaError} with C{message}.
        """
        error = self.assertRaises(BananaError, decoder.feed, data)
        self.assertEqual(str(error), message)

    def test_prefixLength(self) -> None:
        """
        A prefix of C{prefixLimit} bytes is read; a longer one is refused.
        """
        self.assertEqual(Decoder().feed(b"\x7f" * 64 + b"\x85"), [LARGEST])
        self.assertFails(
            "token has more than the limit of 64 prefix bytes",
            Decoder(),
            b"\x01" * 65 + b"\x81",
        )

    def test_prefixLengthBeforeTypeByte(self) -> None:
        """
        A prefix longer than the limit is refused before its type byte
        arrives, even when it arrives byte by byte.
        """
        decoder = Decoder()
        self.assertEqual(decoder.feed(b"\x01" * 64), [])
        self.assertFails(
            "token has more than the limit of 64 prefix bytes", decoder, b"\x01"
        )
        decoder = Decoder()
        for _ in range(64):
            self.assertEqual(decoder.feed(b"\x01"), [])
        self.assertRaises(BananaError, decoder.feed, b"\x01")

    def test_smallPrefixLimits(self) -> None:
        """
        Prefix limits of one and two bytes are enforced on the short prefixes
        the decoder reads fastest.
        """
        self.assertEqual(Decoder(prefixLimit=1).feed(b"\x05\x81"), [5])
        self.assertFails(
            "token has more than the limit of 1 prefix bytes",
            Decoder(prefixLimit=1),
            b"\x05\x01\x81",
        )
        self.assertFails(
            "token has more than the limit of 1 prefix bytes",
            Decoder(prefixLimit=1),
            b"\x05\x01",
        )
        self.assertEqual(Decoder(prefixLimit=2).feed(b"\x05\x01\x81"), [133])
        self.assertFails(
            "token has more than the limit of 2 prefix bytes",
            Decoder(prefixLimit=2),
            b"\x05\x01\x01\x81",
        )

    def test_invalidTypeByte(self) -> None:
        """
        A type byte Banana does not define is refused.
        """
        self.assertFails("invalid type byte 0x88", Decoder(), b"\x01\x88")
        self.assertFails("invalid type byte 0xff", Decoder(), b"\xff")

    def test_stringSize(self) -> None:
        """
        A string declaring more than C{sizeLimit} bytes is refused as soon as
        its header arrives; one of exactly C{sizeLimit} bytes is awaited.
        """
        decoder = Decoder()
        self.assertEqual(decoder.feed(int2b128(SIZE_LIMIT) + b"\x82" + b"x" * 100), [])
        self.assertEqual(decoder.feed(b"x" * (SIZE_LIMIT - 100)), [b"x" * SIZE_LIMIT])
        self.assertFails(
            "string of 655361 bytes exceeds the size limit of 655360",
            Decoder(),
            int2b128(SIZE_LIMIT + 1) + b"\x82",
        )
        self.assertFails(
            "string of 11 bytes exceeds the size limit of 10", Decoder(sizeLimit=10), b"\x0b\x82"
        )

    def test_listSize(self) -> None:
        """
        A list declaring more than C{sizeLimit} items is refused as soon as its
        header arrives.
        """
        self.assertEqual(Decoder(sizeLimit=2).feed(b"\x02\x80\x01\x81\x02\x81"), [[1, 2]])
        self.assertFails(
            "list of 655361 items exceeds the size limit of 655360",
            Decoder(),
            int2b128(SIZE_LIMIT + 1) + b"\x80",
        )
        self.assertFails(
            "list of 3 items exceeds the size limit of 2", Decoder(sizeLimit=2), b"\x03\x80"
        )

    def test_depth(self) -> None:
        """
        Lists nested C{maxDepth} deep are decoded; one level more is refused,
        even when the innermost list is empty.
        """
        self.assertEqual(Decoder(maxDepth=3).feed(b"\x01\x80\x01\x80\x00\x80"), [nested(3)])
        self.assertFails(
            "lists nested 4 deep exceed the depth limit of 3",
            Decoder(maxDepth=3),
            b"\x01\x80\x01\x80\x01\x80\x00\x80",
        )
        deep = encode(nested(MAX_DEPTH))
        self.assertEqual(Decoder().feed(deep), [nested(MAX_DEPTH)])
        self.assertRaises(BananaError, Decoder().feed, b"\x01\x80" + deep)

    def test_vocabulary(self) -> None:
        """
        A vocabulary number decodes to its word with a vocabulary, and is
        refused when unknown or when there is no vocabulary.
        """
        self.assertEqual(Decoder(INCOMING_VOCABULARY).feed(b"\x1f\x87"), [b"uncache"])
        self.assertFails(
            "unknown vocabulary number 32", Decoder(INCOMING_VOCABULARY), b"\x20\x87"
        )
        self.assertFails(
            "vocabulary number 1 received without a vocabulary", Decoder(), b"\x01\x87"
        )

    def test_setVocabulary(self) -> None:
        """
        L{Decoder.setVocabulary} switches dialect between feeds, as a
        connection does once it has negotiated "pb".
        """
        decoder = Decoder()
        self.assertEqual(decoder.feed(encode([b"pb", b"none"])), [[b"pb", b"none"]])
        decoder.setVocabulary(INCOMING_VOCABULARY)
        self.assertEqual(decoder.feed(encode([b"version", 6], PB_VOCABULARY)), [[b"version", 6]])
        decoder.setVocabulary(None)
        self.assertRaises(BananaError, decoder.feed, b"\x13\x87")

    def test_failedStaysFailed(self) -> None:
        """
        After an error, the decoder refuses all input, valid or not.
        """
        decoder = Decoder()
        self.assertRaises(BananaError, decoder.feed, b"\x01\x80\xff")
        self.assertFails("decoder failed earlier", decoder, encode(1))
        self.assertFails("decoder failed earlier", decoder, b"")


class LinearityTests(SynchronousTestCase):
    """
    The decoder copies each byte a bounded number of times, however the input
    is chunked, so decoding is linear in the input. L{Decoder._bytesCopied}
    counts every byte the decoder copies between its buffers; a decoder that
    rebuilt its buffer per token or per chunk, as Twisted's does, would copy
    quadratically many.
    """

    def test_oneChunkOfManyExpressions(self) -> None:
        """
        One chunk of 20,000 expressions is decoded in place: all of them come
        back, nothing is copied, and nothing is left buffered.
        """
        values = [[b"message", i, [b"x" * (i % 50), i * 0.5]] for i in range(20_000)]
        stream = b"".join(encode(value) for value in values)
        decoder = Decoder()
        self.assertEqual(decoder.feed(stream), values)
        self.assertEqual(decoder._bytesCopied, 0)
        self.assertEqual(len(decoder._pending), 0)

    def test_manyExpressionsInSmallChunks(self) -> None:
        """
        20,000 expressions fed in 4 KiB chunks are all decoded, copying no
        more than three times the input.
        """
        values = [[b"message", i, [b"x" * (i % 50), i * 0.5]] for i in range(20_000)]
        stream = b"".join(encode(value) for value in values)
        decoder = Decoder()
        self.assertEqual(decodeInChunks(decoder, stream, list(range(0, len(stream), 4096))), values)
        self.assertLessEqual(decoder._bytesCopied, 3 * len(stream))
        self.assertEqual(len(decoder._pending), 0)

    def test_bigStringInSmallChunks(self) -> None:
        """
        A string of nearly C{SIZE_LIMIT} bytes fed in 4 KiB chunks is kept
        until complete and copied a bounded number of times, not once per
        chunk.
        """
        stream = encode([b"x" * (SIZE_LIMIT - 10), b"y" * (SIZE_LIMIT - 10)])
        decoder = Decoder()
        decoded = decodeInChunks(decoder, stream, list(range(0, len(stream), 4096)))
        self.assertEqual(decoded, [[b"x" * (SIZE_LIMIT - 10), b"y" * (SIZE_LIMIT - 10)]])
        self.assertLessEqual(decoder._bytesCopied, 3 * len(stream))

    def test_bigStringByteByByte(self) -> None:
        """
        A 64 KiB string fed one byte at a time is copied a bounded number of
        times, not once per byte.
        """
        stream = encode(b"z" * 65536)
        decoder = Decoder()
        self.assertEqual(
            decodeInChunks(decoder, stream, list(range(len(stream)))), [b"z" * 65536]
        )
        self.assertLessEqual(decoder._bytesCopied, 3 * len(stream))


class EncoderTests(SynchronousTestCase):
    """
    An L{Encoder}, set up once for a connection, encodes exactly as L{encode}
    does with the same settings, message after message.
    """

    @codecSettings
    @given(st.lists(twistedExpressions, min_size=1, max_size=5), vocabularies)
    def test_sameBytesAsEncode(
        self, values: list[object], vocabulary: dict[bytes, int] | None
    ) -> None:
        """
        One encoder used for several values gives each the bytes L{encode}
        gives it: nothing carries over from one message to the next.
        """
        encoder = Encoder(vocabulary)
        for value in values:
            self.assertEqual(encoder.encode(value), encode(value, vocabulary))

    def test_computedInts(self) -> None:
        """
        Ints past the cached ones, which the encoder computes (request IDs
        after the first thousand calls), encode as Twisted encodes them, at
        each edge of the computed range.
        """
        for value in [1023, 1024, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**31 - 1, 2**31]:
            for sign in (1, -1):
                message = [b"answer", sign * value, [sign * value]]
                self.assertEqual(encode(message), twistedEncode(message, b"none"), value)
                self.assertEqual(
                    Encoder(PB_VOCABULARY).encode(message), twistedEncode(message, b"pb"), value
                )

    def test_smallPrefixLimitsBoundInts(self) -> None:
        """
        The prefix limit bounds every int, those the encoder has cached or
        computes included: with one prefix byte, 127 is sent and 128 refused;
        with two, 16383 is sent and 16384 refused.
        """
        self.assertEqual(Encoder(prefixLimit=1).encode([127, -127]), b"\x02\x80\x7f\x81\x7f\x83")
        for value in (128, -128, 1000):
            self.assertRaises(BananaTooLarge, Encoder(prefixLimit=1).encode, value)
        self.assertEqual(Encoder(prefixLimit=2).encode(16383), b"\x7f\x7f\x81")
        self.assertRaises(BananaTooLarge, Encoder(prefixLimit=2).encode, 16384)
        self.assertEqual(Encoder(prefixLimit=3).encode(16384), b"\x00\x00\x01\x81")

    def test_prefixLimitAtLeastOne(self) -> None:
        """
        An encoder with a prefix limit below 1 is refused, as L{encode} refuses it.
        """
        self.assertRaises(ValueError, Encoder, prefixLimit=0)


class RecordingDecoder(Decoder):
    """
    A decoder that records, for each chunk it decodes, whether the cycle
    collector was running.
    """

    def __init__(self) -> None:
        super().__init__()
        self.collecting: list[bool] = []

    def _decode(self, buf: bytes) -> list[object]:
        self.collecting.append(gc.isenabled())
        return super()._decode(buf)


class CycleCollectorTests(SynchronousTestCase):
    """
    The decoder pauses the cycle collector for large input only: a large chunk
    allocates enough to trigger collections that would scan it in vain, while
    pausing around a small one would cost more than it saves.
    """

    def setUp(self) -> None:
        # The collector is on in a server; these tests need it on too.
        if not gc.isenabled():
            gc.enable()
            self.addCleanup(gc.disable)

    def test_smallChunkNotPaused(self) -> None:
        """
        A chunk holding one small message is decoded with the collector running.
        """
        decoder = RecordingDecoder()
        self.assertEqual(decoder.feed(encode([b"answer", 1, 8])), [[b"answer", 1, 8]])
        self.assertEqual(decoder.collecting, [True])

    def test_largeInputPaused(self) -> None:
        """
        A large chunk is decoded with the collector paused, and so is every
        chunk of a message that spans chunks; the collector runs again after.
        """
        message = [[b"item", i] for i in range(2000)]
        stream = encode(message)
        decoder = RecordingDecoder()
        self.assertEqual(decoder.feed(stream), [message])
        self.assertEqual(decoder.collecting, [False])
        decoder = RecordingDecoder()
        self.assertEqual(decodeInChunks(decoder, stream, [100, 200]), [message])
        self.assertEqual(decoder.collecting, [True, False, False])
        self.assertTrue(gc.isenabled())
