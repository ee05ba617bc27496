"""
Holding the WebSocket writes one PB message causes, and sending them at
once.

An answer or a cache update arrives from the broker; the gateway writes a
message to one socket (an answer) or to many (an update to every watcher).
Twisted's TCP transport sends each on the next reactor iteration, after
registering for writability and before unregistering: two C{epoll_ctl}s and
an iteration more per socket.  While a broker's data is handled the
gateway's sockets hold what they write; when it is done each socket's bytes
go straight to its socket if nothing is queued there (L{pb.broker.writeNow}).
"""

from __future__ import annotations

from typing import Any

import pb
from pb.broker import writeNow

__all__ = ["BatchingBroker", "WriteBatch"]


class WriteBatch:
    """
    Writes held by transport while L{hold} is in effect (nested holds are
    counted), written at the outermost L{release}.
    """

    def __init__(self) -> None:
        self._holds = 0
        self._held: dict[Any, list[bytes]] = {}

    def hold(self) -> None:
        self._holds += 1

    def add(self, transport: Any, data: bytes) -> bool:
        """
        Hold C{data} for C{transport}, if writes are being held now.
        """
        if not self._holds:
            return False
        pieces = self._held.get(transport)
        if pieces is None:
            self._held[transport] = [data]
        else:
            pieces.append(data)
        return True

    def release(self) -> None:
        self._holds -= 1
        if self._holds or not self._held:
            return
        held, self._held = self._held, {}
        for transport, pieces in held.items():
            writeNow(transport, pieces[0] if len(pieces) == 1 else b"".join(pieces))


class BatchingBroker(pb.Broker):
    """
    The gateway's broker connections: the WebSocket writes caused by the
    data it receives are held in C{writes} and sent together.
    """

    writes: WriteBatch | None = None

    def dataReceived(self, data: bytes) -> None:
        writes = self.writes
        if writes is None:
            super().dataReceived(data)
            return
        writes.hold()
        try:
            super().dataReceived(data)
        finally:
            writes.release()
