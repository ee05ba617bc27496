"""
Tests for the scaled-out deployment: C{docker-compose.yml} checked against
the Compose Specification's JSON schema and against the commands it runs,
and the same topology on loopback (one C{pb-gateway broker}, two
C{pb-gateway gateway} processes named C{gw1} and C{gw2}, and Debian's nginx
with C{examples/deploy/nginx.conf}) showing that every request of a session
reaches the gateway that holds it.

nginx is required in CI (C{CI=true}); elsewhere the topology tests are
skipped without it.  No Docker engine is needed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

import yaml
from tools import requireTool
from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway.cli import _parser
from gateway.config import loadConfig

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(REPO, "docker-compose.yml")
NGINX_SITE = os.path.join(REPO, "examples", "deploy", "nginx.conf")
DOCKERFILE = os.path.join(REPO, "examples", "deploy", "Dockerfile")
LOOPBACK = "tcp:0:interface=127.0.0.1"


def nginxBinary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


class ComposeFileTests(SynchronousTestCase):
    """
    C{docker-compose.yml} is a valid Compose file describing the topology
    the tests below run.
    """

    def setUp(self) -> None:
        with open(COMPOSE, encoding="utf-8") as f:
            self.compose = yaml.safe_load(f)
        self.services = self.compose["services"]

    def checkJSONSchema(self, path: str) -> subprocess.CompletedProcess[str]:
        try:
            import check_jsonschema  # noqa: F401
        except ImportError:
            requireTool(False, "check-jsonschema (pip)")
        return subprocess.run(
            [PYTHON, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
             path],
            capture_output=True, text=True, timeout=60,
        )

    def test_schema(self) -> None:
        """
        The file validates against the Compose Specification's schema (the
        copy shipped in check-jsonschema, offline), and a copy with a wrong
        C{depends_on} condition does not.
        """
        result = self.checkJSONSchema(COMPOSE)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(COMPOSE, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("condition: service_healthy", text)
        broken = os.path.abspath(self.mktemp()) + ".yml"
        with open(broken, "w", encoding="utf-8") as f:
            f.write(text.replace("condition: service_healthy", "condition: when_ready", 1))
        result = self.checkJSONSchema(broken)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("when_ready", result.stdout + result.stderr)

    def test_topology(self) -> None:
        """
        One broker, two gateways and nginx; nginx waits for healthy
        gateways, which wait for a healthy broker; the PB port and nginx's
        port are published, the gateways' are not.
        """
        self.assertEqual(sorted(self.services), ["broker", "gateway1", "gateway2", "nginx"])
        for name in ["gateway1", "gateway2"]:
            self.assertEqual(self.services[name]["depends_on"],
                             {"broker": {"condition": "service_healthy"}})
            self.assertNotIn("ports", self.services[name])
        self.assertEqual(self.services["nginx"]["depends_on"], {
            "gateway1": {"condition": "service_healthy"},
            "gateway2": {"condition": "service_healthy"},
        })
        self.assertEqual(self.services["broker"]["ports"], ["8800:8800"])
        self.assertEqual(self.services["nginx"]["ports"], ["8080:80"])
        mounts = self.services["nginx"]["volumes"]
        self.assertEqual(mounts, ["./examples/deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"])
        self.assertTrue(os.path.isfile(os.path.join(REPO, mounts[0].split(":")[0])))

    def test_commands(self) -> None:
        """
        Each service's command is a valid C{pb-gateway} command line whose
        settings load: the broker listens on 8800, each gateway listens on
        8080 and finds the broker by its service name, under its own valid
        gateway name.
        """
        names = set()
        for service, command in [(s, self.services[s]["command"])
                                 for s in ["broker", "gateway1", "gateway2"]]:
            args = _parser().parse_args(command)
            self.assertEqual(args.command, "gateway" if service != "broker" else "broker")
            keys = [key for key in vars(args) if key not in ("command", "config")]
            config = loadConfig(None, self.services[service].get("environment", {}),
                                {key: getattr(args, key) for key in keys})
            if service == "broker":
                self.assertEqual(config["pb"], "tcp:8800")
            else:
                self.assertEqual(config["http"], "tcp:8080")
                self.assertEqual(config["broker"], "tcp:host=broker:port=8800")
                self.assertEqual(config.sources["gateway_name"], "env PBGW_GATEWAY_NAME")
                self.assertIn("172.16.0.0/12", config["trusted_proxies"])
                names.add(config["gateway_name"])
        self.assertEqual(names, {"gw1", "gw2"})

    def test_healthChecks(self) -> None:
        """
        The gateways' health checks fetch C{/readyz} on their own port; the
        broker's connects to its PB port.
        """
        for name in ["gateway1", "gateway2"]:
            test = self.services[name]["healthcheck"]["test"]
            self.assertEqual(test[0], "CMD")
            self.assertIn("http://127.0.0.1:8080/readyz", test[-1])
            compile(test[-1], name, "exec")
        broker = self.services["broker"]["healthcheck"]["test"]
        self.assertIn("('127.0.0.1', 8800)", broker[-1])
        compile(broker[-1], "broker", "exec")

    def test_nginxRoutesToTheGateways(self) -> None:
        """
        nginx's upstreams are the two gateway services on their HTTP port,
        and the token prefix of each routes to its own.
        """
        with open(NGINX_SITE, encoding="utf-8") as f:
            site = f.read()
        upstreams = dict(re.findall(r"upstream (\w+) \{([^}]*)\}", site))
        servers = {name: re.findall(r"server (\S+?)[ ;]", body)
                   for name, body in upstreams.items()}
        self.assertEqual(servers, {
            "pbgw_any": ["gateway1:8080", "gateway2:8080"],
            "pbgw_gw1": ["gateway1:8080"],
            "pbgw_gw2": ["gateway2:8080"],
        })
        self.assertIn('"~^gw1" pbgw_gw1;', site)
        self.assertIn('"~^gw2" pbgw_gw2;', site)
        self.assertIn("default pbgw_any;", site)

    def test_dockerfile(self) -> None:
        """
        The image copies files that exist, and its default command is a
        valid C{pb-gateway} command line.
        """
        with open(DOCKERFILE, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        copied = [part for line in lines if line.startswith("COPY ")
                  for part in shlex.split(line)[1:-1]]
        self.assertIn("gateway", copied)
        for path in copied:
            self.assertTrue(os.path.exists(os.path.join(REPO, path)), path)
        self.assertIn('ENTRYPOINT ["pb-gateway"]', lines)
        command = next(line for line in lines if line.startswith("CMD "))
        self.assertEqual(_parser().parse_args(json.loads(command[4:])).command, "serve")


# -- the topology on loopback -------------------------------------------------


class Running:
    """
    A process whose output lines are read by a thread.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def waitFor(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(self.seen)) from None
            if line is None:
                raise AssertionError("the process ended:\n" + "\n".join(self.seen))
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pbGateway(*args: str, **variables: str) -> Running:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBGW_")}
    env.update(variables, PYTHONUNBUFFERED="1")
    return Running([PYTHON, "-m", "gateway", *args], env)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginxConfig(prefix: str, listen: int, gateway1: int, gateway2: int) -> str:
    """
    A complete nginx configuration in C{prefix} around the repository's
    C{nginx.conf}, with the compose file's addresses replaced by loopback
    ports: the path of the main file.
    """
    with open(NGINX_SITE, encoding="utf-8") as f:
        site = f.read()
    for old, count in [("gateway1:8080", 2), ("gateway2:8080", 2), ("listen 80;", 1)]:
        assert site.count(old) == count, f"{NGINX_SITE} no longer has {count} x {old!r}"
    site = (site.replace("gateway1:8080", f"127.0.0.1:{gateway1}")
            .replace("gateway2:8080", f"127.0.0.1:{gateway2}")
            .replace("listen 80;", f"listen 127.0.0.1:{listen};"))
    with open(os.path.join(prefix, "pbgw.conf"), "w", encoding="utf-8") as f:
        f.write(site)
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};"
                     for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    main = os.path.join(prefix, "nginx.conf")
    with open(main, "w", encoding="utf-8") as f:
        f.write(
            # As root, workers would otherwise run as nobody, who cannot
            # enter the test's private folder.
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log info;\n"
            "events {\n    worker_connections 256;\n}\n"
            "http {\n"
            f"    access_log {prefix}/access.log;\n{temp}\n"
            f"    include {prefix}/pbgw.conf;\n"
            "}\n"
        )
    return main


