"""
Tests for the C{pb-gateway} command (L{gateway.cli}): C{config --print},
the one-line errors of every command, and C{serve}, C{gateway} (in front of
a C{broker} process) and C{call} as real processes on loopback, over plain
TCP, TLS and UNIX sockets.

The C{broker} and C{users} commands' own tests are in C{test_hosting.py}.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import io
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from gateway.cli import main
from gateway.config import SETTINGS

PYTHON = sys.executable
LOOPBACK = "tcp:0:interface=127.0.0.1"
READY = re.compile(r"pb-gateway is ready at (\S+)")


def environment(**variables: str) -> dict[str, str]:
    """
    This process's environment without any C{PBGW_} setting, plus
    C{variables}.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBGW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


class Running:
    """
    A C{pb-gateway} process whose output (stdout and stderr) is read line by
    line by a thread.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gateway", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env if env is not None else environment(),
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def nextLine(self, timeout: float = 20.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output in time; so far:\n" + "\n".join(self.seen)) from None
        if line is None:
            self.lines.put(None)
            raise AssertionError("the process ended; its output:\n" + "\n".join(self.seen))
        self.seen.append(line)
        return line

    def waitFor(self, pattern: re.Pattern[str] | str, timeout: float = 20.0) -> re.Match[str]:
        """
        Read lines until one matches C{pattern}.
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self.nextLine(max(0.01, deadline - time.monotonic()))
            match = re.search(pattern, line)
            if match:
                return match

    def readyURL(self) -> str:
        return self.waitFor(READY).group(1).rstrip("/")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """
        Send C{sig}, wait for the exit and the rest of the output; the exit
        status.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout=timeout)
        self.reader.join(timeout)
        while True:
            line = self.lines.get()
            if line is None:
                break
            self.seen.append(line)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(test: Any, *args: str, **kwargs: Any) -> Running:
    running = Running(*args, **kwargs)
    test.addCleanup(running.kill)
    return running


def runCommand(*args: str, env: dict[str, str] | None = None,
               cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gateway", *args], capture_output=True, text=True, timeout=60,
        env=env if env is not None else environment(), cwd=cwd, stdin=subprocess.DEVNULL,
    )


def runAll(*commands: tuple[str, ...], env: dict[str, str] | None = None,
           cwd: str | None = None) -> list[subprocess.CompletedProcess[str]]:
    """
    Run commands side by side (each is a Python start-up); their results in
    order.
    """
    processes = [
        subprocess.Popen([PYTHON, "-m", "gateway", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         env=env if env is not None else environment(), cwd=cwd)
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes, strict=True):
        out, err = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return results


def request(url: str, body: Any = None, token: str | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """
    A JSON request (POST with a body, else GET): the status and the JSON
    answer.
    """
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def login(url: str, context: ssl.SSLContext | None = None, **body: Any) -> str:
    status, answer = request(f"{url}/api/login", body or {"anonymous": True}, context=context)
    assert status == 200, answer
    return str(answer["token"])


def oneLineError(test: SynchronousTestCase, stderr: str, command: str) -> str:
    lines = stderr.strip().splitlines()
    test.assertEqual(len(lines), 1, stderr)
    prefix = f"pb-gateway {command}" if command else "pb-gateway"
    test.assertTrue(lines[0].startswith(f"{prefix}: error: "), lines[0])
    return lines[0]


def closedPort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConfigPrintTests(SynchronousTestCase):
    """
    C{pb-gateway config --print}.
    """

    def test_fileEnvironmentAndFlags(self) -> None:
        """
        The printed configuration combines the file, the environment and the
        flags, later ones winning, with each value's source; every setting
        is printed once, and the output is TOML.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('http = "tcp:9000"\ncall_timeout = 5\ngateway_name = "filed"\n'
                    'allowed_origins = ["https://a.example"]\n')
        result = runCommand(
            "config", "--print", "--config", path, "--call-timeout", "9", "--debug",
            env=environment(PBGW_CALL_TIMEOUT="7", PBGW_GATEWAY_NAME="envgw",
                            PBGW_MAX_BODY_SIZE="2048"),
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        lines = result.stdout.splitlines()
        self.assertEqual([line.split(" = ")[0] for line in lines],
                         [setting.name for setting in SETTINGS])
        for expected in [
            f'http = "tcp:9000"  # {path}',
            f'allowed_origins = ["https://a.example"]  # {path}',
            'gateway_name = "envgw"  # env PBGW_GATEWAY_NAME',
            "max_body_size = 2048  # env PBGW_MAX_BODY_SIZE",
            "call_timeout = 9.0  # flag --call-timeout",
            "debug = true  # flag --debug",
            'pb = "tcp:8800"  # default',
            "session_idle_timeout = 900.0  # default",
        ]:
            self.assertIn(expected, lines)
        document = tomllib.loads(result.stdout)
        self.assertEqual((document["call_timeout"], document["gateway_name"]), (9.0, "envgw"))


class BadArgumentTests(SynchronousTestCase):
    """
    Bad arguments and settings end every command with status 2 and one line
    C{pb-gateway COMMAND: error: REASON}.
    """

    def runMain(self, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
        """
        Run the command in this process up to its failure: the exit status
        and what it wrote to stderr.
        """
        stderr = io.StringIO()
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environment(**(environ or {})))
        try:
            with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
                main(list(argv))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        code = raised.exception.code
        return (code if isinstance(code, int) else 1), stderr.getvalue()

    def test_argumentsAndSettings(self) -> None:
        """
        Unknown arguments, missing ones, flag values of the wrong type and
        bad settings from each source are refused before anything starts.
        """
        badFile = os.path.abspath(self.mktemp())
        with open(badFile, "w") as f:
            f.write("call_timeout = -3\n")
        cases: list[tuple[tuple[str, ...], dict[str, str], str, str]] = [
            ((), {}, "", "the following arguments are required: COMMAND"),
            (("serve", "--bogus"), {}, "",
             "unrecognized arguments: --bogus"),
            (("serve", "--call-timeout", "soon"), {}, "serve",
             "argument --call-timeout: call_timeout must be a number, not 'soon'"),
            (("serve", "--config", badFile), {}, "serve",
             f"{badFile}: call_timeout must be greater than 0"),
            (("broker", "--log-format", "xml"), {}, "broker",
             'flag --log-format: log_format must be "text" or "json"'),
            (("broker",), {"PBGW_ANONYMOUS": "maybe"}, "broker",
             "env PBGW_ANONYMOUS: anonymous must be true or false"),
            (("gateway", "--broker", "tcp:host=broker:port=eighty"), {}, "gateway",
             "bad broker endpoint 'tcp:host=broker:port=eighty'"),
            (("gateway", "--gateway-name", "GW-1"), {}, "gateway",
             "gateway_name must be 1-32 lowercase letters and digits"),
            (("gateway",), {"PBGW_COLOUR": "blue"}, "gateway",
             "env PBGW_COLOUR: unknown key 'colour'"),
            (("config",), {}, "config", "the following arguments are required: --print"),
            (("config", "--print", "--max-body-size", "0"), {}, "config",
             "flag --max-body-size: max_body_size must be greater than 0"),
            (("call",), {}, "call", "the following arguments are required: method"),
            (("users", "add"), {}, "users add", "the following arguments are required"),
        ]
        for argv, environ, command, reason in cases:
            status, stderr = self.runMain(*argv, environ=environ)
            self.assertEqual(status, 2, (argv, stderr))
            line = oneLineError(self, stderr, command)
            self.assertIn(reason, line, argv)

    def test_processes(self) -> None:
        """
        As processes: C{serve} with an unknown key in its file and
        C{gateway} with a bad C{--http} endpoint exit 2 with one line on
        stderr; C{call} against a closed port exits 1 with one line saying
        the connection was refused.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('http = "tcp:0"\ncolour = "blue"\n')
        port = closedPort()
        serve, gateway, call = runAll(
            ("serve", "--config", path),
            ("gateway", "--http", "nonsense:8080"),
            ("call", "--url", f"http://127.0.0.1:{port}", "add", "1", "2"),
        )
        self.assertEqual(serve.returncode, 2, serve.stderr)
        self.assertEqual(oneLineError(self, serve.stderr, "serve"),
                         f"pb-gateway serve: error: {path}: unknown key 'colour'")
        self.assertEqual(gateway.returncode, 2, gateway.stderr)
        self.assertIn("bad endpoint 'nonsense:8080'", oneLineError(self, gateway.stderr,
                                                                   "gateway"))
        self.assertEqual((call.returncode, call.stdout), (1, ""), call.stderr)
        lines = call.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, call.stderr)
        self.assertTrue(lines[0].startswith("pb-gateway call: "), lines)
        self.assertIn("refused", lines[0])


class ServeTests(SynchronousTestCase):
    """
    C{pb-gateway serve} of the demo, used by C{pb-gateway call}: one
    process for the class.
    """

    serve: ClassVar[Running]
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.serve = Running("serve", "--http", LOOPBACK, "--pb", LOOPBACK)
        try:
            cls.url = cls.serve.readyURL()
        except BaseException:
            cls.serve.kill()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.serve.stop()
        cls.serve.kill()

    def test_callAnonymous(self) -> None:
        """
        C{call METHOD ARGS} logs in anonymously and prints the JSON result;
        arguments are JSON values, anything else a string.
        """
        add, echo = runAll(
            ("call", "--url", self.url, "add", "2", "3.5"),
            ("call", "--url", self.url, "whoami"),
        )
        self.assertEqual((add.returncode, add.stdout, add.stderr), (0, "5.5\n", ""))
        self.assertEqual((echo.returncode, echo.stdout), (0, '"guest"\n'), echo.stderr)

    def test_callAsUser(self) -> None:
        """
        C{--user} logs in with the password from C{--password} or
        C{$PBGW_PASSWORD}; a user's method is then available, and a wrong
        password fails with status 1 and the gateway's reason.
        """
        text = f"from the command line {time.monotonic()}"
        whoami, added, wrong, guest = runAll(
            ("call", "--url", self.url, "--user", "alice", "--password", "password", "whoami"),
            ("call", "--url", self.url, "--user", "bob", "addTask", text),
            ("call", "--url", self.url, "--user", "alice", "--password", "nope", "whoami"),
            ("call", "--url", self.url, "addTask", "guests cannot"),
            env=environment(PBGW_PASSWORD="secret"),
        )
        self.assertEqual((whoami.returncode, whoami.stdout), (0, '"alice"\n'), whoami.stderr)
        self.assertEqual(added.returncode, 0, added.stderr)
        taskId = json.loads(added.stdout)
        board = runCommand("call", "--url", self.url, "board")
        self.assertEqual(board.returncode, 0, board.stderr)
        task = json.loads(board.stdout)["state"][taskId]
        self.assertEqual((task["text"], task["by"]), (text, "bob"))
        self.assertEqual((wrong.returncode, wrong.stdout), (1, ""))
        self.assertRegex(wrong.stderr, r"^pb-gateway call: 401 unauthorized: .*\n\Z")
        self.assertEqual(guest.returncode, 1)
        self.assertRegex(guest.stderr, r"^pb-gateway call: 404 not_found: .*addTask.*\n\Z")

    def test_rootRefused(self) -> None:
        """
        The demo's root object is its login: C{--root} is refused.
        """
        result = runCommand("call", "--url", self.url, "--root", "add", "1", "2")
        self.assertEqual(result.returncode, 1)
        self.assertIn("403 forbidden", result.stderr)

    def test_watch(self) -> None:
        """
        C{--watch} prints the live object, its snapshot and then one JSON
        line per update until it is stopped; SIGTERM ends it quietly with
        status 0.
        """
        watch = start(self, "call", "--url", self.url, "--watch", "stats")
        first = json.loads(watch.nextLine())
        handle = first["$cache"]
        self.assertEqual(first["type"], "pb.live.LiveDict")
        self.assertIn("uptime_s", first["state"])
        snapshot = json.loads(watch.nextLine())
        self.assertEqual(snapshot["$cache"], handle)
        update = json.loads(watch.nextLine(timeout=10))
        self.assertEqual((update["cache"], update["method"]), (handle, "observe_update"))
        self.assertGreater(update["seq"], snapshot["seq"])
        self.assertEqual(watch.stop(), 0, watch.seen)
        for line in watch.seen:
            json.loads(line)


class ServeProcessTests(SynchronousTestCase):
    """
    C{pb-gateway serve} from start to SIGTERM.
    """

    def test_endToEnd(self) -> None:
        """
        C{serve} prints the demo credentials and its URL, answers the health
        checks and a REST login and call, and exits 0 on SIGTERM.
        """
        serve = start(self, "serve", "--http", LOOPBACK, "--pb", LOOPBACK)
        url = serve.readyURL()
        self.assertRegex(url, r"^http://localhost:\d+$")
        self.assertIn("alice/password", "\n".join(serve.seen))
        self.assertEqual(request(f"{url}/healthz"), (200, {"status": "ok"}))
        self.assertEqual(request(f"{url}/readyz"), (200, {"status": "ready"}))
        token = login(url, username="alice", password="password")
        self.assertTrue(token.startswith("gw-"), token)
        self.assertEqual(request(f"{url}/api/call/whoami", [], token), (200, {"result": "alice"}))
        self.assertEqual(request(f"{url}/api/call/add", [20, 22], token), (200, {"result": 42}))
        self.assertEqual(serve.stop(), 0, "\n".join(serve.seen))
        self.assertIn("Main loop terminated.", serve.seen[-1])

    def test_rootService(self) -> None:
        """
        C{serve --service MODULE:FACTORY} serves a plain C{pb.Root} from the
        working directory, which C{call --root} calls without logging in.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        with open(os.path.join(folder, "calculator.py"), "w") as f:
            f.write(
                "import pb\n\n\n"
                "class Calculator(pb.Root):\n"
                "    def remote_add(self, a, b):\n"
                "        return a + b\n\n"
                "    def remote_shout(self, text):\n"
                "        return text.upper()\n\n\n"
                "def makeRoot():\n"
                "    return Calculator()\n"
            )
        env = environment(PYTHONPATH=folder)
        serve = start(self, "serve", "--service", "calculator:makeRoot", "--http", LOOPBACK,
                      "--pb", LOOPBACK, env=env, cwd=folder)
        url = serve.readyURL()
        self.assertNotIn("Demo service", "\n".join(serve.seen))
        add, shout, loggingIn = runAll(
            ("call", "--url", url, "--root", "add", "[1]", "[2, 3]"),
            ("call", "--url", url, "--root", "shout", "quiet please"),
            ("call", "--url", url, "add", "1", "2"),
            env=env, cwd=folder,
        )
        self.assertEqual((add.returncode, add.stdout), (0, "[1, 2, 3]\n"), add.stderr)
        self.assertEqual((shout.returncode, shout.stdout), (0, '"QUIET PLEASE"\n'), shout.stderr)
        self.assertEqual(loggingIn.returncode, 1)
        self.assertIn("pb-gateway call: 401", loggingIn.stderr)
        self.assertEqual(serve.stop(), 0)

    def test_unixSockets(self) -> None:
        """
        C{serve} listens on UNIX sockets for both HTTP and PB, its gateway
        reaching its broker over the PB socket.
        """
        # A socket's path must be short (108 bytes): not under pytest's folder.
        folder = tempfile.mkdtemp(prefix="pbgw-")
        self.addCleanup(shutil.rmtree, folder, True)
        httpPath = os.path.join(folder, "http.sock")
        serve = start(self, "serve", "--http", f"unix:{httpPath}",
                      "--pb", f"unix:{os.path.join(folder, 'pb.sock')}")
        self.assertEqual(serve.readyURL(), f"unix:{httpPath}")

        class UNIXConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.settimeout(10)
                self.sock.connect(httpPath)

        connection = UNIXConnection("localhost")
        self.addCleanup(connection.close)
        connection.request("POST", "/api/login", json.dumps({"anonymous": True}))
        token = json.loads(connection.getresponse().read())["token"]
        connection.request("POST", "/api/call/add", "[1, 2]",
                           {"authorization": f"Bearer {token}"})
        self.assertEqual(json.loads(connection.getresponse().read()), {"result": 3})
        self.assertEqual(serve.stop(), 0)


class GatewayProcessTests(SynchronousTestCase):
    """
    C{pb-gateway gateway} in front of a separate C{pb-gateway broker}.
    """

    def test_gatewayInFrontOfBroker(self) -> None:
        """
        The gateway reaches the broker at C{--broker}, names its tokens
        after C{--gateway-name}, logs JSON lines with C{--log-format json},
        and both processes exit 0 on SIGTERM.
        """
        broker = start(self, "broker", "--pb", LOOPBACK)
        port = broker.waitFor(r"PB broker listening on 127\.0\.0\.1:(\d+)").group(1)
        gateway = start(self, "gateway", "--broker", f"tcp:host=127.0.0.1:port={port}",
                        "--http", LOOPBACK, "--gateway-name", "edge", "--log-format", "json")
        url = gateway.readyURL()
        self.assertEqual(request(f"{url}/readyz"), (200, {"status": "ready"}))
        token = login(url, username="bob", password="secret")
        self.assertTrue(token.startswith("edge-"), token)
        self.assertEqual(request(f"{url}/api/call/whoami", [], token), (200, {"result": "bob"}))
        call = runCommand("call", "--url", url, "--user", "alice", "--password", "password",
                          "add", "40", "2")
        self.assertEqual((call.returncode, call.stdout), (0, "42\n"), call.stderr)
        self.assertEqual(gateway.stop(), 0, gateway.seen)
        self.assertEqual(broker.stop(), 0, broker.seen)
        events = [json.loads(line) for line in gateway.seen if not READY.search(line)]
        self.assertGreater(len(events), 2)
        for event in events:
            self.assertIsInstance(event, dict)
            self.assertIn("log_time", event)
        self.assertIn("listening", " ".join(str(event.get("log_format")) for event in events))
        self.assertFalse(any(line.startswith("{") for line in broker.seen), broker.seen)


def makeCertificate(folder: str) -> tuple[str, str]:
    """
    A self-signed certificate for localhost and 127.0.0.1 in C{folder}: the
    paths of its key and certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(folder, "key.pem")
    certPath = os.path.join(folder, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


class TLSTests(SynchronousTestCase):
    """
    TLS endpoint strings for HTTP/WebSocket and for the gateway-to-broker
    link, as C{docs/deploy.md} shows them.
    """

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.folder, "trusted"))
        self.key, self.cert = makeCertificate(self.folder)
        with open(self.cert, "rb") as source, \
                open(os.path.join(self.folder, "trusted", "broker.pem"), "wb") as copy:
            copy.write(source.read())
        self.context = ssl.create_default_context(cafile=self.cert)
        self.server = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"

    def test_gatewayAndBroker(self) -> None:
        """
        A broker on C{ssl:}, a gateway verifying it with C{tls:...:trustRoots=}
        and serving HTTPS on C{ssl:}: a client trusting the certificate logs
        in and calls through both TLS hops.
        """
        broker = start(self, "broker", "--pb", self.server)
        port = broker.waitFor(r"PB broker listening on 127\.0\.0\.1:(\d+)").group(1)
        trusted = os.path.join(self.folder, "trusted")
        gateway = start(self, "gateway", "--http", self.server,
                        "--broker", f"tls:host=localhost:port={port}:trustRoots={trusted}")
        url = gateway.readyURL()
        self.assertRegex(url, r"^https://localhost:\d+$")
        self.assertEqual(request(f"{url}/readyz", context=self.context),
                         (200, {"status": "ready"}))
        token = login(url, self.context, username="alice", password="password")
        self.assertEqual(request(f"{url}/api/call/whoami", [], token, self.context),
                         (200, {"result": "alice"}))
        with self.assertRaises(urllib.error.URLError) as raised:
            request(f"{url}/healthz")
        self.assertIsInstance(raised.exception.reason, ssl.SSLCertVerificationError)
        self.assertEqual(gateway.stop(), 0)
        self.assertEqual(broker.stop(), 0)

    def test_serve(self) -> None:
        """
        C{serve} with TLS on both endpoints: its own gateway reaches its
        broker over TLS too.
        """
        serve = start(self, "serve", "--http", self.server, "--pb", self.server)
        url = serve.readyURL()
        self.assertRegex(url, r"^https://localhost:\d+$")
        token = login(url, self.context)
        self.assertEqual(request(f"{url}/api/call/add", [1, 2], token, self.context),
                         (200, {"result": 3}))
        self.assertEqual(serve.stop(), 0)
