"""
A chat service: rooms, join and leave, and members called back through
their minds, the classic PB pattern.

A member logs in with a mind (the C{client} argument of PB's login: a
Referenceable with C{remote_receive}; a web session's mind works the same
way through the gateway).  C{perspective_join(room)} returns a reference to
the member's seat in that room; C{seat.callRemote("say", text)} calls
C{mind.callRemote("receive", room, sender, text)} on every member, including
the speaker.  A mind that fails or is gone is dropped from the room.

    python examples/chat.py server [--port 8800]
    python examples/chat.py client --user alice [--password password] [--room lobby]

Users: alice/password, bob/secret, carol/hunter2, dave/letmein; anonymous
guests too.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger

import pb
from pb.credentials import InMemoryMD5Checker

USERS = {"alice": "password", "bob": "secret", "carol": "hunter2", "dave": "letmein"}
MAX_TEXT = 500


class Room:
    """
    One chat room: its members' names and minds.
    """

    log = Logger()

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Any] = {}

    def join(self, member: str, mind: Any) -> None:
        self.members[member] = mind
        self.broadcast("*", f"{member} joined")

    def leave(self, member: str, mind: Any) -> None:
        # Only the login that joined last holds the name's seat: an older
        # login of the same user leaving must not take it away.
        if self.members.get(member) is mind:
            del self.members[member]
            self.broadcast("*", f"{member} left")

    def broadcast(self, sender: str, text: str) -> defer.Deferred[list[Any]]:
        """
        Call every member's mind with C{receive(room, sender, text)}; fires
        with the answers (a failed delivery answers its error message).
        """
        deliveries = []
        for member, mind in list(self.members.items()):
            d = mind.callRemote("receive", self.name, sender, text)
            d.addErrback(self._undelivered, member, mind)
            deliveries.append(d)
        return defer.gatherResults(deliveries)

    def _undelivered(self, failure: Any, member: str, mind: Any) -> str:
        self.log.info("Message to {member} failed: {reason}", member=member,
                      reason=failure.getErrorMessage())
        if failure.check(pb.DeadReferenceError, pb.PBConnectionLost):
            if self.members.get(member) is mind:
                del self.members[member]
        return f"error: {failure.getErrorMessage()}"


class Seat(pb.Referenceable):
    """
    A member's place in one room, handed out by reference.
    """

    def __init__(self, room: Room, member: str, mind: Any) -> None:
        self.room = room
        self.member = member
        self.mind = mind

    def remote_say(self, text: str) -> defer.Deferred[list[Any]]:
        """Say something to the room; the answers of every member's mind."""
        if self.member not in self.room.members:
            raise pb.Error("you left this room")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise pb.Error(f"a message is 1 to {MAX_TEXT} characters")
        return self.room.broadcast(self.member, text)

    def remote_members(self) -> list[str]:
        """Who is in the room."""
        return sorted(self.room.members)

    def remote_leave(self) -> None:
        """Leave the room."""
        self.room.leave(self.member, self.mind)


class Chatter(pb.Perspective):
    """
    A logged-in chat user.
    """

    def __init__(self, service: ChatService, name: str, mind: Any) -> None:
        super().__init__(name)
        self.service = service
        self.name = name
        self.mind = mind
        self.rooms: set[str] = set()

    def perspective_join(self, room: str) -> Seat:
        """Join a room (created on first use); returns your seat in it."""
        if self.mind is None:
            raise pb.Error("log in with a mind (a client object) to chat")
        if not isinstance(room, str) or not room.isidentifier():
            raise pb.Error("room names are identifiers")
        chatRoom = self.service.room(room)
        chatRoom.join(self.name, self.mind)
        self.rooms.add(room)
        return Seat(chatRoom, self.name, self.mind)

    def perspective_rooms(self) -> list[str]:
        """The rooms that exist."""
        return sorted(self.service.rooms)

    def logout(self) -> None:
        for room in self.rooms:
            self.service.room(room).leave(self.name, self.mind)


class ChatService(pb.Realm):
    """
    The chat realm: rooms by name; users and guests become L{Chatter}s.
    """

    allowAnonymous = True
    demoUsers = USERS

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self._guests = itertools.count(1)

    def room(self, name: str) -> Room:
        if name not in self.rooms:
            self.rooms[name] = Room(name)
        return self.rooms[name]

    def createAvatar(self, avatarId: Any, mind: Any) -> Chatter:
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else f"guest{next(self._guests)}"
        return Chatter(self, name, mind)


def makeService() -> ChatService:
    """
    For C{pb-gateway serve --service examples.chat:makeService}.
    """
    return ChatService()


def makeFactory(service: ChatService | None = None) -> pb.PBServerFactory:
    checker = InMemoryMD5Checker()
    for name, password in USERS.items():
        checker.addUser(name, password)
    portal = Portal(service or ChatService(), [checker, AllowAnonymousAccess()])
    return pb.PBServerFactory(portal=portal)


class PrintingMind(pb.Referenceable):
    """
    A native client's mind: collects (and prints) what it receives.
    """

    def __init__(self, out: Callable[[str], Any] = print) -> None:
        self.received: list[tuple[str, str, str]] = []
        self.out = out

    def remote_receive(self, room: str, sender: str, text: str) -> str:
        self.received.append((room, sender, text))
        self.out(f"[{room}] {sender}: {text}")
        return "ok"


async def runClient(reactor: Any, host: str, port: int, user: str | None, password: str | None,
                    room: str, lines: list[str]) -> list[tuple[str, str, str]]:
    """
    Log in, join C{room}, say each of C{lines}, and return what was received.
    """
    factory = pb.PBClientFactory()
    await pb.connect(host, port, factory, reactor=reactor)
    mind = PrintingMind()
    credentials: Any = (
        UsernamePassword(user.encode(), (password or "").encode()) if user else Anonymous()
    )
    try:
        avatar = await factory.login(credentials, mind)
        seat = await avatar.callRemote("join", room)
        for line in lines:
            await seat.callRemote("say", line)
        await seat.callRemote("leave")
    finally:
        factory.disconnect()
    return mind.received


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("lines", nargs="*", default=["hello"])
    args = parser.parse_intermixed_args(argv)

    async def run(reactor: Any) -> None:
        if args.mode == "server":
            endpoint = endpoints.serverFromString(reactor, f"tcp:{args.port}")
            port = await endpoint.listen(makeFactory())
            print(f"chat service running on port {port.getHost().port}", flush=True)
            await defer.Deferred()
        else:
            await runClient(reactor, args.host, args.port, args.user, args.password,
                            args.room, args.lines)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main(sys.argv[1:])
