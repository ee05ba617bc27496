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

import time
from collections.abc import Sequence

import _runner  # this folder's plumbing: a script's folder is on the path
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

import pb
from pb.credentials import InMemoryMD5Checker

USERS = {"alice": "password", "bob": "secret"}


class UserAvatar(pb.Avatar):
    """
    One logged-in user.
    """

    def __init__(self, username: str, clock: IReactorTime, out: _runner.Output) -> None:
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

    def __init__(self, clock: IReactorTime, out: _runner.Output) -> None:
        self.clock = clock
        self.out = out

    def createAvatar(self, avatarId: bytes, mind: object) -> UserAvatar:
        username = avatarId.decode("utf-8")
        self.out(f"{username} logged in")
        return UserAvatar(username, self.clock, self.out)


def makeFactory(clock: IReactorTime, out: _runner.Output = print) -> pb.PBServerFactory:
    """
    The server factory: a portal with L{SimpleRealm} and the users of L{USERS}.

    @param clock: where the avatars read the time.
    @param out: called with a line for each login and logout.
    """
    checker = InMemoryMD5Checker()
    for username, password in USERS.items():
        checker.addUser(username, password)
    return pb.PBServerFactory(portal=Portal(SimpleRealm(clock, out), [checker]), clock=clock)


async def runClient(
    reactor: IReactorTime,
    endpoint: str,
    username: str = "alice",
    password: str = "password",
    out: _runner.Output | None = None,
) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    log in, call the avatar's two methods, and disconnect (which logs out).

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    report = _runner.Report(out)
    async with _runner.connected(reactor, endpoint) as factory:
        try:
            avatar = await factory.login(UsernamePassword(username.encode(), password.encode()))
        except UnauthorizedLogin as e:
            report(f"Login failed: {e}")
            return report.lines
        report(f"Message: {await avatar.callRemote('getMessage')}")
        report(f"Server time: {await avatar.callRemote('getTime')}")
    return report.lines


def main(argv: Sequence[str] | None = None) -> None:
    _runner.main(
        argv,
        "Password login over PB.",
        makeFactory,
        runClient,
        clientOptions={"user": "alice", "password": "password"},
    )


if __name__ == "__main__":
    main()
