"""
Banana, the s-expression wire encoding under Perspective Broker, as a sans-IO codec.

L{encode} (or an L{Encoder}, set up once per connection) turns an s-expression
(lists and tuples of lists, L{bytes}, L{int} and L{float}) into bytes, and
L{Decoder} turns bytes fed to it in chunks of any size back into values; neither
touches a reactor or a transport. The bytes produced are identical to those of
Twisted's C{twisted.spread.banana}, in both its C{"none"} dialect and its C{"pb"}
dialect (which sends the words of L{PB_VOCABULARY} as small numbers). Unlike
Twisted's decoder, which copies the rest of its buffer for every token,
L{Decoder} keeps an index into its buffer, so decoding takes time linear in the
input however it is chunked.
"""

from __future__ import annotations

import gc
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._gc import LARGE_INPUT

__all__ = [
    "MAX_DEPTH",
    "PB_VOCABULARY",
    "PREFIX_LIMIT",
    "SIZE_LIMIT",
    "BananaError",
    "BananaTooLarge",
    "Decoder",
    "Encoder",
    "Raw",
    "b1282int",
    "encode",
    "int2b128",
    "rawUnicode",
]


class BananaError(Exception):
    """
    Banana cannot encode a value, or the bytes being decoded are malformed or
    exceed a limit.
    """


class BananaTooLarge(BananaError):
    """
    A value given to L{encode} exceeds a size, prefix or nesting limit, so the
    peer would refuse it.
    """


PB_VOCABULARY: dict[bytes, int] = {
    # Jelly data types
    b"None": 1,
    b"class": 2,
    b"dereference": 3,
    b"reference": 4,
    b"dictionary": 5,
    b"function": 6,
    b"instance": 7,
    b"list": 8,
    b"module": 9,
    b"persistent": 10,
    b"tuple": 11,
    b"unpersistable": 12,
    # PB data types
    b"copy": 13,
    b"cache": 14,
    b"cached": 15,
    b"remote": 16,
    b"local": 17,
    b"lcache": 18,
    # PB protocol messages
    b"version": 19,
    b"login": 20,
    b"password": 21,
    b"challenge": 22,
    b"logged_in": 23,
    b"not_logged_in": 24,
    b"cachemessage": 25,
    b"message": 26,
    b"answer": 27,
    b"error": 28,
    b"decref": 29,
    b"decache": 30,
    b"uncache": 31,
}

SIZE_LIMIT = 640 * 1024
PREFIX_LIMIT = 64
MAX_DEPTH = 200

# Type bytes. The decoder's loop spells them as literals, which are faster to
# compare with than globals.
_LIST = 0x80
_INT = 0x81
_STRING = 0x82
_NEG = 0x83
_FLOAT = 0x84
_LONGINT = 0x85
_LONGNEG = 0x86
_VOCAB = 0x87

# Twisted sends ints in this range as INT or NEG, larger ones as LONGINT and
# smaller ones as LONGNEG.
_SMALLEST_INT = -(2**31)
_LARGEST_INT = 2**31 - 1

_packFloat = struct.Struct("!d").pack
_unpackFloat = struct.Struct("!d").unpack_from
_matchPrefix = re.compile(rb"[\x00-\x7f]*").match


def int2b128(integer: int) -> bytes:
    """
    Encode a non-negative integer as Banana's prefix: base 128, least
    significant digit first, one digit per byte with the high bit clear.

    @raise ValueError: if C{integer} is negative.
    """
    if integer < 128:
        if integer < 0:
            raise ValueError(f"can only encode non-negative integers, not {integer}")
        return _BYTES[integer]
    if integer < 16384:
        return bytes((integer & 0x7F, integer >> 7))
    digits = bytearray()
    while integer:
        digits.append(integer & 0x7F)
        integer >>= 7
    return bytes(digits)


def b1282int(st: bytes) -> int:
    """
    Decode a base 128 prefix written by L{int2b128}; the inverse of L{int2b128}.
    Like Twisted's, it adds each byte's full value times its weight.
    """
    value = 0
    for digit in reversed(st):
        value = (value << 7) + digit
    return value


_BYTES = [bytes((i,)) for i in range(128)]

# Whole encodings of the most common small values, and the headers of short
# strings and lists, so that encoding them is a lookup.
_CACHED = 1024
_SMALL_INTS: dict[int, bytes] = {}
for _i in range(_CACHED):
    _SMALL_INTS[_i] = int2b128(_i) + bytes((_INT,))
for _i in range(1, _CACHED):
    _SMALL_INTS[-_i] = int2b128(_i) + bytes((_NEG,))
