"""
A calculator served over Perspective Broker: the first example of the reference
description, ported to our C{pb}.  The server's root object answers C{add},
C{multiply} and C{divide}; dividing by zero fails with a C{ValueError} that
the client catches as a C{ValueError}.

From the repository root, start the server, then run the client in another
terminal::

    python examples/math_service.py server              # listens on port 8800
    python examples/math_service.py client              # connects to localhost:8800
    python examples/math_service.py server --port 0     # any free port; prints it
    python examples/math_service.py client --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

from collections.abc import Sequence

import _runner  # this folder's plumbing: a script's folder is on the path
from twisted.internet.interfaces import IReactorTime

import pb


class MathService(pb.Root):
    """
    The root object every connection gets: arithmetic on two numbers.
    """

    def remote_add(self, a: float, b: float) -> float:
        return a + b

    def remote_multiply(self, a: float, b: float) -> float:
        return a * b

    def remote_divide(self, a: float, b: float) -> float:
        if b == 0:
            raise ValueError("Division by zero")
        return a / b


def makeFactory() -> pb.PBServerFactory:
    """
    The server factory: every connection gets a L{MathService} as its root.
    """
    return pb.PBServerFactory(MathService())


async def runClient(
    reactor: IReactorTime, endpoint: str, out: _runner.Output | None = None
) -> list[str]:
    """
    Connect to the calculator at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    make the reference's three calls, and disconnect.

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    report = _runner.Report(out)
    async with _runner.connected(reactor, endpoint) as factory:
        root = await factory.getRootObject()
        report(f"5 + 3 = {await root.callRemote('add', 5, 3)}")
        report(f"4 * 7 = {await root.callRemote('multiply', 4, 7)}")
        try:
            await root.callRemote("divide", 10, 0)
        except ValueError as e:
            report(f"Division error: {e}")
    return report.lines


def main(argv: Sequence[str] | None = None) -> None:
    _runner.main(argv, "A calculator served over PB.", lambda clock, out: makeFactory(), runClient)


if __name__ == "__main__":
    main()
