"""
Tests for the gateway's access log (L{gateway.accesslog}): the lines, the
JSON records, buffered writing, failures, and the site writing to it.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gateway.accesslog import AccessLog, accessLogLine, openAccessLog
from gateway.rest import makeSite
from gateway.sessions import GatewayOptions

TIMESTAMP = "[26/Nov/2026:15:00:00 +0000]"


def answeredRequest(uri: bytes, status: int = 200, agent: bytes | None = b"curl/8") -> Request:
    """
    A request for C{uri} from 10.0.0.7, answered with C{status} and 12 bytes.
    """
    request = Request(DummyChannel())
    request.client = IPv4Address("TCP", "10.0.0.7", 41234)
    request.method = b"POST"
    request.uri = uri
    request.clientproto = b"HTTP/1.1"
    request.code = status
    request.sentLength = 12
    if agent is not None:
        request.requestHeaders.setRawHeaders(b"user-agent", [agent])
    return request


class BrokenStream(io.StringIO):
    """
    A stream whose writes fail, like a file on a full disk.
    """

    attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise OSError(28, "No space left on device")


class AccessLogLineTests(TestCase):
    """
    The combined log format, without tokens.
    """

    def test_combinedFormat(self) -> None:
        """
        A request without a token is Twisted's combined log line.
        """
        request = answeredRequest(b"/api/call/add")
        self.assertEqual(accessLogLine(TIMESTAMP, request),
                         combinedLogFormatter(TIMESTAMP, request))
        self.assertEqual(
            accessLogLine(TIMESTAMP, request),
            f'"10.0.0.7" - - {TIMESTAMP} "POST /api/call/add HTTP/1.1" 200 12 "-" "curl/8"',
        )

    def test_tokensRemoved(self) -> None:
        """
        A token in the query, first or not, is written as C{token=-}; the
        rest of the URL stays.
        """
        for uri, expected in [
            (b"/api/caches/c1/events?token=gw-abc.secret", "/api/caches/c1/events?token=-"),
            (b"/ws?since=3&token=gw-abc.secret&x=1", "/ws?since=3&token=-&x=1"),
        ]:
            line = accessLogLine(TIMESTAMP, answeredRequest(uri))
            self.assertIn(f'"POST {expected} HTTP/1.1"', line)
            self.assertNotIn("secret", line)


class AccessLogTests(TestCase):
    """
    L{AccessLog} writes a line per request and flushes shortly after.
    """

    def test_writtenOnceAfterDelay(self) -> None:
        """
        Lines are held and written together, in one write and one flush,
        C{flushDelay} seconds after the first of them, by one timer however
        many lines come.
        """
        stream = io.StringIO()
        writes: list[str] = []
        flushes: list[None] = []
        stream.write = writes.append  # type: ignore[method-assign,assignment]
        stream.flush = lambda: flushes.append(None)  # type: ignore[method-assign]
        clock = Clock()
        log = AccessLog(stream, clock, flushDelay=0.25)
        for _ in range(3):
            log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        self.assertEqual((writes, flushes), ([], []))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.2)
        self.assertEqual(writes, [])
        clock.advance(0.05)
        self.assertEqual(len(writes), 1)
        self.assertEqual(len(writes[0].splitlines()), 3)
        self.assertTrue(writes[0].endswith('"curl/8"\n'))
        self.assertEqual(len(flushes), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        log.close()
        self.assertEqual((len(writes), len(flushes)), (2, 2))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_manyLinesWrittenAtOnce(self) -> None:
        """
        Once C{maxPending} lines wait they are written without waiting for
        the timer.
        """
        stream = io.StringIO()
        clock = Clock()
        log = AccessLog(stream, clock)
        for _ in range(log.maxPending - 1):
            log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        self.assertEqual(stream.getvalue(), "")
        log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        self.assertEqual(len(stream.getvalue().splitlines()), log.maxPending)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_json(self) -> None:
        """
        In JSON, each line is one object with the request's fields, the
        clock's time, and no token.
        """
        stream = io.StringIO()
        clock = Clock()
        clock.advance(1795700000.5)
        log = AccessLog(stream, clock, json=True)
        log.write(TIMESTAMP, answeredRequest(b"/ws?token=gw-a.secret", 101, agent=None))
        log.flush()
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record, {
            "log_namespace": "gateway.access",
            "log_format": '{client} "{method} {uri} {protocol}" {status} {bytes}',
            "log_time": 1795700000.5,
            "client": "10.0.0.7",
            "method": "POST",
            "uri": "/ws?token=-",
            "protocol": "HTTP/1.1",
            "status": 101,
            "bytes": 12,
            "referer": None,
            "user_agent": None,
        })

    def test_writeFailureStopsLogging(self) -> None:
        """
        A failing stream (a full disk) is reported once and the log stops;
        the request is not failed.
        """
        stream = BrokenStream()
        clock = Clock()
        log = AccessLog(stream, clock)
        log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        log.flush()
        log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        log.flush()
        self.assertEqual(stream.attempts, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_writeFailureLoggedOnce(self) -> None:
        """
        The failure is one error event naming the reason.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        log = AccessLog(BrokenStream(), Clock())
        for _ in range(3):
            log.write(TIMESTAMP, answeredRequest(b"/healthz"))
            log.flush()
        mine = [e for e in events if e.get("log_namespace") == "gateway.accesslog.AccessLog"]
        self.assertEqual(len(mine), 1)
        self.assertIn("No space left", str(mine[0]["error"]))