_STRING_HEADERS = [int2b128(_i) + bytes((_STRING,)) for _i in range(_CACHED)]
_LIST_HEADERS = [int2b128(_i) + bytes((_LIST,)) for _i in range(_CACHED)]
_VOCAB_TOKENS = {_i: int2b128(_i) + bytes((_VOCAB,)) for _i in range(_CACHED)}
del _i
_FLOAT_TYPE = bytes((_FLOAT,))


def _intToken(value: int, largest: int, prefixLimit: int) -> bytes:
    """
    Encode an int the way Twisted does, given the largest magnitude the prefix
    limit allows.
    """
    if value >= 0:
        if value > largest:
            raise BananaTooLarge(
                f"int of {value.bit_length()} bits exceeds the prefix limit of "
                f"{prefixLimit} bytes ({7 * prefixLimit} bits)"
            )
        return int2b128(value) + bytes((_INT if value <= _LARGEST_INT else _LONGINT,))
    if -value > largest:
        raise BananaTooLarge(
            f"int of {value.bit_length()} bits exceeds the prefix limit of "
            f"{prefixLimit} bytes ({7 * prefixLimit} bits)"
        )
    return int2b128(-value) + bytes((_NEG if value >= _SMALLEST_INT else _LONGNEG,))


def _vocabToken(number: int) -> bytes:
    """
    Encode a vocabulary number outside the cached range.
    """
    return int2b128(number) + bytes((_VOCAB,))


def _scalarToken(
    obj: object,
    vocabularyGet: Callable[[bytes], int | None],
    largest: int,
    prefixLimit: int,
    sizeLimit: int,
) -> bytes | None:
    """
    Encode an instance of a subclass of L{int}, L{float} or L{bytes} the way
    Twisted's C{isinstance} checks accept it (C{True} is sent as the int 1), or
    return L{None} for an instance of a subclass of L{list} or L{tuple}.

    @raise BananaError: if Banana cannot send C{obj}.
    """
    if isinstance(obj, list | tuple):
        return None
    if isinstance(obj, int):
        return _intToken(int(obj), largest, prefixLimit)
    if isinstance(obj, float):
        return _FLOAT_TYPE + _packFloat(obj)
    if isinstance(obj, bytes):
        number = vocabularyGet(obj)
        if number is not None:
            return _vocabToken(number)
        return _stringHeader(len(obj), sizeLimit) + obj
    kind = type(obj)
    raise BananaError(f"Banana cannot send {kind.__module__}.{kind.__qualname__} objects")


class Raw(bytes):
    """
    Bytes that already are Banana tokens (a whole s-expression, encoded):
    L{encode} splices them into its output as they are.  The broker's
    jellier pre-encodes strings this way, which skips building and walking a
    small list for each one.
    """

    __slots__ = ()


_UNICODE_HEAD = int2b128(2) + bytes((_LIST,)) + int2b128(7) + bytes((_STRING,)) + b"unicode"
_rawUnicodeCache: dict[str, Raw] = {}


def rawUnicode(text: str, sizeLimit: int = SIZE_LIMIT) -> Raw | None:
    """
    The tokens of jelly's C{[b"unicode", utf8]} for C{text}, as Twisted
    encodes them in the C{"pb"} dialect, or L{None} if the UTF-8 is longer
    than C{sizeLimit} or is a vocabulary word.

    @raise UnicodeEncodeError: C{text} holds lone surrogates.
    """
    data = text.encode("utf-8")
    size = len(data)
    if size > sizeLimit or data in PB_VOCABULARY:
        # Too long, or a vocabulary word ("None", "list", ...) that the pb
        # dialect sends as its number: left to encode() as a list.
        return None
    raw = Raw(
        _UNICODE_HEAD
        + (_STRING_HEADERS[size] if size < _CACHED else int2b128(size) + bytes((_STRING,)))
        + data
    )
    if size <= 32:
        # Short strings (dictionary keys, names) repeat: remember some.
        if len(_rawUnicodeCache) >= 4096:
            _rawUnicodeCache.clear()
        _rawUnicodeCache[text] = raw
    return raw


def _stringHeader(size: int, sizeLimit: int) -> bytes:
    """
    Encode the header of a string of C{size} bytes.
    """
    if size > sizeLimit:
        raise BananaTooLarge(f"string of {size} bytes exceeds the size limit of {sizeLimit}")
    return int2b128(size) + bytes((_STRING,))


