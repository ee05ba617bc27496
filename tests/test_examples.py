"""
Tests for the scripts in C{examples/}: each example's server, served by our
C{pb} on real loopback TCP, is exercised once by the example's own client
(ours) and once by a client written with Twisted's C{twisted.spread.pb}; and
each script runs from the repository root as C{python examples/<name>.py
server --port 0} and C{... client --port <port>}.

The examples are scripts, not a package, so they are loaded by path, with
their folder on the path as when they run (for their shared C{_runner}).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from test_interop import (
    EventLog,
    closeBroker,
    connect,
    failureOf,
    listen,
    registerTwistedType,
)
from twisted.cred.credentials import UsernamePassword
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.spread import pb as twistedPB
from twisted.trial.unittest import TestCase

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLES = REPOSITORY / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def loadExample(name: str) -> ModuleType:
    """
    Import C{examples/<name>.py} (once) as the module C{examples_<name>}.
    """
    moduleName = f"examples_{name}"
    if moduleName in sys.modules:
        return sys.modules[moduleName]
    spec = importlib.util.spec_from_file_location(moduleName, EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load example {name!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    spec.loader.exec_module(module)
    return module


mathService = loadExample("math_service")
authenticated = loadExample("authenticated")
errorHandling = loadExample("error_handling")
dataService = loadExample("data_service")


def clientEndpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}:timeout=5"


class TwistedSharedData(twistedPB.Copyable, twistedPB.RemoteCopy):
    """
    A Twisted client's L{SharedData}: same type tag, Twisted's base classes.
    """

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value = value

    def getTypeToCopy(self) -> bytes:
        return dataService.SHARED_DATA_TYPE


class MathServiceTests(TestCase):
    """
    C{examples/math_service.py}.
    """

    timeout = 10

    async def test_ourClient(self) -> None:
        """
        The example's client gets the sums and catches the division error as
        a C{ValueError}; the server logs that error's traceback.
        """
        served = await listen(self, mathService.makeFactory())
        lines = await mathService.runClient(reactor, clientEndpoint(served.port))
        self.assertEqual(lines, ["5 + 3 = 8", "4 * 7 = 28", "Division error: Division by zero"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_twistedClient(self) -> None:
        """
        A Twisted client makes the same calls and gets a C{CopiedFailure} of
        the C{ValueError}.
        """
        served = await listen(self, mathService.makeFactory())
        factory = twistedPB.PBClientFactory()
        await connect(self, factory, served.port)
        root = await factory.getRootObject()
        self.assertEqual(await root.callRemote("add", 5, 3), 8)
        self.assertEqual(await root.callRemote("multiply", 4, 7), 28)
        self.assertEqual(await root.callRemote("divide", 10, 4), 2.5)
        failure = await failureOf(root.callRemote, "divide", 10, 0)
        self.assertIsNotNone(failure.check(ValueError), failure)
        self.assertEqual(failure.value, "Division by zero")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class AuthenticatedTests(TestCase):
    """
    C{examples/authenticated.py}.
    """

    timeout = 10

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000_000_000)
        self.serverEvents = EventLog()
        self.factory = authenticated.makeFactory(self.clock, self.serverEvents.record)

    async def test_ourClient(self) -> None:
        """
        The example's client logs in as alice and reads her message and the
        server's time; the server reports her login and, once the connection
        is gone, her logout.
        """
        served = await listen(self, self.factory)
        lines = await authenticated.runClient(reactor, clientEndpoint(served.port))
        expectedTime = time.ctime(1_000_000_000)
        self.assertEqual(lines, ["Message: Hello, alice!", f"Server time: {expectedTime}"])
        await closeBroker(served.brokers[0])
        self.assertEqual(self.serverEvents.events, ["alice logged in", "alice logged out"])

    async def test_ourClientOtherUser(self) -> None:
        """
        Bob logs in with his own password and gets his own avatar.
        """
        served = await listen(self, self.factory)
        lines = await authenticated.runClient(
            reactor, clientEndpoint(served.port), "bob", "secret"
        )
        self.assertEqual(lines[0], "Message: Hello, bob!")

    async def test_ourClientWrongPassword(self) -> None:
        """
        A wrong password is refused: the client reports it, no avatar is
        made, and the server logs no traceback.
        """
        served = await listen(self, self.factory)
        lines = await authenticated.runClient(
            reactor, clientEndpoint(served.port), "alice", "secret"
        )
        self.assertEqual(lines, ["Login failed: bad username or password"])
        self.assertEqual(self.serverEvents.events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_twistedClient(self) -> None:
        """
        A Twisted client logs in as bob (the checker stores only MD5 digests,
        which is all PB's challenge needs) and calls the avatar; when it drops
        the avatar, the server logs bob out.
        """
        served = await listen(self, self.factory)
        factory = twistedPB.PBClientFactory()
        await connect(self, factory, served.port)
        avatar = await factory.login(UsernamePassword(b"bob", b"secret"))
        self.assertEqual(await avatar.callRemote("getMessage"), "Hello, bob!")
        self.assertEqual(await avatar.callRemote("getTime"), time.ctime(1_000_000_000))
        loggedOut = self.serverEvents.when("bob logged out")
        del avatar
        gc.collect()
        await loggedOut
        self.assertEqual(self.serverEvents.events, ["bob logged in", "bob logged out"])


class ErrorHandlingTests(TestCase):
    """
    C{examples/error_handling.py}.
    """

    timeout = 10

    async def test_ourClient(self) -> None:
        """
        Our client catches remote C{ValueError}s as L{pb.RemoteError} and as
        C{ValueError}, and a missing method as C{AttributeError}; the server
        logs the two C{ValueError}s' tracebacks.
        """
        served = await listen(self, errorHandling.makeFactory())
        lines = await errorHandling.runClient(reactor, clientEndpoint(served.port))
        self.assertEqual(
            lines,
            [
                "Remote error: Something went wrong! (a builtins.ValueError)",
                "10 / 4 = 2.5",
                "Division error: Cannot divide by zero",
                "Missing method: No such method: remote_noSuchMethod",
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    async def test_twistedClient(self) -> None:
        """
        A Twisted client gets C{CopiedFailure}s that C{check(ValueError)}.
        """
        served = await listen(self, errorHandling.makeFactory())
        factory = twistedPB.PBClientFactory()
        await connect(self, factory, served.port)
        root = await factory.getRootObject()
        failure = await failureOf(root.callRemote, "causeError")
        self.assertIsNotNone(failure.check(ValueError), failure)
        self.assertEqual(failure.value, "Something went wrong!")
        self.assertEqual(await root.callRemote("safeDivide", 10, 4), 2.5)
        failure = await failureOf(root.callRemote, "safeDivide", 10, 0)
        self.assertIsNotNone(failure.check(ValueError), failure)
        self.assertEqual(failure.value, "Cannot divide by zero")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)


class DataServiceTests(TestCase):
    """
    C{examples/data_service.py}.
    """

    timeout = 10

    def setUp(self) -> None:
        self.realm = dataService.DataRealm()

    async def test_ourClient(self) -> None:
        """
        The example's client stores a L{SharedData}, gets a copy back, lists
        the keys, and is refused a missing key without a server traceback;
        each user has their own store.
        """
        served = await listen(self, dataService.makeFactory(self.realm))
        lines = await dataService.runClient(reactor, clientEndpoint(served.port))
        self.assertEqual(
            lines,
            [
                "Stored item1 for user1",
                "Retrieved: test_data = {'count': 42, 'active': True}",
                "Keys: ['item1']",
                "Retrieve failed: No data for key: missing",
            ],
        )
        stored = self.realm.stores["user1"]["item1"]
        self.assertIsInstance(stored, dataService.SharedData)
        self.assertEqual((stored.name, stored.value), ("test_data", {"count": 42, "active": True}))
        lines = await dataService.runClient(reactor, clientEndpoint(served.port), "user2", "pass2")
        self.assertEqual(lines[0], "Stored item1 for user2")
        self.assertEqual(sorted(self.realm.stores), ["user1", "user2"])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_twistedClient(self) -> None:
        """
        A Twisted client's Copyable with the same type tag arrives as the
        example's L{SharedData}, and comes back as the Twisted client's class.
        """
        registerTwistedType(self, dataService.SHARED_DATA_TYPE, TwistedSharedData)
        served = await listen(self, dataService.makeFactory(self.realm))
        factory = twistedPB.PBClientFactory()
        await connect(self, factory, served.port)
        avatar = await factory.login(UsernamePassword(b"user2", b"pass2"))
        data = TwistedSharedData("reading", {"celsius": 21.5})
        self.assertEqual(await avatar.callRemote("store", "r1", data), "Stored r1 for user2")
        self.assertIsInstance(self.realm.stores["user2"]["r1"], dataService.SharedData)
        retrieved = await avatar.callRemote("retrieve", "r1")
        self.assertIsInstance(retrieved, TwistedSharedData)
        self.assertEqual((retrieved.name, retrieved.value), ("reading", {"celsius": 21.5}))
        self.assertEqual(await avatar.callRemote("list_keys"), ["r1"])
        failure = await failureOf(avatar.callRemote, "retrieve", "missing")
        self.assertIsNotNone(failure.check(twistedPB.Error), failure)
        self.assertEqual(failure.type, qual(dataService.NoSuchKey).encode())
        self.assertEqual(self.flushLoggedErrors(), [])


class ScriptServer(ProcessProtocol):
    """
    An example script running as a server: L{listening} fires with the port
    it reports, L{ended} when the process is gone.
    """

    def __init__(self) -> None:
        self.output = b""
        self.errors = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"running on port (\d+)\n", self.output)
        if match is not None and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"the server ended without listening: {self.errors.decode()}")
            )
        self.ended.callback(None)


class ScriptTests(TestCase):
    """
    Each example runs as a script from the repository root, in both modes.
    """

    timeout = 20

    async def runScripts(self, name: str, clientArguments: list[str]) -> list[str]:
        """
        Start C{examples/<name>.py server --port 0}, run its client against
        it, and stop the server.

        @return: the lines the client printed.
        """
        script = str(EXAMPLES / f"{name}.py")
        server = ScriptServer()
        process: Any = reactor.spawnProcess(
            server,
            sys.executable,
            [sys.executable, script, "server", "--port", "0"],
            env=dict(os.environ),
            path=str(REPOSITORY),
        )

        async def stop() -> None:
            if not server.ended.called:
                process.signalProcess("TERM")
                await server.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        port = await server.listening
        arguments = [script, "client", "--host", "127.0.0.1", "--port", str(port)]
        out, err, code = await getProcessOutputAndValue(
            sys.executable, [*arguments, *clientArguments], env=dict(os.environ), path=str(REPOSITORY)
        )
        self.assertEqual(code, 0, f"{name} client: {err.decode()}")
        return out.decode().splitlines()

    async def test_scripts(self) -> None:
        """
        Every example's server reports the port it listens on, and its client
        connects to it, prints its report and exits with status 0.  (The four
        pairs run at once, to keep the test quick.)
        """
        results = await gatherResults(
            [
                Deferred.fromCoroutine(self.runScripts("math_service", [])),
                Deferred.fromCoroutine(
                    self.runScripts("authenticated", ["--user", "bob", "--password", "secret"])
                ),
                Deferred.fromCoroutine(self.runScripts("error_handling", [])),
                Deferred.fromCoroutine(self.runScripts("data_service", [])),
            ],
            consumeErrors=True,
        )
        math, auth, errors, data = results
        self.assertEqual(math, ["5 + 3 = 8", "4 * 7 = 28", "Division error: Division by zero"])
        self.assertEqual(auth[0], "Message: Hello, bob!")
        self.assertTrue(auth[1].startswith("Server time: "), auth)
        self.assertEqual(errors[2], "Division error: Cannot divide by zero")
        self.assertEqual(data[0], "Stored item1 for user1")
