"""
Tests for hosting services on the broker: the C{pb-gateway broker} and
C{users} commands, L{pb.service.BrokerService}, the demo service and
introspection.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import stat
import subprocess
import sys
from typing import Any

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import TestCase

import pb
from pb.demo import DemoRealm, SharedData
from pb.introspect import describeRemote
from pb.live import LiveDictMirror
from pb.service import BrokerService, ServiceError, loadService

PYTHON = sys.executable
LOOPBACK = "tcp:0:interface=127.0.0.1"


def runCommand(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class UsersCommandTests(TestCase):
    """
    C{pb-gateway users add|remove|list FILE}.
    """

    def test_addListRemove(self) -> None:
        """
        Users added with a password from standard input are listed, stored
        without their plaintext password in a 0600 file, and removed.
        """
        path = os.path.abspath(self.mktemp())
        added = runCommand("users", "add", path, "carol", "--password-stdin", stdin="s3cret!\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        runCommand("users", "add", path, "dave", "--password-stdin", stdin="other\n")
        listed = runCommand("users", "list", path)
        self.assertEqual(listed.stdout.split(), ["carol", "dave"])
        with open(path, "rb") as f:
            content = f.read()
        self.assertNotIn(b"s3cret!", content)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        removed = runCommand("users", "remove", path, "carol")
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertEqual(runCommand("users", "list", path).stdout.split(), ["dave"])

    def test_badInput(self) -> None:
        """
        Removing an unknown user, listing a missing file and an empty
        password each fail with status 2 and a one-line reason.
        """
        path = os.path.abspath(self.mktemp())
        runCommand("users", "add", path, "erin", "--password-stdin", stdin="pw\n")
        for args, stdin in [
            (("users", "remove", path, "nobody"), None),
            (("users", "list", path + ".missing"), None),
            (("users", "add", path, "frank", "--password-stdin"), "\n"),
            (("users", "add", path, "bad:name", "--password-stdin"), "pw\n"),
        ]:
            result = runCommand(*args, stdin=stdin)
            self.assertEqual(result.returncode, 2, args)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn("error:", result.stderr)


class BrokerCommandTests(TestCase):
    """
    C{pb-gateway broker} as a real process on loopback.
    """

    def test_badArguments(self) -> None:
        """
        A service that cannot be imported, a bad endpoint, a missing or bad
        credential file: exit status 2 with a one-line reason.
        """
        badUsers = os.path.abspath(self.mktemp())
        with open(badUsers, "w") as f:
            f.write("alice:plaintext:password\n")
        os.chmod(badUsers, 0o600)
        for args in [
            ("broker", "--service", "no.such.module:make"),
            ("broker", "--service", "pb.demo"),
            ("broker", "--service", "pb.demo:SharedData"),
            ("broker", "--pb", "nonsense:1234"),
            ("broker", "--users", badUsers + ".missing"),
            ("broker", "--users", badUsers),
        ]:
            result = runCommand(*args)
            self.assertEqual(result.returncode, 2, (args, result.stdout, result.stderr))
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertTrue(lines[0].startswith("pb-gateway broker: error:"), lines)

    async def test_demoBrokerProcess(self) -> None:
        """
        The default broker serves the demo on the given endpoint, prints the
        demo users and where it listens, answers a Twisted client's password
        login, and exits cleanly on SIGTERM.
        """
        process = subprocess.Popen(
            [PYTHON, "-m", "gateway", "broker", "--pb", LOOPBACK],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        port = None
        seen = []
        assert process.stdout is not None
        while port is None:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"PB broker listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        self.assertIsNotNone(port, "".join(seen))
        self.assertIn("alice/password", "".join(seen))
        factory = twistedPB.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        self.addCleanup(factory.disconnect)
        avatar = await factory.login(UsernamePassword(b"alice", b"password"))
        self.assertEqual(await avatar.callRemote("getMessage"), "Hello, alice!")
        factory.disconnect()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=30), 0)


def loadServiceCases() -> list[tuple[str, str]]:
    return [
        ("nomodule:x", "cannot import"),
        ("pb.demo:nothing", "no attribute"),
        ("pb.demo:DEMO_USERS", "not callable"),
        ("pb.demo:SharedData", "failed: TypeError"),
        ("pb.demo:Counter", "expected a pb.Root"),
        ("justamodule", "MODULE:FACTORY"),
    ]


class LoadServiceTests(TestCase):
    """
    L{loadService} explains every way a C{--service} can be wrong.
    """

    def test_errors(self) -> None:
        """
        Each bad spec raises L{ServiceError} with a reason naming the problem.
        """
        for spec, expected in loadServiceCases():
            with self.assertRaises(ServiceError) as raised:
                loadService(spec)
            self.assertIn(expected, str(raised.exception), spec)

    def test_demo(self) -> None:
        """
        C{pb.demo:makeService} loads as a realm.
        """
        self.assertIsInstance(loadService("pb.demo:makeService"), DemoRealm)


class TwistedBoardMirror(twistedPB.RemoteCache):
    """
    A native Twisted client's copy of a C{pb.live.LiveDict}.
    """

    def setCopyableState(self, state: Any) -> None:
        self.seq = state["seq"]
        self.value = dict(state["value"])

    def observe_set(self, seq: int, key: str, value: Any) -> None:
        self.seq = seq
        self.value[key] = value

    def observe_update(self, seq: int, changes: dict[str, Any]) -> None:
        self.seq = seq
        self.value.update(changes)

    def observe_delete(self, seq: int, key: str) -> None:
        self.seq = seq
        self.value.pop(key, None)

    def observe_reset(self, seq: int, value: dict[str, Any]) -> None:
        self.seq = seq
        self.value = dict(value)


class TwistedSharedData(twistedPB.RemoteCopy, twistedPB.Copyable):
    def getTypeToCopy(self) -> bytes:
        return b"pb.demo.SharedData"


async def waitFor(predicate: Any, timeout: float = 10.0) -> None:
    elapsed = 0.0
    while not predicate():
        if elapsed > timeout:
            raise AssertionError("condition not reached")
        await deferLater(reactor, 0.01, lambda: None)
        elapsed += 0.01


class DemoServiceTests(TestCase):
    """
    The demo service in a L{BrokerService} on loopback, used by a Twisted
    PB client and a C{pb} client side by side.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        twistedJelly.setUnjellyableForClass("pb.live.LiveDict", TwistedBoardMirror)
        twistedJelly.setUnjellyableForClass("pb.demo.SharedData", TwistedSharedData)
        self.addCleanup(twistedJelly.unjellyableRegistry.pop, b"pb.live.LiveDict", None)
        self.addCleanup(twistedJelly.unjellyableRegistry.pop, b"pb.demo.SharedData", None)
        self.realm = DemoRealm(clock=reactor)
        self.service = BrokerService(reactor, LOOPBACK, self.realm)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        port = await self.service.whenListening()
        self.portNumber = port.getHost().port  # type: ignore[attr-defined]

    async def connectOurs(self) -> pb.PBClientFactory:
        factory = pb.PBClientFactory()
        await pb.connect("127.0.0.1", self.portNumber, factory)
        self.addCleanup(factory.disconnect)
        return factory

    def connectTwisted(self) -> twistedPB.PBClientFactory:
        factory = twistedPB.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.portNumber, factory)
        self.addCleanup(factory.disconnect)
        return factory

    async def test_bothClientsShareTheBoard(self) -> None:
        """
        A Twisted client and a C{pb} client log in as the two demo users,
        call the reference methods, exchange the Copyable, and each sees the
        other's change to the live board.
        """
        ours = await (await self.connectOurs()).login(UsernamePassword("alice", "password"))
        theirs = await self.connectTwisted().login(UsernamePassword(b"bob", b"secret"))
        self.assertEqual(await ours.callRemote("getMessage"), "Hello, alice!")
        self.assertEqual(await theirs.callRemote("getMessage"), "Hello, bob!")
        self.assertEqual(await ours.callRemote("add", 5, 3), 8)
        with self.assertRaises(ValueError):
            await ours.callRemote("divide", 1, 0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

        await ours.callRemote("store", "item1", SharedData("test_data", {"count": 42}))
        retrieved = await ours.callRemote("retrieve", "item1")
        self.assertIsInstance(retrieved, SharedData)
        self.assertEqual(retrieved.value, {"count": 42})
        self.assertEqual(await ours.callRemote("list_keys"), ["item1"])
        shared = TwistedSharedData()
        shared.name, shared.value = "t", [1, 2]
        await theirs.callRemote("store", "k", shared)
        back = await theirs.callRemote("retrieve", "k")
        self.assertEqual((back.name, back.value), ("t", [1, 2]))

        ourBoard = await ours.callRemote("board")
        theirBoard = await theirs.callRemote("board")
        self.assertIsInstance(ourBoard, LiveDictMirror)
        taskId = await theirs.callRemote("addTask", "from twisted")
        await waitFor(lambda: taskId in ourBoard.value)
        self.assertEqual(ourBoard.value[taskId]["by"], "bob")
        await ours.callRemote("setDone", taskId, True)
        await waitFor(lambda: theirBoard.value.get(taskId, {}).get("done"))
        self.assertEqual(theirBoard.seq, ourBoard.seq)

    async def test_anonymousGuest(self) -> None:
        """
        Anonymous login gets a guest: math and a counter by reference work,
        writing to the board is not offered.
        """
        guest = await (await self.connectOurs()).login(Anonymous())
        self.assertEqual(await guest.callRemote("whoami"), "guest")
        counter = await guest.callRemote("counter")
        self.assertIsInstance(counter, pb.RemoteReference)
        self.assertEqual(await counter.callRemote("increment"), 1)
        self.assertEqual(await counter.callRemote("increment", 5), 6)
        with self.assertRaises(pb.NoSuchMethod):
            await guest.callRemote("addTask", "nope")

    async def test_statsTick(self) -> None:
        """
        The statistics live object changes every second and counts the
        connected clients.
        """
        guest = await (await self.connectOurs()).login(Anonymous())
        stats = await guest.callRemote("stats")
        first = stats.seq
        await waitFor(lambda: stats.seq > first, timeout=5)
        self.assertGreaterEqual(stats.value["clients"], 1)
        self.assertGreater(stats.value["rss_kib"], 0)

    async def test_logoutOnRelease(self) -> None:
        """
        Dropping the last reference to an avatar logs the session out.
        """
        factory = await self.connectOurs()
        avatar = await factory.login(UsernamePassword("alice", "password"))
        await avatar.callRemote("whoami")
        self.assertEqual(self.realm.sessions, 1)
        del avatar
        gc.collect()
        await waitFor(lambda: self.realm.sessions == 0)

    async def test_introspection(self) -> None:
        """
        The demo's perspective describes every method with its parameters;
        the login root describes itself as a login object.
        """
        factory = await self.connectOurs()
        user = await factory.login(UsernamePassword("alice", "password"))
        description = await describeRemote(user)
        assert description is not None
        methods = {m["name"]: m for m in description["methods"]}
        for name in ["add", "multiply", "divide", "getMessage", "getTime", "store",
                     "retrieve", "list_keys", "counter", "stats", "board", "addTask",
                     "setDone", "removeTask", "whoami"]:
            self.assertIn(name, methods)
        self.assertEqual([p["name"] for p in methods["store"]["params"]], ["key", "data"])
        self.assertEqual(methods["setDone"]["params"][1]["default"], True)
        self.assertEqual(methods["add"]["doc"], "Add two numbers.")
        self.assertEqual(description["kind"], "perspective")
        counter = await user.callRemote("counter")
        counterDescription = await describeRemote(counter)
        assert counterDescription is not None
        self.assertEqual(
            sorted(m["name"] for m in counterDescription["methods"]),
            ["increment", "reset", "value"],
        )
        root = await factory.getRootObject()
        rootDescription = await describeRemote(root)
        assert rootDescription is not None
        self.assertEqual((rootDescription["kind"], rootDescription["methods"]), ("login", []))


class ForeignIntrospectionTests(TestCase):
    """
    A Twisted PB server has no introspection: callers get L{None}.
    """

    async def test_twistedBrokerLacksDescribe(self) -> None:
        """
        L{describeRemote} on a Twisted server's root returns L{None} and the
        connection keeps working.
        """

        class Root(twistedPB.Root):
            def remote_add(self, a: int, b: int) -> int:
                return a + b

        port = reactor.listenTCP(0, twistedPB.PBServerFactory(Root()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        factory = pb.PBClientFactory()
        await pb.connect("127.0.0.1", port.getHost().port, factory)
        self.addCleanup(factory.disconnect)
        root = await factory.getRootObject()
        self.assertIsNone(await describeRemote(root))
        self.assertEqual(await root.callRemote("add", 1, 2), 3)
        self.flushLoggedErrors()