def encode(
    obj: object,
    vocabulary: Mapping[bytes, int] | None = None,
    sizeLimit: int = SIZE_LIMIT,
    prefixLimit: int = PREFIX_LIMIT,
    maxDepth: int = MAX_DEPTH,
) -> bytes:
    """
    Encode an s-expression as Banana, byte for byte as Twisted does.

    A connection that encodes many messages with the same settings keeps an
    L{Encoder} instead, which does the setup below once.

    @param obj: a L{list} or L{tuple} (sent as a list) of s-expressions, or
        L{bytes}, L{int} (L{bool} included, as Twisted sends it) or L{float}.
    @param vocabulary: the outgoing vocabulary of the C{"pb"} dialect, usually
        L{PB_VOCABULARY}: a string found in it is sent as its number. L{None}
        for the C{"none"} dialect.
    @param sizeLimit: the most items a list and the most bytes a string may hold.
    @param prefixLimit: the most prefix bytes the peer accepts, which bounds
        ints to magnitudes below C{2 ** (7 * prefixLimit)}.
    @param maxDepth: how deeply lists may nest; a top-level list is at depth 1.

    @raise BananaTooLarge: if a value exceeds a limit.
    @raise BananaError: if C{obj} holds a value of a type Banana cannot send.
    @raise ValueError: if C{prefixLimit} is less than 1.
    """
    if not gc.isenabled():
        return Encoder(vocabulary, sizeLimit, prefixLimit, maxDepth).encode(obj)
    # Paused before anything is allocated: a collection now would scan the
    # s-expression that a jelly (paused itself) may just have built.
    gc.disable()
    try:
        return Encoder(vocabulary, sizeLimit, prefixLimit, maxDepth).encode(obj)
    finally:
        gc.enable()


# Ints from the end of the cache up to this bound are encoded by arithmetic
# (three or four bytes), which is much cheaper than the general case; request
# IDs live here for the first two million calls of a connection.
_FAST_INTS = 1 << 21
_SMALL_INTS_ONE_BYTE = {value: token for value, token in _SMALL_INTS.items() if -128 < value < 128}


class Encoder:
    """
    Banana encoding with one dialect and one set of limits, set up once: a
    connection keeps one, so that encoding each message starts at once.

    The parameters are those of L{encode}.  Unlike L{encode}, it leaves the
    cycle collector alone: encoding allocates almost nothing that outlives
    it, and a broker's messages are mostly small.
    """

    __slots__ = ("_settings",)

    def __init__(
        self,
        vocabulary: Mapping[bytes, int] | None = None,
        sizeLimit: int = SIZE_LIMIT,
        prefixLimit: int = PREFIX_LIMIT,
        maxDepth: int = MAX_DEPTH,
    ) -> None:
        if prefixLimit < 1:
            raise ValueError(f"prefixLimit must be at least 1, not {prefixLimit}")
        largest = (1 << (7 * prefixLimit)) - 1
        self._settings = (
            (vocabulary if vocabulary is not None else {}).get,
            # The cached ints have prefixes of up to two bytes.
            (_SMALL_INTS if prefixLimit >= 2 else _SMALL_INTS_ONE_BYTE).get,
            min(_FAST_INTS, largest + 1),
            largest,
            prefixLimit,
            sizeLimit,
            # Sizes below this have cached headers and are within the size limit.
            min(_CACHED, sizeLimit + 1),
            maxDepth,
        )

    def encode(self, obj: object) -> bytes:
        """
        Encode one s-expression; see L{encode}.

        @raise BananaTooLarge: if a value exceeds a limit.
        @raise BananaError: if C{obj} holds a value of a type Banana cannot send.
        """
        (
            vocabularyGet,
            smallInts,
            fastInts,
            largest,
            prefixLimit,
            sizeLimit,
            cachedSizes,
            maxDepth,
        ) = self._settings
        stringHeaders = _STRING_HEADERS
        listHeaders = _LIST_HEADERS
        vocabTokens = _VOCAB_TOKENS.get
        packFloat = _packFloat
        floatType = _FLOAT_TYPE
        pieces: list[bytes] = []
        append = pieces.append
        joined: list[bytes] = []
        # The iterators of the enclosing lists; its length is the current depth.
        stack: list[Iterator[Any]] = []
        items: Iterator[Any] = iter((obj,))
        while True:
            for item in items:
                kind = type(item)
                if kind is Raw:
                    append(item)
                    continue
                if kind is bytes:
                    number = vocabularyGet(item)
                    if number is not None:
                        append(vocabTokens(number) or _vocabToken(number))
                        continue
                    size = len(item)
                    append(
                        stringHeaders[size]
                        if size < cachedSizes
                        else _stringHeader(size, sizeLimit)
                    )
                    append(item)
                    continue
                if kind is int:
                    token = smallInts(item)
                    if token is None:
                        if 0 <= item < fastInts:
                            token = (
                                bytes((item & 0x7F, item >> 7, _INT))
                                if item < 16384
                                else bytes((item & 0x7F, item >> 7 & 0x7F, item >> 14, _INT))
                            )
                        else:
                            token = _intToken(item, largest, prefixLimit)
                    append(token)
                    continue
                if kind is float:
                    append(floatType)
                    append(packFloat(item))
                    continue
                if kind is not list and kind is not tuple:
                    token = _scalarToken(item, vocabularyGet, largest, prefixLimit, sizeLimit)
                    if token is not None:
                        append(token)
                        continue
                # A list, a tuple, or an instance of a subclass of either.
                if len(stack) >= maxDepth:
                    raise BananaTooLarge(
                        f"lists nested {len(stack) + 1} deep exceed the depth limit of {maxDepth}"
                    )
                size = len(item)
                if size < cachedSizes:
                    append(listHeaders[size])
                elif size > sizeLimit:
                    raise BananaTooLarge(
                        f"list of {size} items exceeds the size limit of {sizeLimit}"
                    )
                else:
                    append(int2b128(size) + bytes((_LIST,)))
                if size:
                    stack.append(items)
                    items = iter(item)
                    break
            else:
                if not stack:
                    if joined:
                        joined.append(b"".join(pieces))
                        return b"".join(joined)
                    return b"".join(pieces)
                items = stack.pop()
                if len(pieces) > 4096:
                    # Joining a big message's pieces as it goes keeps them few and
                    # in cache, which is faster than joining them all at the end.
                    joined.append(b"".join(pieces))
                    pieces.clear()


