"""
Password login over Perspective Broker: the reference description's
authenticated example, ported to our C{pb}.  Users log in through a
C{twisted.cred} portal whose checker keeps only the MD5 digests of their
passwords (alice/password and bob/secret); the realm gives each login a
L{UserAvatar} whose C{perspective_*} methods the client calls, and the server
reports each logout.

From the repository root, start the server, then run the client in another
terminal::

    python examples/authenticated.py server              # listens on port 8800
    python examples/authenticated.py client              # logs in as alice
    python examples/authenticated.py client --user bob --password secret
    python examples/authenticated.py client --password wrong   # login refused
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

import pb
from pb.credentials import InMemoryMD5Checker

DEFAULT_PORT = 8800
CALL_TIMEOUT = 10.0
"""Seconds the client waits for any one answer."""
USERS = {"alice": "password", "bob": "secret"}

Output = Callable[[str], object]


class UserAvatar(pb.Avatar):
    """
    One logged-in user.
    """

    def __init__(self, username: str, clock: IReactorTime, out: Output) -> None:
        super().__init__(username.encode("utf-8"))
        self.username = username
        self.clock = clock
        self.out = out

    def perspective_getMessage(self) -> str:
        return f"Hello, {self.username}!"

    def perspective_getTime(self) -> str:
        return time.ctime(self.clock.seconds())

    def logout(self) -> None:
        self.out(f"{self.username} logged out")


class SimpleRealm(pb.Realm):
    """
    Gives every login a new L{UserAvatar}.
    """

    def __init__(self, clock: IReactorTime, out: Output) -> None:
        self.clock = clock
        self.out = out

    def createAvatar(self, avatarId: bytes, mind: object) -> UserAvatar:
        username = avatarId.decode("utf-8")
        self.out(f"{username} logged in")
        return UserAvatar(username, self.clock, self.out)


def makeFactory(clock: IReactorTime, out: Output = print) -> pb.PBServerFactory:
    """
    The server factory: a portal with L{SimpleRealm} and the users of L{USERS}.

    @param clock: where the avatars read the time.
    @param out: called with a line for each login and logout.
    """
    checker = InMemoryMD5Checker()
    for username, password in USERS.items():
        checker.addUser(username, password)
    return pb.PBServerFactory(portal=Portal(SimpleRealm(clock, out), [checker]), clock=clock)


async def serve(reactor: IReactorTime, endpoint: str, out: Output = print) -> None:
    """
    Listen on C{endpoint} (e.g. C{"tcp:8800"}) and serve until the process ends.
    """
    port = await endpoints.serverFromString(reactor, endpoint).listen(makeFactory(reactor, out))
    out(f"PB server running on port {port.getHost().port}")
    await Deferred()


async def runClient(
    reactor: IReactorTime,
    endpoint: str,
    username: str = "alice",
    password: str = "password",
    out: Output | None = None,
) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    log in, call the avatar's two methods, and disconnect (which logs out).

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if out is not None:
            out(line)

    factory = pb.PBClientFactory(options=pb.BrokerOptions(callTimeout=CALL_TIMEOUT), clock=reactor)
    broker = await endpoints.clientFromString(reactor, endpoint).connect(factory)
    try:
        try:
            avatar = await factory.login(UsernamePassword(username.encode(), password.encode()))
        except UnauthorizedLogin as e:
            report(f"Login failed: {e}")
            return lines
        report(f"Message: {await avatar.callRemote('getMessage')}")
        report(f"Server time: {await avatar.callRemote('getTime')}")
    finally:
        await disconnect(broker)
    return lines


async def disconnect(broker: pb.Broker) -> None:
    """
    Close a client connection and wait until it is closed.
    """
    if broker.disconnected or broker.transport is None:
        return
    lost: Deferred[None] = Deferred()
    broker.notifyOnDisconnect(lambda: lost.callback(None))
    broker.transport.loseConnection()
    await lost


def say(line: str) -> None:
    print(line, flush=True)


def startLogging(level: LogLevel) -> None:
    """
    Log events of C{level} and above to standard error.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Password login over PB.")
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="localhost", help="the server to connect to")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--password", default="password")
    args = parser.parse_args(argv)
    startLogging(LogLevel.info if args.mode == "server" else LogLevel.warn)
    if args.mode == "server":
        task.react(serve, [f"tcp:{args.port}", say])
    else:
        endpoint = f"tcp:host={args.host}:port={args.port}:timeout=10"
        task.react(runClient, [endpoint, args.user, args.password, say])


if __name__ == "__main__":
    main()
