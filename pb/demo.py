"""
The demo service: one PB service that exercises every flavor.

It is what C{pb-gateway broker} (and later C{serve}) runs when no
C{--service} is given:

  - anonymous guests get the reference math methods (C{add}, C{multiply},
    C{divide} with its division-by-zero error), a per-session C{counter}
    (a Referenceable), and the live objects C{stats} and C{board};
  - the demo users C{alice}/C{password} and C{bob}/C{secret} also get the
    authenticated example's C{getMessage}/C{getTime}, the data service's
    C{store}/C{retrieve}/C{list_keys} with the Copyable L{SharedData}, and
    may write to the shared to-do board;
  - C{stats} is a live record of server statistics that changes every
    second (uptime, connected clients, calls per second, memory);
  - a chat room (C{joinChat}, C{say}, C{leaveChat}) calls its members back
    through their minds: C{receive(sender, text)}.
"""

from __future__ import annotations

import datetime
import itertools
import os
import resource
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .errors import DeadReferenceError, Error, PBConnectionLost
from .flavors import Copyable, Referenceable, RemoteCopy
from .jelly import setUnjellyableForClass
from .live import LiveDict
from .login import Avatar, Realm

__all__ = ["DEMO_USERS", "ChatRoom", "Counter", "DemoGuest", "DemoRealm", "DemoUser", "SharedData", "makeService"]

DEMO_USERS = {"alice": "password", "bob": "secret"}

MAX_TASKS = 200
MAX_TEXT = 200
MAX_KEYS = 100


class SharedData(Copyable, RemoteCopy):
    """
    Data copied across the network (the reference data-service example).
    """

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"SharedData({self.name!r}, {self.value!r})"


setUnjellyableForClass(SharedData, SharedData)


class Counter(Referenceable):
    """
    A counter owned by one session, handed out by reference.
    """

    def __init__(self) -> None:
        self.count = 0

    def remote_increment(self, by: int = 1) -> int:
        """Add C{by} (default 1) and return the new value."""
        if type(by) is not int:
            raise Error("by must be an integer")
        self.count += by
        return self.count

    def remote_value(self) -> int:
        """The current value."""
        return self.count

    def remote_reset(self) -> int:
        """Set the counter back to zero."""
        self.count = 0
        return self.count


