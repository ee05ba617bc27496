"""
The C{pb-gateway} command: one entry point with a subcommand per job.

  - C{serve}: broker, gateway and dashboard in one process (the demo by
    default): ready at http://localhost:8080/.
  - C{broker}: only the broker, serving a service on C{--pb}.
  - C{gateway}: only the gateway, in front of the broker at C{--broker}.
  - C{users}: manage a credential file (C{add}, C{remove}, C{list}).
  - C{call}: call a method through a gateway and print the JSON result.
  - C{config}: print the effective configuration and where each value
    came from.

Settings come from C{--config FILE} (TOML), C{PBGW_*} environment
variables and flags, later ones winning.  Bad arguments or settings end the
command with exit status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

__all__ = ["main"]


class _Usage(Exception):
    """
    A bad argument: reported in one line, exit status 2.
    """


class _Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line (argparse's own print the
    usage first), like every other bad argument of the command.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flagParser(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """
    C{parse} as an argparse type whose error names the key and the reason.
    """

    def parseFlag(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{name} {e}") from None

    return parseFlag


# -- arguments ---------------------------------------------------------------


def _settingFlags(parser: argparse.ArgumentParser, *names: str) -> None:
    """
    Flags for configuration keys; unset flags stay L{None} so that they do
    not override the file or the environment.
    """
    from .config import SETTINGS

    byName = {setting.name: setting for setting in SETTINGS}
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for name in names:
        setting = byName[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(setting.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=setting.help)
        elif setting.parseText is not None and not isinstance(setting.default, tuple):
            parser.add_argument(flag, type=_flagParser(name, setting.parseText), default=None,
                                metavar="N", help=setting.help)
        else:
            parser.add_argument(flag, default=None, metavar=name.upper().split("_")[-1],
                                help=setting.help)


_BROKER_KEYS = ("pb", "service", "users", "anonymous", "login_max_failures", "login_window",
                "login_lockout", "log_format")
_GATEWAY_KEYS = (
    "http", "call_timeout", "session_idle_timeout", "connect_timeout", "max_body_size",
    "max_message_size", "max_in_flight", "max_handles", "update_buffer", "send_buffer_soft",
    "send_buffer_hard", "ping_interval", "ping_timeout", "sse_keepalive", "allowed_origins",
    "static_dir", "gateway_name", "mind_wait", "mind_notifications", "share_anonymous",
    "login_max_failures", "login_window", "login_lockout", "max_sessions_per_user",
    "max_connections", "trusted_proxies", "access_log", "debug", "log_format",
)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pb-gateway", description="Perspective Broker services for the web.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve", help="broker + gateway + dashboard in one process (the demo by default)"
    )
    _settingFlags(serve, *_BROKER_KEYS, *[k for k in _GATEWAY_KEYS if k not in _BROKER_KEYS])

    broker = commands.add_parser("broker", help="run only a PB broker serving a service")
    _settingFlags(broker, *_BROKER_KEYS)

    gateway = commands.add_parser("gateway", help="run only the gateway, in front of a broker")
    _settingFlags(gateway, "broker", *_GATEWAY_KEYS)

    config = commands.add_parser("config", help="show the effective configuration")
    config.add_argument("--print", action="store_true", required=True,
                        help="print every setting with its value and source")
    _settingFlags(config, *_BROKER_KEYS, "broker",
                  *[k for k in _GATEWAY_KEYS if k not in _BROKER_KEYS])

    users = commands.add_parser("users", help="manage a credential file")
    userCommands = users.add_subparsers(dest="action", metavar="ACTION")
    userCommands.required = True
    add = userCommands.add_parser("add", help="add a user or change a password")
    add.add_argument("file")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of prompting")
    remove = userCommands.add_parser("remove", help="remove a user")
    remove.add_argument("file")
    remove.add_argument("username")
    listing = userCommands.add_parser("list", help="list the users")
    listing.add_argument("file")

    call = commands.add_parser("call", help="call a method through a gateway")
    call.add_argument("--url", default="http://localhost:8080", help="the gateway's URL")
    call.add_argument("--user", help="log in as this user (default: anonymous)")
    call.add_argument("--password", help="the password (default: $PBGW_PASSWORD or a prompt)")
    call.add_argument("--root", action="store_true",
                      help="call the broker's root object instead of logging in")
    call.add_argument("--watch", action="store_true",
                      help="follow the live object the call returns, one JSON line per update")
    call.add_argument("method")
    call.add_argument("args", nargs="*",
                      help="arguments: JSON values (anything else is sent as a string)")
    return parser


def _config(args: argparse.Namespace, keys: Sequence[str]) -> Any:
    from .config import ConfigError, loadConfig

    flags = {key: getattr(args, key, None) for key in keys}
    try:
        return loadConfig(args.config, os.environ, flags)
    except ConfigError as e:
        raise _Usage(str(e)) from None


# -- running -----------------------------------------------------------------


def _startLogging(config: Any) -> None:
    from twisted.logger import globalLogBeginner, jsonFileLogObserver, textFileLogObserver

    observer = (
        # One JSON object per line (JSON Lines), without the RFC 7464 record
        # separator Twisted puts before each by default.
        jsonFileLogObserver(sys.stdout, recordSeparator="") if config["log_format"] == "json"
        else textFileLogObserver(sys.stdout)
    )
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate

    # Debug events (autobahn logs every frame) stay out of the log.
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])], redirectStandardIO=False
    )


def _accessLog(reactor: Any, config: Any) -> Any:
    """
    The access log the configuration asks for (L{None} for C{"off"}).
    """
    from .accesslog import openAccessLog

    try:
        return openAccessLog(config["access_log"], reactor, config["log_format"] == "json",
                             sys.stdout)
    except OSError as e:
        raise _Usage(f"cannot open the access log {config['access_log']!r}: "
                     f"{e.strerror}") from None


def _tuneGarbageCollector() -> None:
    """
    Once the servers are up: move everything allocated so far out of the
    cycle collector's sight, and let it run less often.

    Calls make short-lived reference cycles (coroutines, Deferreds with
    cancellers) that only the collector frees, so it stays on; but with its
    default first threshold (700 allocations) a busy gateway spent about a
    tenth of its time in it, mostly walking long-lived objects again.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _brokerService(reactor: Any, config: Any) -> Any:
    """
    The broker service the configuration asks for (the demo without a
    service).
    """
    from pb.broker import BrokerOptions
    from pb.credentials import UserFileError
    from pb.service import BrokerService, ServiceError, loadService

    try:
        if config["service"] is None:
            from pb.demo import makeService

            service: Any = makeService()
        else:
            sys.path.insert(0, os.getcwd())
            service = loadService(config["service"])
        options = BrokerOptions(
            loginMaxFailures=config["login_max_failures"],
            loginWindow=config["login_window"],
            loginLockout=config["login_lockout"],
        )
        return BrokerService(reactor, config["pb"], service, config["users"],
                             config["anonymous"], options)
    except (ServiceError, UserFileError) as e:
        raise _Usage(str(e)) from None


