"""
A cheaper frame unmasker for autobahn.

Every frame a browser sends is masked.  Autobahn (with its native "NVX"
extension, the default) builds a CFFI masker object for each frame: a
C allocation with a finaliser and three foreign calls, about 8% of the
gateway's CPU per WebSocket call when profiled.  For the small frames of
JSON-RPC, XOR through Python's integers is several times cheaper, and it is
linear for large frames too.

L{install} makes autobahn's frame parser use L{IntXorMasker}; it changes
nothing else, and nothing if autobahn no longer looks the masker up where
it did (then L{install} returns C{False}).
"""

from __future__ import annotations

from typing import Any

__all__ = ["IntXorMasker", "install"]


class IntXorMasker:
    """
    The WebSocket masking of RFC 6455 section 5.3 with one 4-byte C{mask},
    over a frame's payload given in one or more pieces (autobahn's masker
    interface: C{process}, C{pointer}, C{reset}).
    """

    __slots__ = ("_mask", "_pointer")

    def __init__(self, mask: bytes) -> None:
        if len(mask) != 4:
            raise ValueError("a WebSocket mask is 4 bytes")
        self._mask = bytes(mask)
        self._pointer = 0

    def pointer(self) -> int:
        return self._pointer

    def reset(self) -> None:
        self._pointer = 0

    def process(self, data: bytes) -> bytes:
        size = len(data)
        if not size:
            return b""
        shift = self._pointer & 3
        mask = self._mask[shift:] + self._mask[:shift] if shift else self._mask
        key = (mask * ((size >> 2) + 1))[:size]
        self._pointer += size
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            size, "little"
        )


def createMasker(mask: bytes, length: int | None = None) -> IntXorMasker:
    """
    Autobahn's C{create_xor_masker(mask, length)}.
    """
    return IntXorMasker(mask)


def install() -> bool:
    """
    Make autobahn's WebSocket protocol unmask frames with L{IntXorMasker}.

    @return: whether autobahn's protocol module had the name replaced.
    """
    from autobahn.websocket import protocol

    module: Any = protocol
    if not callable(getattr(module, "create_xor_masker", None)):
        return False
    module.create_xor_masker = createMasker
    return True
