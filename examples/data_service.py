"""
Copyable objects over Perspective Broker: the reference description's
complete application, ported to our C{pb}.  Logged-in users (user1/pass1,
user2/pass2) store, retrieve and list L{SharedData} objects, which cross the
wire by copy in both directions.  Each user has their own store, kept by the
realm for as long as the server runs, so it outlives a login.

L{SharedData} travels under the type tag L{SHARED_DATA_TYPE}, not its module
path, so that the tag is the same whether this file runs as a script
(C{__main__}) or is imported; each side registers its class for the tag with
L{pb.setUnjellyableForClass}.

From the repository root, start the server, then run the client in another
terminal::

    python examples/data_service.py server              # listens on port 8800
    python examples/data_service.py client              # logs in as user1
    python examples/data_service.py client --user user2 --password pass2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from twisted.cred.credentials import UsernamePassword
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
USERS = {"user1": "pass1", "user2": "pass2"}
SHARED_DATA_TYPE = b"pb-gateway.examples.SharedData"
"""The type tag L{SharedData} travels under (not importable, on purpose)."""

Output = Callable[[str], object]


class SharedData(pb.Copyable, pb.RemoteCopy):
    """
    A named value, copied across the network.
    """

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value = value

    def getTypeToCopy(self) -> bytes:
        return SHARED_DATA_TYPE

    def __repr__(self) -> str:
        return f"SharedData({self.name!r}, {self.value!r})"


pb.setUnjellyableForClass(SHARED_DATA_TYPE, SharedData)


class NoSuchKey(pb.Error):
    """
    Nothing is stored under that key: the caller's mistake, so the server
    logs no traceback for it.
    """


class DataService(pb.Avatar):
    """
    One logged-in user's view of their store.
    """

    def __init__(self, username: str, data: dict[str, SharedData]) -> None:
        super().__init__(username.encode("utf-8"))
        self.username = username
        self.data = data

    def perspective_store(self, key: str, data: SharedData) -> str:
        """
        Store a data object under C{key}, replacing what was there.
        """
        if not isinstance(key, str) or not isinstance(data, SharedData):
            raise pb.Error("store takes a string key and a SharedData")
        self.data[key] = data
        return f"Stored {key} for {self.username}"

    def perspective_retrieve(self, key: str) -> SharedData:
        """
        The data object stored under C{key}.
        """
        try:
            return self.data[key]
        except (KeyError, TypeError):
            raise NoSuchKey(f"No data for key: {key}")

    def perspective_list_keys(self) -> list[str]:
        """
        All stored keys, in the order they were first stored.
        """
        return list(self.data)


class DataRealm(pb.Realm):
    """
    Gives every login a L{DataService} on its user's store.
    """

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, SharedData]] = {}

    def createAvatar(self, avatarId: bytes, mind: object) -> DataService:
        username = avatarId.decode("utf-8")
        return DataService(username, self.stores.setdefault(username, {}))


def makeFactory(realm: DataRealm | None = None) -> pb.PBServerFactory:
    """
    The server factory: a portal with C{realm} (a new L{DataRealm} by default)
    and the users of L{USERS}.
    """
    checker = InMemoryMD5Checker()
    for username, password in USERS.items():
        checker.addUser(username, password)
    portal = Portal(realm if realm is not None else DataRealm(), [checker])
    return pb.PBServerFactory(portal=portal)


async def serve(reactor: IReactorTime, endpoint: str, out: Output = print) -> None:
    """
    Listen on C{endpoint} (e.g. C{"tcp:8800"}) and serve until the process ends.
    """
    port = await endpoints.serverFromString(reactor, endpoint).listen(makeFactory())
    out(f"PB data service running on port {port.getHost().port}")
    await Deferred()


async def runClient(
    reactor: IReactorTime,
    endpoint: str,
    username: str = "user1",
    password: str = "pass1",
    out: Output | None = None,
) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    log in, store a L{SharedData}, read it back, list the keys, ask for a key
    that is not there, and disconnect.

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
        avatar = await factory.login(UsernamePassword(username.encode(), password.encode()))
        data = SharedData("test_data", {"count": 42, "active": True})
        report(await avatar.callRemote("store", "item1", data))
        retrieved: SharedData = await avatar.callRemote("retrieve", "item1")
        report(f"Retrieved: {retrieved.name} = {retrieved.value}")
        report(f"Keys: {await avatar.callRemote('list_keys')}")
        try:
            await avatar.callRemote("retrieve", "missing")
        except pb.RemoteError as e:
            report(f"Retrieve failed: {e}")
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
    parser = argparse.ArgumentParser(description="Copyable objects over PB.")
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="localhost", help="the server to connect to")
    parser.add_argument("--user", default="user1")
    parser.add_argument("--password", default="pass1")
    args = parser.parse_args(argv)
    startLogging(LogLevel.info if args.mode == "server" else LogLevel.warn)
    if args.mode == "server":
        task.react(serve, [f"tcp:{args.port}", say])
    else:
        endpoint = f"tcp:host={args.host}:port={args.port}:timeout=10"
        task.react(runClient, [endpoint, args.user, args.password, say])


if __name__ == "__main__":
    main()
