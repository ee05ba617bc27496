"""
Remote errors over Perspective Broker: the reference description's error
handling example, ported to our C{pb}.  The server's methods raise
C{ValueError}s; our client receives them as L{pb.RemoteError}s that are also
C{ValueError}s, so C{except ValueError} catches a remote C{ValueError} as if it
had been raised locally.  (A Twisted client gets a C{CopiedFailure} instead.)

Exceptions that are not L{pb.Error}s are unexpected, so the server logs their
tracebacks; the client gets only the type and message.

From the repository root, start the server, then run the client in another
terminal::

    python examples/error_handling.py server              # listens on port 8800
    python examples/error_handling.py client              # connects to localhost:8800
"""

from __future__ import annotations

from collections.abc import Sequence

import _runner  # this folder's plumbing: a script's folder is on the path
from twisted.internet.interfaces import IReactorTime

import pb


class ErrorService(pb.Root):
    """
    The root object every connection gets: methods that fail.
    """

    def remote_causeError(self) -> None:
        raise ValueError("Something went wrong!")

    def remote_safeDivide(self, a: float, b: float) -> float:
        try:
            return a / b
        except ZeroDivisionError:
            raise ValueError("Cannot divide by zero")


def makeFactory() -> pb.PBServerFactory:
    """
    The server factory: every connection gets an L{ErrorService} as its root.
    """
    return pb.PBServerFactory(ErrorService())


async def runClient(
    reactor: IReactorTime, endpoint: str, out: _runner.Output | None = None
) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    make calls that fail and one that succeeds, and disconnect.

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    report = _runner.Report(out)
    async with _runner.connected(reactor, endpoint) as factory:
        root = await factory.getRootObject()
        try:
            await root.callRemote("causeError")
        except pb.RemoteError as e:
            report(f"Remote error: {e} (a {e.remoteType})")
        report(f"10 / 4 = {await root.callRemote('safeDivide', 10, 4)}")
        try:
            await root.callRemote("safeDivide", 10, 0)
        except ValueError as e:
            report(f"Division error: {e}")
        try:
            await root.callRemote("noSuchMethod")
        except AttributeError as e:
            report(f"Missing method: {e}")
    return report.lines


def main(argv: Sequence[str] | None = None) -> None:
    _runner.main(argv, "Remote errors over PB.", lambda clock, out: makeFactory(), runClient)


if __name__ == "__main__":
    main()
