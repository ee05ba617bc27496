"""
Tests for L{gateway._autobahn}: the frame unmasker autobahn is given gives
autobahn's own results.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gateway._autobahn import IntXorMasker, createMasker, install


def reference(mask: bytes, data: bytes) -> bytes:
    """
    RFC 6455 section 5.3, byte by byte.
    """
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


class MaskerTests(TestCase):
    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=2000),
           st.lists(st.integers(min_value=0, max_value=300), max_size=6))
    def test_piecesAsReference(self, mask: bytes, data: bytes, cuts: list[int]) -> None:
        """
        A payload unmasked in pieces (as autobahn feeds a frame that spans
        reads) is the RFC's result, and the pointer counts what was done.
        """
        masker = IntXorMasker(mask)
        pieces = []
        start = 0
        for cut in cuts:
            pieces.append(masker.process(data[start:start + cut]))
            start += cut
        pieces.append(masker.process(data[start:]))
        self.assertEqual(b"".join(pieces), reference(mask, data))
        self.assertEqual(masker.pointer(), len(data))
        masker.reset()
        self.assertEqual(masker.pointer(), 0)
        self.assertEqual(masker.process(data), reference(mask, data))

    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=600))
    def test_asAutobahn(self, mask: bytes, data: bytes) -> None:
        """
        The same bytes as the masker autobahn would have used.
        """
        from autobahn.nvx._xormasker import create_xor_masker

        self.assertEqual(createMasker(mask, len(data)).process(data),
                         create_xor_masker(mask, len(data)).process(data))

    def test_badMask(self) -> None:
        self.assertRaises(ValueError, IntXorMasker, b"abc")

    def test_installed(self) -> None:
        """
        Autobahn's frame parser looks the masker up where L{install} puts
        it: if a new autobahn stops doing so, this says so.
        """
        from autobahn.websocket import protocol

        self.assertTrue(install())
        self.assertIs(protocol.create_xor_masker, createMasker)