class DemoGuest(Avatar):
    """
    What anyone may do: math, a counter, and watching the live objects.
    """

    def __init__(self, realm: DemoRealm, avatarId: Any) -> None:
        super().__init__(avatarId)
        self.realm = realm
        self._counter: Counter | None = None
        self._chatName = f"guest-{next(realm.guestNumbers)}"

    @property
    def name(self) -> str:
        return "guest"

    def perspective_add(self, a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    def perspective_multiply(self, a: float, b: float) -> float:
        """Multiply two numbers."""
        return a * b

    def perspective_divide(self, a: float, b: float) -> float:
        """Divide a by b; dividing by zero is an error."""
        if b == 0:
            raise ValueError("Division by zero")
        return a / b

    def perspective_whoami(self) -> str:
        """Who this session is logged in as."""
        return self.name

    def perspective_counter(self) -> Counter:
        """This session's counter (a reference)."""
        if self._counter is None:
            self._counter = Counter()
        return self._counter

    @property
    def chatName(self) -> str:
        return self._chatName

    def perspective_joinChat(self) -> list[str]:
        """Join the chat room; messages arrive through receive(sender, text)."""
        if self.mind is None:
            raise Error("join the chat with a client that can receive messages (a mind)")
        return self.realm.chat.join(self.chatName, self.mind)

    def perspective_say(self, text: str) -> None:
        """Say something in the chat room (join it first)."""
        self.realm.chat.say(self.chatName, text)

    def perspective_leaveChat(self) -> None:
        """Leave the chat room."""
        self.realm.chat.leave(self.chatName, self.mind)

    def perspective_stats(self) -> LiveDict:
        """Live server statistics, updated every second."""
        return self.realm.stats

    def perspective_board(self) -> LiveDict:
        """The shared to-do board (live)."""
        return self.realm.board

    def logout(self) -> None:
        self.realm.chat.leave(self.chatName, self.mind)
        self.realm.sessionEnded(self)


class ChatRoom:
    """
    The demo's chat room: members are called back through their minds with
    C{receive(sender, text)}; C{"*"} is the room itself.
    """

    log = Logger()

    def __init__(self) -> None:
        self.members: dict[str, Any] = {}

    def join(self, name: str, mind: Any) -> list[str]:
        self.members[name] = mind
        self.broadcast("*", f"{name} joined")
        return sorted(self.members)

    def leave(self, name: str, mind: Any) -> None:
        # Only the login that joined last holds the name's seat: an older
        # login of the same user leaving must not take it away.
        if self.members.get(name) is mind and mind is not None:
            del self.members[name]
            self.broadcast("*", f"{name} left")

    def say(self, name: str, text: str) -> None:
        if name not in self.members:
            raise Error("join the chat first")
        if not isinstance(text, str) or not text.strip():
            raise Error("say something")
        if len(text) > MAX_TEXT:
            raise Error(f"a message is at most {MAX_TEXT} characters")
        self.broadcast(name, text)

    def broadcast(self, sender: str, text: str) -> None:
        for name, mind in list(self.members.items()):
            d = mind.callRemote("receive", sender, text)
            d.addErrback(self._undelivered, name, mind)

    def _undelivered(self, failure: Any, name: str, mind: Any) -> None:
        self.log.info("Chat message to {name} failed: {reason}", name=name,
                      reason=failure.getErrorMessage())
        if failure.check(DeadReferenceError, PBConnectionLost) and self.members.get(name) is mind:
            del self.members[name]


class DemoUser(DemoGuest):
    """
    What a logged-in demo user may do on top of a guest.
    """

    def __init__(self, realm: DemoRealm, avatarId: bytes) -> None:
        super().__init__(realm, avatarId)
        self.username = avatarId.decode("utf-8")
        self.data: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.username

    @property
    def chatName(self) -> str:
        return self.username

    def perspective_getMessage(self) -> str:
        """A greeting for the logged-in user."""
        return f"Hello, {self.username}!"

    def perspective_getTime(self) -> str:
        """The server's local time."""
        return time.ctime()

    def perspective_store(self, key: str, data: Any) -> str:
        """Store a value (e.g. a SharedData) under a key."""
        if not isinstance(key, str):
            raise Error("key must be a string")
        if key not in self.data and len(self.data) >= MAX_KEYS:
            raise Error(f"at most {MAX_KEYS} keys per user")
        self.data[key] = data
        return f"Stored {key} for {self.username}"

    def perspective_retrieve(self, key: str) -> Any:
        """The value stored under a key."""
        if key in self.data:
            return self.data[key]
        raise KeyError(f"No data for key: {key}")

    def perspective_list_keys(self) -> list[str]:
        """The keys stored so far."""
        return list(self.data.keys())

    def perspective_addTask(self, text: str) -> str:
        """Add a task to the shared board; returns its id."""
        return self.realm.addTask(text, self.username)

    def perspective_setDone(self, taskId: str, done: bool = True) -> None:
        """Mark a task done (or not done)."""
        self.realm.setDone(taskId, bool(done))

    def perspective_removeTask(self, taskId: str) -> None:
        """Remove a task from the board."""
        self.realm.removeTask(taskId)


class DemoRealm(Realm, Service):
    """
    The demo's realm: guests for anonymous logins, L{DemoUser}s for the demo
    users, and the live objects they share.
    """

    demoUsers = DEMO_USERS
    allowAnonymous = True
    log = Logger()

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        self.started = time.monotonic()
        self.stats = LiveDict(
            {
                "uptime_s": 0,
                "clients": 0,
                "sessions": 0,
                "calls_total": 0,
                "calls_per_s": 0.0,
                "rss_kib": _rssKiB(),
                "time": _now(),
            }
        )
        self.board = LiveDict()
        self.chat = ChatRoom()
        self.guestNumbers = itertools.count(1)
        self.sessions = 0
        self.factory: Any = None
        self._nextTask = 1
        self._lastCalls = 0
        self._lastTick = self.started
        self._ticker: LoopingCall | None = None

    def attachFactory(self, factory: Any) -> None:
        """
        Count the connections and calls of the server factory serving me.
        """
        self.factory = factory

    def createAvatar(self, avatarId: Any, mind: Any) -> DemoGuest:
        avatar = DemoUser(self, avatarId) if isinstance(avatarId, bytes) else DemoGuest(self, avatarId)
        avatar.mind = mind
        self.sessions += 1
        self.log.info("{name} logged in", name=avatar.name)
        return avatar

    def sessionEnded(self, avatar: DemoGuest) -> None:
        self.sessions -= 1
        self.log.info("{name} logged out", name=avatar.name)

    def addTask(self, text: str, by: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise Error("a task needs some text")
        if len(text) > MAX_TEXT:
            raise Error(f"a task's text is at most {MAX_TEXT} characters")
        if len(self.board) >= MAX_TASKS:
            raise Error(f"the board holds at most {MAX_TASKS} tasks")
        taskId = str(self._nextTask)
        self._nextTask += 1
        self.board.set(taskId, {"text": text.strip(), "done": False, "by": by})
        return taskId

    def setDone(self, taskId: str, done: bool) -> None:
        task = self.board.get(taskId)
        if task is None:
            raise Error(f"no task {taskId!r}")
        self.board.set(taskId, {**task, "done": done})

    def removeTask(self, taskId: str) -> None:
        if taskId not in self.board:
            raise Error(f"no task {taskId!r}")
        self.board.delete(taskId)

    def tick(self) -> None:
        """
        Refresh the statistics (every second while running).
        """
        now = time.monotonic()
        calls = self.factory.callsReceived if self.factory is not None else 0
        elapsed = max(now - self._lastTick, 1e-6)
        self.stats.update(
            {
                "uptime_s": int(now - self.started),
                "clients": len(self.factory.connections) if self.factory is not None else 0,
                "sessions": self.sessions,
                "calls_total": calls,
                "calls_per_s": round((calls - self._lastCalls) / elapsed, 1),
                "rss_kib": _rssKiB(),
                "time": _now(),
            }
        )
        self._lastCalls = calls
        self._lastTick = now

    def startService(self) -> None:
        super().startService()
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self._ticker = LoopingCall(self.tick)
        self._ticker.clock = clock
        self._ticker.start(1.0, now=False).addErrback(
            lambda f: self.log.failure("statistics ticker stopped", f)
        )

    def stopService(self) -> Any:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        return super().stopService()


def makeService() -> DemoRealm:
    """
    The demo service (C{--service pb.demo:makeService}).
    """
    return DemoRealm()


def _rssKiB() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _now() -> str:
    return datetime.datetime.now().replace(microsecond=0).isoformat()