class Topology:
    """
    The compose file's services on loopback: a broker, gateways C{gw1} and
    C{gw2} in front of it, and nginx in front of them at C{url}.
    """

    def __init__(self, prefix: str) -> None:
        self.processes: list[Running] = []
        try:
            self._start(prefix)
        except BaseException:
            self.close()
            raise

    def _start(self, prefix: str) -> None:
        nginx = nginxBinary()
        assert nginx is not None
        broker = self.add(pbGateway("broker", "--pb", LOOPBACK))
        port = broker.waitFor(r"PB broker listening on 127\.0\.0\.1:(\d+)").group(1)
        self.gateways: dict[str, Running] = {}
        self.gatewayURLs: dict[str, str] = {}
        for name in ["gw1", "gw2"]:
            self.gateways[name] = self.add(pbGateway(
                "gateway", "--http", LOOPBACK, "--broker", f"tcp:host=127.0.0.1:port={port}",
                PBGW_GATEWAY_NAME=name,
            ))
        for name, gateway in self.gateways.items():
            url = gateway.waitFor(r"pb-gateway is ready at (\S+)").group(1).rstrip("/")
            self.gatewayURLs[name] = url.replace("localhost", "127.0.0.1")
        ports = [int(self.gatewayURLs[name].rsplit(":", 1)[1]) for name in ["gw1", "gw2"]]
        for attempt in range(3):
            listen = freePort()
            folder = os.path.join(prefix, f"nginx{attempt}")
            os.makedirs(folder)
            config = nginxConfig(folder, listen, *ports)
            process = self.add(Running(
                [nginx, "-c", config, "-p", folder + "/", "-g", "daemon off;"], dict(os.environ)
            ))
            if self._accepting(process, listen):
                self.url = f"http://127.0.0.1:{listen}"
                return
        with open(os.path.join(folder, "error.log")) as f:
            raise AssertionError("nginx did not start:\n" + f.read() + "\n".join(process.seen))

    @staticmethod
    def _accepting(process: Running, port: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def add(self, process: Running) -> Running:
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.kill(signal.SIGTERM)


def request(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """
    A JSON request (POST with a body, else GET): the status, and the JSON
    answer (or the text of a non-JSON one, like nginx's error pages).
    """
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode("utf-8", "replace")


def login(url: str, **body: Any) -> str:
    status, answer = request(f"{url}/api/login", body or {"anonymous": True})
    assert status == 200, (status, answer)
    return str(answer["token"])


def loginOnEach(url: str, **body: Any) -> dict[str, str]:
    """
    Log in through nginx until there is a session on each gateway: a token
    by gateway name.
    """
    tokens: dict[str, str] = {}
    for _ in range(10):
        token = login(url, **body)
        tokens.setdefault(token.split("-", 1)[0], token)
        if len(tokens) == 2:
            break
    return tokens


class WebSocket:
    """
    A JSON-RPC WebSocket joined to a session with C{/ws?token=T}.
    """

    def __init__(self, url: str, token: str) -> None:
        self.stack = contextlib.ExitStack()
        self.connection: ClientConnection = self.stack.enter_context(connect(
            url.replace("http://", "ws://") + f"/ws?token={token}", open_timeout=10
        ))
        self.nextID = 0

    def call(self, method: str, *params: Any) -> Any:
        self.nextID += 1
        self.connection.send(json.dumps(
            {"jsonrpc": "2.0", "id": self.nextID, "method": method, "params": list(params)}
        ))
        while True:
            message = json.loads(self.connection.recv(timeout=10))
            if message.get("id") == self.nextID:
                if "error" in message:
                    raise AssertionError(message["error"])
                return message["result"]
            if message.get("method") == "rpc.session":
                raise AssertionError(message)

    def close(self) -> None:
        self.stack.close()


class EventStream:
    """
    An SSE stream of one cache, with the token as a header or a query.
    """

    def __init__(self, url: str, handle: str, token: str, inQuery: bool) -> None:
        host = url.removeprefix("http://")
        self.connection = http.client.HTTPConnection(host, timeout=10)
        path = f"/api/caches/{handle}/events"
        headers = {"accept": "text/event-stream"}
        if inQuery:
            path += f"?token={token}"
        else:
            headers["authorization"] = f"Bearer {token}"
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()

    def nextEvent(self) -> tuple[str, Any]:
        """
        The next event's name and data (keep-alive comments skipped).
        """
        name, data = "message", None
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith("event: "):
                name = text[len("event: "):]
            elif text.startswith("data: "):
                data = json.loads(text[len("data: "):])
            elif text == "" and data is not None:
                return name, data

    def close(self) -> None:
        self.connection.close()


class TopologyTestCase(SynchronousTestCase):
    topology: ClassVar[Topology]
    folder: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        requireTool(nginxBinary() is not None, "nginx (apt-get install nginx-light)")
        cls.folder = tempfile.mkdtemp(prefix="pbgw-deploy-")
        try:
            cls.topology = Topology(cls.folder)
        except BaseException:
            shutil.rmtree(cls.folder, True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.topology.close()
        shutil.rmtree(cls.folder, True)

    def webSocket(self, token: str) -> WebSocket:
        ws = WebSocket(self.topology.url, token)
        self.addCleanup(ws.close)
        return ws

    def eventStream(self, handle: str, token: str, inQuery: bool) -> EventStream:
        stream = EventStream(self.topology.url, handle, token, inQuery)
        self.addCleanup(stream.close)
        return stream


class StickySessionTests(TopologyTestCase):
    """
    Through nginx, logins spread over both gateways and every later
    request of a session reaches the gateway that holds it.
    """

    def test_loginsSpread(self) -> None:
        """
        Logins carry no token, so nginx spreads them: both gateways' token
        prefixes appear among a few logins, for users and guests alike.
        """
        url = self.topology.url
        self.assertEqual(sorted(loginOnEach(url)), ["gw1", "gw2"])
        self.assertEqual(sorted(loginOnEach(url, username="bob", password="secret")),
                         ["gw1", "gw2"])
        self.assertEqual(request(f"{url}/healthz"), (200, {"status": "ok"}))

    def test_wrongGatewayRefuses(self) -> None:
        """
        A session exists only on its own gateway: sent straight to the other
        one, its token is unknown (401).  This is what the routing avoids.
        """
        tokens = loginOnEach(self.topology.url)
        urls = self.topology.gatewayURLs
        self.assertEqual(request(f"{urls['gw1']}/api/call/whoami", [], tokens["gw1"]),
                         (200, {"result": "guest"}))
        status, answer = request(f"{urls['gw2']}/api/call/whoami", [], tokens["gw1"])
        self.assertEqual(status, 401, answer)
        status, answer = request(f"{urls['gw1']}/api/call/whoami", [], tokens["gw2"])
        self.assertEqual(status, 401, answer)

    def test_everyTransportSticks(self) -> None:
        """
        For a session on each gateway, repeated REST calls, a WebSocket
        joined with C{/ws?token=}, and SSE streams with the token in the
        header and in the query all reach the session (any other gateway
        would answer 401 or end the stream at once).
        """
        url = self.topology.url
        tokens = loginOnEach(url, username="alice", password="password")
        self.assertEqual(sorted(tokens), ["gw1", "gw2"])
        for name, token in tokens.items():
            for n in range(4):
                self.assertEqual(request(f"{url}/api/call/add", [n, 1], token),
                                 (200, {"result": n + 1}), name)
            self.assertEqual(request(f"{url}/api/call/whoami", [], token),
                             (200, {"result": "alice"}), name)
            ws = self.webSocket(token)
            self.assertEqual(ws.call("whoami"), "alice", name)
            self.assertEqual(ws.call("add", 2, 3), 5, name)
            status, board = request(f"{url}/api/call/board", [], token)
            self.assertEqual(status, 200, board)
            handle = board["result"]["$cache"]
            for inQuery in (False, True):
                stream = self.eventStream(handle, token, inQuery)
                self.assertEqual(stream.response.status, 200, (name, inQuery))
                event, snapshot = stream.nextEvent()
                self.assertEqual((event, snapshot["$cache"]), ("snapshot", handle))
            text = f"task on {name}"
            taskId = ws.call("addTask", text)
            event, update = stream.nextEvent()
            self.assertEqual(event, "update")
            self.assertIn(taskId, json.dumps(update))


class FailoverTests(TopologyTestCase):
    """
    Killing one gateway costs only the sessions it held.
    """

    def test_killOneGateway(self) -> None:
        """
        After C{gw1} is killed, its clients' REST calls fail (502 from nginx)
        and its WebSocket and SSE stream end; the clients of C{gw2} go on on
        every transport; and new logins through nginx land on C{gw2} and
        work.
        """
        url = self.topology.url
        tokens = loginOnEach(url)
        self.assertEqual(sorted(tokens), ["gw1", "gw2"])
        sockets, streams, handles = {}, {}, {}
        for name, token in tokens.items():
            sockets[name] = self.webSocket(token)
            self.assertEqual(sockets[name].call("add", 1, 1), 2)
            status, stats = request(f"{url}/api/call/stats", [], token)
            self.assertEqual(status, 200, stats)
            handles[name] = stats["result"]["$cache"]
            streams[name] = self.eventStream(handles[name], token, inQuery=True)
            self.assertEqual(streams[name].nextEvent()[0], "snapshot")

        self.topology.gateways["gw1"].kill()

        status, answer = request(f"{url}/api/call/add", [1, 2], tokens["gw1"])
        self.assertEqual(status, 502, answer)
        with self.assertRaises(ConnectionClosed):
            sockets["gw1"].call("add", 1, 2)
        with self.assertRaises((EOFError, OSError, http.client.HTTPException)):
            while True:
                streams["gw1"].nextEvent()

        self.assertEqual(request(f"{url}/api/call/add", [1, 2], tokens["gw2"]),
                         (200, {"result": 3}))
        self.assertEqual(sockets["gw2"].call("add", 2, 2), 4)
        event, update = streams["gw2"].nextEvent()
        self.assertEqual((event, update["cache"]), ("update", handles["gw2"]))

        for _ in range(3):
            token = login(url, username="alice", password="password")
            self.assertTrue(token.startswith("gw2-"), token)
            self.assertEqual(request(f"{url}/api/call/whoami", [], token),
                             (200, {"result": "alice"}))
        self.assertEqual(self.webSocket(token).call("whoami"), "alice")
