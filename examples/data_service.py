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

from collections.abc import Sequence

import _runner  # this folder's plumbing: a script's folder is on the path
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

import pb
from pb.credentials import InMemoryMD5Checker

USERS = {"user1": "pass1", "user2": "pass2"}
SHARED_DATA_TYPE = b"pb-gateway.examples.SharedData"
"""The type tag L{SharedData} travels under (not importable, on purpose)."""


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


async def runClient(
    reactor: IReactorTime,
    endpoint: str,
    username: str = "user1",
    password: str = "pass1",
    out: _runner.Output | None = None,
) -> list[str]:
    """
    Connect to the server at C{endpoint} (e.g. C{"tcp:host=localhost:port=8800"}),
    log in, store a L{SharedData}, read it back, list the keys, ask for a key
    that is not there, and disconnect.

    @param out: called with each line of the report as it is made.
    @return: the report's lines.
    """
    report = _runner.Report(out)
    async with _runner.connected(reactor, endpoint) as factory:
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
    return report.lines


def main(argv: Sequence[str] | None = None) -> None:
    _runner.main(
        argv,
        "Copyable objects over PB.",
        lambda clock, out: makeFactory(),
        runClient,
        serverName="PB data service",
        clientOptions={"user": "user1", "password": "pass1"},
    )


if __name__ == "__main__":
    main()