def _demoBanner(config: Any) -> None:
    if config["service"] is None and config["users"] is None:
        from pb.demo import DEMO_USERS

        users = ", ".join(f"{name}/{password}" for name, password in DEMO_USERS.items())
        print(f"Demo service: anonymous login allowed; demo users {users}", flush=True)


def _run(reactor: Any, start: Callable[[], Awaitable[Any]]) -> int:
    """
    Run the reactor, calling C{start()} once running; a failure of it stops
    the process with its reason.
    """
    from twisted.internet.defer import Deferred

    failed: list[str] = []

    def startFailed(failure: Any) -> None:
        from twisted.internet.error import ReactorNotRunning

        failed.append(str(failure.value) if failure.check(_Usage) else failure.getErrorMessage())
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    async def starting() -> None:
        await start()
        _tuneGarbageCollector()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(starting()).addErrback(startFailed))
    reactor.run()
    if failed:
        raise _Usage(failed[0])
    return 0


async def _listen(reactor: Any, service: Any) -> Any:
    from pb.service import ServiceError

    try:
        service.startService()
    except ServiceError as e:
        raise _Usage(str(e)) from None
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return await service.whenListening()


def _broker(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    config = _config(args, _BROKER_KEYS)
    brokerService = _brokerService(reactor, config)
    _startLogging(config)
    _demoBanner(config)

    async def start() -> None:
        await _listen(reactor, brokerService)

    return _run(reactor, start)


def _gateway(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from .service import GatewayService

    config = _config(args, ("broker", *_GATEWAY_KEYS))
    _checkClientEndpoint(reactor, config["broker"])
    gatewayService = GatewayService(reactor, config["http"], config.gatewayOptions(),
                                    _accessLog(reactor, config))
    _startLogging(config)

    async def start() -> None:
        port = await _listen(reactor, gatewayService)
        _ready(port, config["http"])

    return _run(reactor, start)


def _checkClientEndpoint(reactor: Any, description: str) -> None:
    """
    Reject a broker endpoint string that cannot be parsed at start-up, not
    at the first login.
    """
    from twisted.internet.endpoints import clientFromString

    try:
        clientFromString(reactor, description)
    except Exception as e:
        raise _Usage(f"bad broker endpoint {description!r}: {e}") from None


def _isTLS(description: str) -> bool:
    return description.split(":", 1)[0].strip().lower() in ("ssl", "tls")


def _ready(port: Any, description: str) -> None:
    address = port.getHost()
    if not hasattr(address, "port"):
        path = address.name.decode() if isinstance(address.name, bytes) else address.name
        print(f"pb-gateway is ready at unix:{path}", flush=True)
        return
    host = "localhost" if address.host in ("0.0.0.0", "::", "127.0.0.1") else address.host
    scheme = "https" if _isTLS(description) else "http"
    print(f"pb-gateway is ready at {scheme}://{host}:{address.port}/", flush=True)


def _localBroker(description: str, address: Any) -> str:
    """
    The client endpoint string for C{serve}'s gateway to reach the broker it
    has just started listening at C{address} (from C{description}).
    """
    if not hasattr(address, "port"):
        path = address.name.decode() if isinstance(address.name, bytes) else address.name
        return f"unix:path={_escape(path)}"
    host = "127.0.0.1" if address.host in ("0.0.0.0", "::", "") else address.host
    # The link stays on this machine and ends in this process, so TLS needs
    # no certificate check here (the broker's certificate may not name the
    # address, nor be trusted by the system).
    kind = "ssl" if _isTLS(description) else "tcp"
    return f"{kind}:host={_escape(host)}:port={address.port}"


def _escape(value: str) -> str:
    """
    C{value} quoted for an endpoint string, where C{:} separates arguments.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from .service import GatewayService

    config = _config(args, (*_BROKER_KEYS, *_GATEWAY_KEYS))
    brokerService = _brokerService(reactor, config)
    accessLog = _accessLog(reactor, config)
    _startLogging(config)
    _demoBanner(config)

    async def start() -> None:
        port = await _listen(reactor, brokerService)
        brokerAt = _localBroker(config["pb"], port.getHost())
        gatewayService = GatewayService(reactor, config["http"], config.gatewayOptions(brokerAt),
                                        accessLog)
        _ready(await _listen(reactor, gatewayService), config["http"])

    return _run(reactor, start)


def _printConfig(args: argparse.Namespace) -> int:
    config = _config(args, (*_BROKER_KEYS, "broker", *_GATEWAY_KEYS))
    sys.stdout.write(config.describe())
    return 0


# -- users -------------------------------------------------------------------


def _readPassword(fromStdin: bool) -> str:
    if fromStdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise _Usage("the passwords differ")
    if not password:
        raise _Usage("the password is empty")
    return password


def _users(args: argparse.Namespace) -> int:
    from pb.credentials import UserFile, UserFileError

    try:
        if args.action == "list":
            for name in UserFile.load(args.file).names():
                print(name)
            return 0
        users = UserFile.load(args.file) if os.path.exists(args.file) else UserFile()
        if args.action == "add":
            users = users.add(args.username, _readPassword(args.password_stdin))
            users.save(args.file)
            print(f"{args.username}: password set in {args.file}")
        else:
            users = users.remove(args.username)
            users.save(args.file)
            print(f"{args.username}: removed from {args.file}")
    except UserFileError as e:
        raise _Usage(str(e)) from None
    return 0


# -- call --------------------------------------------------------------------


def _argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _call(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from .client import GatewayClient, GatewayClientError
    from .codec import pbFromJSON

    arguments = [_argument(text) for text in args.args]
    password = args.password or os.environ.get("PBGW_PASSWORD")
    if args.user and password is None:
        password = getpass.getpass(f"Password for {args.user}: ")
    status: list[int] = [0]
    # A signal (Ctrl-C, SIGTERM) is how a --watch ends: not a failure.
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)

    async def run() -> None:
        client = GatewayClient(args.url)
        try:
            if args.root:
                path = f"/api/root/{args.method}"
            else:
                if args.user:
                    await client.login(args.user, password)
                else:
                    await client.login(anonymous=True)
                path = f"/api/call/{args.method}"
            pbFromJSON(arguments)  # rejects malformed tags before anything is sent
            reply = await client._request("POST", path, {"args": arguments})
            result = reply["result"]
            print(json.dumps(result, ensure_ascii=False), flush=True)
            if args.watch:
                await _watch(client, result)
        except GatewayClientError as e:
            print(f"pb-gateway call: {e}", file=sys.stderr)
            status[0] = 1
        except Exception as e:
            if not stopping:
                print(f"pb-gateway call: {type(e).__name__}: {e}", file=sys.stderr)
                status[0] = 1
        finally:
            if client.token is not None and not args.watch:
                try:
                    await client.logout()
                except Exception:
                    pass
            if not stopping:
                reactor.stop()

    _run(reactor, run)
    return status[0]


async def _watch(client: Any, result: Any) -> None:
    """
    Print each update of the live object C{result} as a JSON line.
    """
    import treq

    handle = result.get("$cache") if isinstance(result, dict) else None
    if not isinstance(handle, str):
        raise _Usage("--watch needs a method that returns a live object")
    from twisted.web.http_headers import Headers

    response = await treq.get(
        f"{client.url}/api/caches/{handle}/events",
        headers=Headers({b"authorization": [f"Bearer {client.token}".encode()]}),
        unbuffered=True,
    )
    done: Any = treq.collect(response, _EventPrinter().feed)
    await done


class _EventPrinter:
    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    print(line[len(b"data: "):].decode("utf-8"), flush=True)


# -- main --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run C{pb-gateway} with C{argv} (default: the process's arguments).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    command = {
        "serve": _serve,
        "broker": _broker,
        "gateway": _gateway,
        "config": _printConfig,
        "users": _users,
        "call": _call,
    }[args.command]
    try:
        status = command(args)
    except _Usage as e:
        print(f"pb-gateway {args.command}: error: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
