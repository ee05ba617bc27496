"""
The C{pb-gateway} command: one entry point with a subcommand per job.

  - C{serve}: broker and gateway in one process (the demo by default).
  - C{broker}: serve a PB service (the demo by default) on C{--pb}.
  - C{gateway}: the gateway alone, in front of the broker at C{--broker}.
  - C{users}: manage a credential file (C{add}, C{remove}, C{list}).

Bad arguments end the command with exit status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main"]


class _Usage(Exception):
    """
    A bad argument: reported in one line, exit status 2.
    """


def _brokerArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pb", default="tcp:8800", metavar="ENDPOINT",
        help="where the broker listens (Twisted endpoint string; default tcp:8800)",
    )
    parser.add_argument(
        "--service", metavar="MODULE:FACTORY",
        help="a callable returning a pb.Root, a realm or a portal (default: the demo)",
    )
    parser.add_argument("--users", metavar="FILE", help="credential file for password login")
    parser.add_argument("--anonymous", action="store_true", help="allow anonymous login")


def _gatewayArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http", default="tcp:8080", metavar="ENDPOINT",
        help="where the gateway listens (Twisted endpoint string; default tcp:8080)",
    )
    parser.add_argument("--call-timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--session-timeout", type=float, default=900.0, metavar="SECONDS")
    parser.add_argument("--debug", action="store_true", help="send tracebacks to callers")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pb-gateway", description="Perspective Broker services for the web."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    broker = commands.add_parser("broker", help="run a PB broker serving a service")
    _brokerArguments(broker)

    serve = commands.add_parser(
        "serve", help="broker + gateway + dashboard in one process (the demo by default)"
    )
    _brokerArguments(serve)
    _gatewayArguments(serve)

    gateway = commands.add_parser("gateway", help="run only the gateway, in front of a broker")
    gateway.add_argument(
        "--broker", default="tcp:host=127.0.0.1:port=8800", metavar="ENDPOINT",
        help="where the broker is (Twisted client endpoint string)",
    )
    _gatewayArguments(gateway)

    users = commands.add_parser("users", help="manage a credential file")
    userCommands = users.add_subparsers(dest="action", metavar="ACTION")
    userCommands.required = True
    add = userCommands.add_parser("add", help="add a user or change a password")
    add.add_argument("file")
    add.add_argument("username")
    add.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from standard input instead of prompting",
    )
    remove = userCommands.add_parser("remove", help="remove a user")
    remove.add_argument("file")
    remove.add_argument("username")
    listing = userCommands.add_parser("list", help="list the users")
    listing.add_argument("file")
    return parser


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


def _startLogging() -> None:
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)


def _loadBrokerService(reactor: Any, args: argparse.Namespace) -> Any:
    """
    The broker service the arguments ask for (the demo without --service).
    """
    from pb.credentials import UserFileError
    from pb.service import BrokerService, ServiceError, loadService

    try:
        if args.service is None:
            from pb.demo import makeService

            service: Any = makeService()
        else:
            sys.path.insert(0, os.getcwd())
            service = loadService(args.service)
        return BrokerService(reactor, args.pb, service, args.users, args.anonymous)
    except (ServiceError, UserFileError) as e:
        raise _Usage(str(e)) from None


def _demoBanner(args: argparse.Namespace) -> None:
    if args.service is None and args.users is None:
        from pb.demo import DEMO_USERS

        users = ", ".join(f"{name}/{password}" for name, password in DEMO_USERS.items())
        print(f"Demo service: anonymous login allowed; demo users {users}", flush=True)


def _gatewayOptions(args: argparse.Namespace, broker: str) -> Any:
    from .sessions import GatewayOptions

    return GatewayOptions(
        broker=broker,
        callTimeout=args.call_timeout,
        sessionIdleTimeout=args.session_timeout,
        debug=args.debug,
    )


def _run(reactor: Any, start: Any) -> int:
    """
    Run the reactor, calling C{start()} (an async function) once running;
    a L{_Usage} or failure from it stops the process with its reason.
    """
    from twisted.internet.defer import Deferred

    failed: list[str] = []

    def started(failure: Any) -> None:
        failed.append(
            str(failure.value) if failure.check(_Usage) else failure.getErrorMessage()
        )
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(start()).addErrback(started))
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

    brokerService = _loadBrokerService(reactor, args)
    _startLogging()
    _demoBanner(args)

    async def start() -> None:
        await _listen(reactor, brokerService)

    return _run(reactor, start)


def _gateway(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from .service import GatewayService

    gatewayService = GatewayService(reactor, args.http, _gatewayOptions(args, args.broker))
    _startLogging()

    async def start() -> None:
        await _listen(reactor, gatewayService)

    return _run(reactor, start)


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from .service import GatewayService

    brokerService = _loadBrokerService(reactor, args)
    _startLogging()
    _demoBanner(args)

    async def start() -> None:
        port = await _listen(reactor, brokerService)
        brokerAt = f"tcp:host=127.0.0.1:port={port.getHost().port}"
        gatewayService = GatewayService(reactor, args.http, _gatewayOptions(args, brokerAt))
        httpPort = await _listen(reactor, gatewayService)
        address = httpPort.getHost()
        host = "localhost" if address.host in ("0.0.0.0", "::", "127.0.0.1") else address.host
        print(f"pb-gateway is ready at http://{host}:{address.port}/", flush=True)

    return _run(reactor, start)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run C{pb-gateway} with C{argv} (default: the process's arguments).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    command = {
        "broker": _broker,
        "gateway": _gateway,
        "serve": _serve,
        "users": _users,
    }[args.command]
    try:
        status = command(args)
    except _Usage as e:
        print(f"pb-gateway {args.command}: error: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
