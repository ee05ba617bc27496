"""
The gateway's access log: one line per HTTP request, written straight to a
file or standard output.

Twisted's default sends every request through the global log publisher as
an event, formatted by the log observers (a quarter of the gateway's CPU per
REST call when measured); here a line is formatted once, held, and written
with the lines that follow it shortly after, in one write.  Lines are
Twisted's combined log format, or one JSON object per line when the
gateway logs JSON.  Tokens in URLs (C{?token=}) are
written as C{token=-}: a token is a session's secret.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request, combinedLogFormatter

__all__ = ["AccessLog", "accessLogLine", "openAccessLog"]

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")


def accessLogLine(timestamp: str, request: Request) -> str:
    """
    Twisted's combined log line for C{request}, without the C{?token=} an
    event stream or a rejoining WebSocket carries in its URL.
    """
    line = combinedLogFormatter(timestamp, request)
    if "token=" in line:
        line = _TOKEN_IN_URL.sub(r"\1-", line)
    return line


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def accessLogRecord(request: Request) -> dict[str, Any]:
    """
    The fields of C{request}'s access log entry, for the JSON log.
    """
    uri = request.uri.decode("latin-1")
    if "token=" in uri:
        uri = _TOKEN_IN_URL.sub(r"\1-", uri)
    address = request.getClientAddress()
    return {
        "log_namespace": "gateway.access",
        "log_format": '{client} "{method} {uri} {protocol}" {status} {bytes}',
        "client": getattr(address, "host", None),
        "method": _text(request.method),
        "uri": uri,
        "protocol": _text(request.clientproto),
        "status": request.code,
        "bytes": getattr(request, "sentLength", None),
        "referer": _text(request.getHeader(b"referer")),
        "user_agent": _text(request.getHeader(b"user-agent")),
    }


class AccessLog:
    """
    Writes access log lines to C{stream} C{flushDelay} seconds after the
    first unwritten line, or once C{maxPending} lines wait.

    @ivar json: Write one JSON object per line instead of the combined log
        format.
    """

    log = Logger()
    maxPending = 256

    def __init__(self, stream: IO[str], clock: IReactorTime, json: bool = False,
                 flushDelay: float = 0.25, closeStream: bool = False) -> None:
        self.stream = stream
        self.clock = clock
        self.json = json
        self.flushDelay = flushDelay
        self._closeStream = closeStream
        self._flushCall: IDelayedCall | None = None
        self._pending: list[str] = []
        self._failed = False

    def write(self, timestamp: str, request: Request) -> None:
        """
        Log C{request}, answered at C{timestamp} (the combined log format's
        time field, which twisted.web caches per second).
        """
        if self._failed:
            return
        if self.json:
            record = accessLogRecord(request)
            record["log_time"] = self.clock.seconds()
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = accessLogLine(timestamp, request)
        # Held here, not in the stream's buffer: with PYTHONUNBUFFERED (as
        # in many containers) every write to standard output is a system
        # call.
        self._pending.append(line)
        if len(self._pending) >= self.maxPending:
            self.flush()
        elif self._flushCall is None:
            self._flushCall = self.clock.callLater(self.flushDelay, self.flush)

    def flush(self) -> None:
        """
        Write out the held lines now.
        """
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if self._failed or not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError) as e:
            self._stop(e)

    def close(self) -> None:
        """
        Flush, and close the stream if this log opened it.
        """
        self.flush()
        if self._closeStream:
            self.stream.close()

    def _stop(self, error: Exception) -> None:
        # A full disk or a closed pipe must not fail requests: stop logging
        # them, once, with the reason.
        self._failed = True
        self.log.error("The access log cannot be written, no longer writing it: {error}",
                       error=error)


def openAccessLog(where: str, clock: IReactorTime, json: bool,
                  stdout: IO[str]) -> AccessLog | None:
    """
    The access log the C{access_log} setting names: C{"-"} for C{stdout},
    C{"off"} for none, or a file path, opened for appending.

    @raise OSError: the file cannot be opened.
    """
    if where == "off":
        return None
    if where == "-":
        return AccessLog(stdout, clock, json)
    return AccessLog(open(where, "a", encoding="utf-8", newline="\n"), clock, json,
                     closeStream=True)