class OpenAccessLogTests(TestCase):
    """
    The C{access_log} setting: C{-}, C{off}, or a file.
    """

    def test_off(self) -> None:
        self.assertIsNone(openAccessLog("off", Clock(), False, io.StringIO()))

    def test_standardOutput(self) -> None:
        stdout = io.StringIO()
        log = openAccessLog("-", Clock(), True, stdout)
        assert log is not None
        self.assertIs(log.stream, stdout)
        self.assertTrue(log.json)
        log.close()
        self.assertFalse(stdout.closed)

    def test_fileAppended(self) -> None:
        """
        A file is appended to, and closed with the log.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("earlier line\n")
        log = openAccessLog(path, Clock(), False, io.StringIO())
        assert log is not None
        log.write(TIMESTAMP, answeredRequest(b"/healthz"))
        log.close()
        self.assertTrue(log.stream.closed)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "earlier line")
        self.assertIn('"POST /healthz HTTP/1.1" 200 12', lines[1])

    def test_unopenable(self) -> None:
        missing = os.path.join(self.mktemp(), "no", "such", "dir.log")
        self.assertRaises(OSError, openAccessLog, missing, Clock(), False, io.StringIO())


class SiteTests(TestCase):
    """
    The gateway's site logs to its access log, and nowhere without one.
    """

    def test_siteWritesLines(self) -> None:
        stream = io.StringIO()
        log = AccessLog(stream, Clock())
        site = makeSite(None, GatewayOptions(), log)
        site._logDateTime = TIMESTAMP
        site.log(answeredRequest(b"/api/call/add?token=gw-a.secret"))
        log.flush()
        self.assertEqual(
            stream.getvalue(),
            f'"10.0.0.7" - - {TIMESTAMP} "POST /api/call/add?token=- HTTP/1.1" 200 12 "-" '
            '"curl/8"\n',
        )

    def test_noAccessLog(self) -> None:
        """
        Without an access log nothing is written, not even to the global
        log publisher.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        site = makeSite(None, GatewayOptions())
        site.startFactory()
        self.addCleanup(site.stopFactory)
        site.log(answeredRequest(b"/healthz"))
        self.assertEqual([e for e in events if "healthz" in str(e)], [])

    def test_forwardedClient(self) -> None:
        """
        Behind a trusted proxy the line names the client its
        C{X-Forwarded-For} names; from others the peer.
        """
        from gateway.proxies import TrustedProxies
        from gateway.rest import LimitedRequest

        stream = io.StringIO()
        log = AccessLog(stream, Clock())
        site = makeSite(None, GatewayOptions(), log, TrustedProxies(["10.0.0.0/8"]))
        site._logDateTime = TIMESTAMP
        for peer in ("10.0.0.7", "192.0.2.50"):
            channel = DummyChannel()
            channel.site = site
            request = LimitedRequest(channel)
            request.client = IPv4Address("TCP", peer, 41234)
            request.method, request.uri, request.clientproto = b"GET", b"/healthz", b"HTTP/1.1"
            request.code, request.sentLength = 200, 2
            request.requestHeaders.setRawHeaders(b"x-forwarded-for", [b"203.0.113.8"])
            site.log(request)
        log.flush()
        first, second = stream.getvalue().splitlines()
        self.assertTrue(first.startswith('"203.0.113.8" - - '), first)
        self.assertTrue(second.startswith('"192.0.2.50" - - '), second)