class Decoder:
    """
    Decode a stream of Banana bytes into the top-level s-expressions it holds.

    Feed it bytes as they arrive, in chunks of any size; each L{feed} returns the
    expressions completed so far. Lists become L{list}, strings L{bytes}, ints
    L{int}, floats L{float}, and vocabulary numbers the L{bytes} they stand for.
    After an error the decoder refuses all further input.

    @ivar _pending: bytes received but not yet decoded: the beginning of an
        incomplete token, and whatever arrived after it.
    @ivar _need: how many bytes C{_pending} must hold before decoding can go on.
    @ivar _stack: for each list being filled, the list that encloses it and how
        many more items that one awaits; the first entry stands for the top
        level, which never fills.
    @ivar _bytesCopied: how many bytes the decoder has copied between buffers,
        which stays within a small multiple of the input size.
    """

    def __init__(
        self,
        vocabulary: Mapping[int, bytes] | None = None,
        sizeLimit: int = SIZE_LIMIT,
        prefixLimit: int = PREFIX_LIMIT,
        maxDepth: int = MAX_DEPTH,
    ) -> None:
        """
        @param vocabulary: the incoming vocabulary of the C{"pb"} dialect, from
            numbers to strings; L{None} for the C{"none"} dialect.
        @param sizeLimit: the most items a list and the most bytes a string may
            declare.
        @param prefixLimit: the most prefix bytes a token may have.
        @param maxDepth: how deeply lists may nest; a top-level list is at depth 1.

        @raise ValueError: if C{prefixLimit} is less than 1.
        """
        if prefixLimit < 1:
            raise ValueError(f"prefixLimit must be at least 1, not {prefixLimit}")
        self._vocabulary: dict[int, bytes] = {}
        self.setVocabulary(vocabulary)
        self._sizeLimit = sizeLimit
        self._prefixLimit = prefixLimit
        self._maxDepth = maxDepth
        self._pending = bytearray()
        self._need = 0
        self._stack: list[tuple[list[object], int]] = []
        self._current: list[object] = []
        self._remaining = -1
        self._failed = False
        self._bytesCopied = 0

    def setVocabulary(self, vocabulary: Mapping[int, bytes] | None) -> None:
        """
        Decode vocabulary numbers with C{vocabulary} from now on, as when a
        connection settles on the C{"pb"} dialect; L{None} refuses them.
        """
        self._vocabulary = dict(vocabulary) if vocabulary is not None else {}

    def feed(self, data: bytes | bytearray | memoryview) -> list[object]:
        """
        Decode another chunk of the stream. Strings are decoded as L{bytes}
        whatever type of buffer the chunk is.  The cycle collector is paused
        while a large chunk, or any part of a message spanning chunks, is
        decoded.

        @return: the top-level expressions completed by this chunk, in order.

        @raise BananaError: if the stream is malformed or exceeds a limit, or
            if an earlier call raised.
        """
        if self._failed:
            raise BananaError("decoder failed earlier")
        if type(data) is not bytes:
            data = bytes(data)
        pending = self._pending
        if pending:
            pending += data
            self._bytesCopied += len(data)
            if len(pending) < self._need:
                return []
            data = bytes(pending)
            self._bytesCopied += len(data)
            pending.clear()
        try:
            if (len(data) >= LARGE_INPUT or self._stack) and gc.isenabled():
                # Inline rather than through a helper: a bound method made
                # after the collector is back on would trigger a collection of
                # everything this chunk allocated.
                gc.disable()
                try:
                    return self._decode(data)
                finally:
                    gc.enable()
            return self._decode(data)
        except BananaError:
            self._failed = True
            raise

    def _decode(self, buf: bytes) -> list[object]:
        """
        Decode as many tokens of C{buf} as are complete and keep the rest.
        """
        results: list[object] = []
        stack = self._stack
        if stack:
            stack[0] = (results, -1)
            current = self._current
            remaining = self._remaining
        else:
            current = results
            remaining = -1
        vocabulary = self._vocabulary
        sizeLimit = self._sizeLimit
        prefixLimit = self._prefixLimit
        maxDepth = self._maxDepth
        twoByteFastPath = prefixLimit >= 2
        unpackFloat = _unpackFloat
        end = len(buf)
        pos = 0
        need = 0
        item: object
        while pos < end:
            start = pos
            try:
                kind = buf[pos]
                if kind < 0x80:
                    number = kind
                    kind = buf[pos + 1]
                    if kind >= 0x80:
                        pos += 2
                    elif twoByteFastPath and buf[pos + 2] >= 0x80:
                        number += kind << 7
                        kind = buf[pos + 2]
                        pos += 3
                    else:
                        match = _matchPrefix(buf, start, start + prefixLimit + 1)
                        # The pattern matches the empty string, so it always matches.
                        assert match is not None
                        pos = match.end()
                        if pos - start > prefixLimit:
                            raise BananaError(
                                f"token has more than the limit of {prefixLimit} prefix bytes"
                            )
                        kind = buf[pos]
                        number = b1282int(buf[start:pos])
                        pos += 1
                else:
                    number = 0
                    pos += 1
            except IndexError:
                # The buffer ends within a prefix no longer than the limit (the
                # match above refuses longer ones).
                pos = start
                need = end - start + 1
                break
            if kind == 0x82:  # STRING
                if number > sizeLimit:
                    raise BananaError(
                        f"string of {number} bytes exceeds the size limit of {sizeLimit}"
                    )
                stop = pos + number
                if stop > end:
                    pos = start
                    need = stop - start
                    break
                item = buf[pos:stop]
                pos = stop
            elif kind == 0x80:  # LIST
                if number > sizeLimit:
                    raise BananaError(
                        f"list of {number} items exceeds the size limit of {sizeLimit}"
                    )
                if len(stack) >= maxDepth:
                    raise BananaError(
                        f"lists nested {len(stack) + 1} deep exceed the depth limit of {maxDepth}"
                    )
                if number:
                    stack.append((current, remaining))
                    current = []
                    remaining = number
                    continue
                item = []
            elif kind == 0x81:  # INT
                item = number
            elif kind == 0x87:  # VOCAB
                word = vocabulary.get(number)
                if word is None:
                    if vocabulary:
                        raise BananaError(f"unknown vocabulary number {number}")
                    raise BananaError(
                        f"vocabulary number {number} received without a vocabulary"
                    )
                item = word
            elif kind == 0x84:  # FLOAT
                # Twisted ignores a float's prefix; so does this.
                stop = pos + 8
                if stop > end:
                    pos = start
                    need = stop - start
                    break
                item = unpackFloat(buf, pos)[0]
                pos = stop
            elif kind == 0x83 or kind == 0x86:  # NEG, LONGNEG
                item = -number
            elif kind == 0x85:  # LONGINT
                item = number
            else:
                raise BananaError(f"invalid type byte 0x{kind:02x}")
            current.append(item)
            remaining -= 1
            if not remaining:
                # The item completed the list being filled, and maybe the lists
                # enclosing it; the top level's count is negative and never
                # reaches zero.
                while True:
                    item = current
                    current, remaining = stack.pop()
                    current.append(item)
                    remaining -= 1
                    if remaining:
                        break
        if pos < end:
            self._pending += memoryview(buf)[pos:]
            self._bytesCopied += end - pos
        self._need = need
        # With no list open, current is this call's results list: keeping it
        # would hold a connection's last message decoded until more arrives.
        self._current = current if stack else []
        self._remaining = remaining
        return results
