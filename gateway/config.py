"""
Configuration: one immutable object from a TOML file, the environment and
the command line.

Later sources win: built-in defaults, then the TOML file (C{--config}), then
C{PBGW_*} environment variables, then command-line flags.  Every key is
checked at start-up: an unknown key or a bad value stops the program with
the key and the reason.  C{pb-gateway config --print} shows the effective
values and where each came from.  Only the entry point reads C{os.environ}.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .proxies import parseNetworks
from .sessions import DEFAULT_STATIC, GatewayOptions

__all__ = ["SETTINGS", "Config", "ConfigError", "Setting", "loadConfig"]


class ConfigError(Exception):
    """
    A bad configuration: the message names the key and the reason.
    """


def _positive(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a {kind.__name__}")
        if kind is int and not isinstance(value, int):
            raise ValueError("must be a whole number")
        if value <= 0:
            raise ValueError("must be greater than 0")
        return kind(value)

    return check


def _nonNegative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("must be a number >= 0")
    return float(value)


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number >= 0 (0: no limit)")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _optionalString(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _string(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    """
    A list of strings, given as a list or as one comma-separated string.
    """
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of {what} (or a comma-separated string)")
    return tuple(value)


def _origins(value: Any) -> tuple[str, ...]:
    value = _strings(value, "origins")
    for origin in value:
        if origin != "*" and not re.match(r"https?://[^/\s]+\Z", origin):
            raise ValueError(f"{origin!r} is not an origin like https://example.com")
    return value


def _names(value: Any) -> tuple[str, ...]:
    value = _strings(value, "method names")
    if not all(re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", v) for v in value):
        raise ValueError("must be a list of method names (or a comma-separated string)")
    return value


def _logFormat(value: Any) -> str:
    if value not in ("text", "json"):
        raise ValueError('must be "text" or "json"')
    return str(value)


def _accessLogTarget(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be "-" (standard output), "off", or a file path')
    return value


def _networks(value: Any) -> tuple[str, ...]:
    value = _strings(value, "addresses or networks")
    parseNetworks(value)
    return value


def _gatewayName(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"[a-z0-9]{1,32}\Z", value):
        raise ValueError("must be 1-32 lowercase letters and digits")
    return value


@attrs.frozen
class Setting:
    """
    One configuration key: its default, how a value is checked, how a text
    value (environment, flag) is parsed, and what it means.
    """

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str
    parseText: Callable[[str], Any] | None = None


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, not {text!r}") from None


def _boolText(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_defaults = GatewayOptions()

SETTINGS: tuple[Setting, ...] = (
    Setting("http", "tcp:8080", _string, "where the gateway listens (endpoint string)"),
    Setting("pb", "tcp:8800", _string, "where the broker listens (endpoint string)"),
    Setting("broker", "tcp:host=127.0.0.1:port=8800", _string,
            "where the gateway finds its broker (client endpoint string)"),
    Setting("service", None, _optionalString, "MODULE:FACTORY of the PB service (default: demo)"),
    Setting("users", None, _optionalString, "credential file for password login"),
    Setting("anonymous", False, _bool, "allow anonymous login", _boolText),
    Setting("session_idle_timeout", _defaults.sessionIdleTimeout, _positive(float),
            "seconds of inactivity before a session ends", _number),
    Setting("call_timeout", _defaults.callTimeout, _positive(float),
            "seconds a PB call may take", _number),
    Setting("connect_timeout", _defaults.connectTimeout, _positive(float),
            "seconds to connect and log in to the broker", _number),
    Setting("max_body_size", _defaults.maxBodySize, _positive(int),
            "largest HTTP request body (bytes)", _number),
    Setting("max_message_size", _defaults.maxMessageSize, _positive(int),
            "largest WebSocket frame or message (bytes)", _number),
    Setting("max_in_flight", _defaults.maxInFlight, _positive(int),
            "unanswered requests per WebSocket", _number),
    Setting("max_handles", _defaults.maxHandles, _positive(int),
            "references and caches per session", _number),
    Setting("update_buffer", _defaults.updateBuffer, _positive(int),
            "cache updates kept per cache for resuming", _number),
    Setting("send_buffer_soft", _defaults.sendBufferSoft, _positive(int),
            "bytes queued for a slow client before updates become a resync", _number),
    Setting("send_buffer_hard", _defaults.sendBufferHard, _positive(int),
            "bytes queued before a slow client is disconnected", _number),
    Setting("ping_interval", _defaults.pingInterval, _nonNegative,
            "seconds between WebSocket pings (0: none)", _number),
    Setting("ping_timeout", _defaults.pingTimeout, _nonNegative,
            "seconds a WebSocket ping may go unanswered", _number),
    Setting("sse_keepalive", _defaults.sseKeepAlive, _positive(float),
            "seconds between SSE keep-alive comments", _number),
    Setting("allowed_origins", (), _origins,
            "browser origins allowed besides the gateway's own", lambda text: text),
    Setting("static_dir", DEFAULT_STATIC, _optionalString, "the dashboard's folder"),
    Setting("gateway_name", _defaults.gatewayName, _gatewayName,
            "this gateway's name in its tokens (sticky routing)"),
    Setting("mind_wait", _defaults.mindWait, _nonNegative,
            "seconds a service's call on a web user waits for a browser", _number),
    Setting("mind_notifications", (), _names,
            "mind methods delivered to every browser, result ignored", lambda text: text),
    Setting("share_anonymous", _defaults.shareAnonymous, _bool,
            "anonymous sessions share one PB login (one observer per live object)",
            _boolText),
    Setting("login_max_failures", _defaults.loginMaxFailures, _positive(int),
            "failed logins before a lockout (gateway: per user and per address; "
            "broker: per user)", _number),
    Setting("login_window", _defaults.loginWindow, _positive(float),
            "seconds in which failed logins are counted", _number),
    Setting("login_lockout", _defaults.loginLockout, _positive(float),
            "seconds a locked-out user or address waits (429)", _number),
    Setting("max_sessions_per_user", _defaults.maxSessionsPerUser, _limit,
            "sessions per user name, anonymous ones per address (429; 0: no limit)", _number),
    Setting("max_connections", _defaults.maxConnections, _limit,
            "client connections served at once (503 past it; 0: no limit)", _number),
    Setting("trusted_proxies", (), _networks,
            "reverse proxies whose X-Forwarded-For names the client", lambda text: text),
    Setting("access_log", "-", _accessLogTarget,
            'where requests are logged: "-" (standard output), "off", or a file'),
    Setting("log_format", "text", _logFormat, 'log lines as "text" or "json"'),
    Setting("debug", False, _bool, "send tracebacks to callers", _boolText),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}

# PBGW_ variables that are not settings: the password of `pb-gateway call`.
_NOT_SETTINGS = frozenset({"PBGW_PASSWORD"})


@attrs.frozen
class Config:
    """
    The effective configuration: C{values} by key, and C{sources} saying
    where each came from (C{"default"}, the file, C{"env PBGW_..."},
    C{"flag --..."}).
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def gatewayOptions(self, broker: str | None = None) -> GatewayOptions:
        """
        The gateway's options (C{broker} overrides the configured one, for
        C{serve}).
        """
        v = self.values
        return GatewayOptions(
            broker=broker or v["broker"],
            sessionIdleTimeout=v["session_idle_timeout"],
            callTimeout=v["call_timeout"],
            connectTimeout=v["connect_timeout"],
            maxBodySize=v["max_body_size"],
            maxHandles=v["max_handles"],
            updateBuffer=v["update_buffer"],
            gatewayName=v["gateway_name"],
            debug=v["debug"],
            allowedOrigins=v["allowed_origins"],
            maxMessageSize=v["max_message_size"],
            maxInFlight=v["max_in_flight"],
            sendBufferSoft=v["send_buffer_soft"],
            sendBufferHard=v["send_buffer_hard"],
            pingInterval=v["ping_interval"],
            pingTimeout=v["ping_timeout"],
            sseKeepAlive=v["sse_keepalive"],
            staticDir=v["static_dir"],
            mindWait=v["mind_wait"],
            mindNotifications=v["mind_notifications"],
            shareAnonymous=v["share_anonymous"],
            loginMaxFailures=v["login_max_failures"],
            loginWindow=v["login_window"],
            loginLockout=v["login_lockout"],
            maxSessionsPerUser=v["max_sessions_per_user"],
            maxConnections=v["max_connections"],
            trustedProxies=v["trusted_proxies"],
        )

    def describe(self) -> str:
        """
        The effective configuration as TOML, each value with its source.
        """
        lines = []
        for setting in SETTINGS:
            value = self.values[setting.name]
            lines.append(f"{setting.name} = {_toml(value)}  # {self.sources[setting.name]}")
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _apply(values: dict[str, Any], sources: dict[str, str], name: str, raw: Any,
           source: str) -> None:
    setting = _BY_NAME.get(name)
    if setting is None:
        raise ConfigError(f"{source}: unknown key {name!r}")
    try:
        values[name] = setting.check(raw)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: {name} {e}") from None
    sources[name] = source


def loadConfig(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """
    Build the configuration from defaults, the TOML file at C{path}, the
    C{PBGW_*} variables of C{environ} and the given C{flags} (key to value;
    L{None} values are ignored).

    @raise ConfigError: an unknown key, a bad value, or an unreadable file.
    """
    values = {setting.name: setting.default for setting in SETTINGS}
    sources = {setting.name: "default" for setting in SETTINGS}
    if path is not None:
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for name, raw in document.items():
            _apply(values, sources, name, raw, path)
    for variable, text in (environ or {}).items():
        if not variable.startswith("PBGW_") or variable in _NOT_SETTINGS:
            continue
        name = variable[len("PBGW_"):].lower()
        setting = _BY_NAME.get(name)
        source = f"env {variable}"
        if setting is None:
            raise ConfigError(f"{source}: unknown key {name!r}")
        try:
            raw = setting.parseText(text) if setting.parseText else text
        except ValueError as e:
            raise ConfigError(f"{source}: {name} {e}") from None
        _apply(values, sources, name, raw, source)
    for name, raw in (flags or {}).items():
        if raw is not None:
            _apply(values, sources, name, raw, f"flag --{name.replace('_', '-')}")
    return Config(values, sources)
