"""
Tests for L{gateway.config}: defaults < TOML file < C{PBGW_*} environment <
flags, the source of every value as C{describe()} reports it, the rejection
of unknown keys and bad values with the key and the reason, and the mapping
of settings onto L{GatewayOptions}.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from gateway.cli import _parser
from gateway.config import SETTINGS, ConfigError, loadConfig
from gateway.sessions import GatewayOptions

DOCUMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "docs", "configuration.md")

# For every setting: a value as a TOML file writes it, the same value as an
# environment variable or flag spells it, and the value it becomes.  None of
# them is the default, so that each one shows it was applied.
SAMPLES: dict[str, tuple[str, str, Any]] = {
    "http": ('"tcp:9080"', "tcp:9080", "tcp:9080"),
    "pb": ('"unix:/run/pb.sock"', "unix:/run/pb.sock", "unix:/run/pb.sock"),
    "broker": ('"tcp:host=broker:port=8800"', "tcp:host=broker:port=8800",
               "tcp:host=broker:port=8800"),
    "service": ('"myapp.pb:makeService"', "myapp.pb:makeService", "myapp.pb:makeService"),
    "users": ('"/etc/pbgw/users"', "/etc/pbgw/users", "/etc/pbgw/users"),
    "anonymous": ("true", "yes", True),
    "session_idle_timeout": ("60", "60", 60.0),
    "call_timeout": ("2.5", "2.5", 2.5),
    "connect_timeout": ("3", "3", 3.0),
    "max_body_size": ("4096", "4096", 4096),
    "max_message_size": ("8192", "8192", 8192),
    "max_in_flight": ("8", "8", 8),
    "max_handles": ("50", "50", 50),
    "update_buffer": ("16", "16", 16),
    "send_buffer_soft": ("1000", "1000", 1000),
    "send_buffer_hard": ("2000", "2000", 2000),
    "ping_interval": ("0", "0", 0.0),
    "ping_timeout": ("1.5", "1.5", 1.5),
    "sse_keepalive": ("5", "5", 5.0),
    "allowed_origins": ('["https://a.example", "http://b.example:8000"]',
                        "https://a.example, http://b.example:8000",
                        ("https://a.example", "http://b.example:8000")),
    "static_dir": ('"/srv/dashboard"', "/srv/dashboard", "/srv/dashboard"),
    "gateway_name": ('"gw7"', "gw7", "gw7"),
    "mind_wait": ("0", "0", 0.0),
    "mind_notifications": ('["receive", "tick"]', "receive,tick", ("receive", "tick")),
    "share_anonymous": ("false", "no", False),
    "login_max_failures": ("3", "3", 3),
    "login_window": ("30", "30", 30.0),
    "login_lockout": ("120", "120", 120.0),
    "max_sessions_per_user": ("5", "5", 5),
    "max_connections": ("0", "0", 0),
    "trusted_proxies": ('["10.0.0.0/8", "::1"]', "10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")),
    "access_log": ('"off"', "off", "off"),
    "log_format": ('"json"', "json", "json"),
    "debug": ("true", "on", True),
}

# The GatewayOptions field each gateway setting becomes.
OPTION_FIELDS = {
    "broker": "broker",
    "sessionIdleTimeout": "session_idle_timeout",
    "callTimeout": "call_timeout",
    "connectTimeout": "connect_timeout",
    "maxBodySize": "max_body_size",
    "maxHandles": "max_handles",
    "updateBuffer": "update_buffer",
    "gatewayName": "gateway_name",
    "debug": "debug",
    "allowedOrigins": "allowed_origins",
    "maxMessageSize": "max_message_size",
    "maxInFlight": "max_in_flight",
    "sendBufferSoft": "send_buffer_soft",
    "sendBufferHard": "send_buffer_hard",
    "pingInterval": "ping_interval",
    "pingTimeout": "ping_timeout",
    "sseKeepAlive": "sse_keepalive",
    "staticDir": "static_dir",
    "mindWait": "mind_wait",
    "mindNotifications": "mind_notifications",
    "shareAnonymous": "share_anonymous",
    "loginMaxFailures": "login_max_failures",
    "loginWindow": "login_window",
    "loginLockout": "login_lockout",
    "maxSessionsPerUser": "max_sessions_per_user",
    "maxConnections": "max_connections",
    "trustedProxies": "trusted_proxies",
}


def envName(name: str) -> str:
    return "PBGW_" + name.upper()


def describedLines(description: str) -> dict[str, tuple[str, str]]:
    """
    C{describe()}'s lines by key: the value as written, and the source.
    """
    lines = {}
    for line in description.splitlines():
        key, _, rest = line.partition(" = ")
        value, _, source = rest.rpartition("  # ")
        lines[key] = (value, source)
    return lines


class ConfigTestCase(SynchronousTestCase):
    def writeConfig(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertRejected(self, fragments: list[str], path: str | None = None,
                       environ: dict[str, str] | None = None,
                       flags: dict[str, Any] | None = None) -> str:
        with self.assertRaises(ConfigError) as raised:
            loadConfig(path, environ, flags)
        message = str(raised.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)
        return message


class PrecedenceTests(ConfigTestCase):
    """
    Every value comes from the latest source that sets it, and C{describe()}
    says which.
    """

    def test_samplesCoverEverySetting(self) -> None:
        """
        The samples here name every setting, so that each of the tests below
        exercises all of them.
        """
        self.assertEqual(sorted(SAMPLES), sorted(setting.name for setting in SETTINGS))

    def test_defaults(self) -> None:
        """
        With no file, no variables and no flags, every setting has its
        default and C{describe()} says so on its own line.
        """
        config = loadConfig()
        lines = describedLines(config.describe())
        self.assertEqual(list(lines), [setting.name for setting in SETTINGS])
        for setting in SETTINGS:
            self.assertEqual(config[setting.name], setting.default, setting.name)
            self.assertEqual(config.sources[setting.name], "default")
            self.assertEqual(lines[setting.name][1], "default")

    def test_fileSetsEverySetting(self) -> None:
        """
        The TOML file sets every setting; each is reported as coming from
        the file.
        """
        path = self.writeConfig("".join(f"{name} = {toml}\n"
                                        for name, (toml, _, _) in SAMPLES.items()))
        config = loadConfig(path)
        lines = describedLines(config.describe())
        for name, (_, _, expected) in SAMPLES.items():
            self.assertEqual(config[name], expected, name)
            self.assertEqual(lines[name][1], path, name)

    def test_environmentSetsEverySetting(self) -> None:
        """
        A C{PBGW_<KEY>} variable sets every setting from its text.
        """
        environ = {envName(name): text for name, (_, text, _) in SAMPLES.items()}
        config = loadConfig(None, environ)
        lines = describedLines(config.describe())
        for name, (_, _, expected) in SAMPLES.items():
            self.assertEqual(config[name], expected, name)
            self.assertEqual(lines[name][1], f"env {envName(name)}", name)

    def test_flagsSetEverySetting(self) -> None:
        """
        A flag sets every setting; unset flags (L{None}) leave it alone.
        """
        flags = {name: expected for name, (_, _, expected) in SAMPLES.items()}
        config = loadConfig(None, {}, flags)
        lines = describedLines(config.describe())
        for name, (_, _, expected) in SAMPLES.items():
            self.assertEqual(config[name], expected, name)
            self.assertEqual(lines[name][1], f"flag --{name.replace('_', '-')}", name)
        unset = loadConfig(None, {}, {name: None for name in SAMPLES})
        self.assertEqual(set(unset.sources.values()), {"default"})

    def test_laterSourcesWin(self) -> None:
        """
        For one key set everywhere, the flag wins over the variable, the
        variable over the file, the file over the default; each of the four
        sources is reported for the keys it last set.
        """
        path = self.writeConfig(
            'call_timeout = 5\nconnect_timeout = 4\nhttp = "tcp:9000"\ndebug = true\n'
        )
        environ = {"PBGW_CALL_TIMEOUT": "7", "PBGW_CONNECT_TIMEOUT": "6",
                   "PBGW_DEBUG": "false"}
        config = loadConfig(path, environ, {"call_timeout": 9, "connect_timeout": None})
        self.assertEqual(
            (config["call_timeout"], config["connect_timeout"], config["http"],
             config["debug"], config["pb"]),
            (9.0, 6.0, "tcp:9000", False, "tcp:8800"),
        )
        lines = describedLines(config.describe())
        self.assertEqual(lines["call_timeout"], ("9.0", "flag --call-timeout"))
        self.assertEqual(lines["connect_timeout"], ("6.0", "env PBGW_CONNECT_TIMEOUT"))
        self.assertEqual(lines["debug"], ("false", "env PBGW_DEBUG"))
        self.assertEqual(lines["http"], ('"tcp:9000"', path))
        self.assertEqual(lines["pb"], ('"tcp:8800"', "default"))

    def test_otherVariablesIgnored(self) -> None:
        """
        Variables without the C{PBGW_} prefix, and C{PBGW_PASSWORD} (the
        password of C{pb-gateway call}), are not settings.
        """
        config = loadConfig(None, {"HOME": "/root", "HTTP": "tcp:1", "pbgw_http": "tcp:2",
                                   "PBGW_PASSWORD": "secret"})
        self.assertEqual(set(config.sources.values()), {"default"})

    def test_emptyTextClearsOptionalSettings(self) -> None:
        """
        An empty C{PBGW_STATIC_DIR} turns the dashboard off (L{None}), and
        C{describe()} writes it as an empty string.
        """
        config = loadConfig(None, {"PBGW_STATIC_DIR": ""})
        self.assertIsNone(config["static_dir"])
        self.assertEqual(describedLines(config.describe())["static_dir"],
                         ('""', "env PBGW_STATIC_DIR"))

    def test_describeIsTOML(self) -> None:
        """
        The description is a TOML file that, read back as the configuration
        file, gives the same values.
        """
        path = self.writeConfig("".join(f"{name} = {toml}\n"
                                        for name, (toml, _, _) in SAMPLES.items()))
        config = loadConfig(path)
        self.assertEqual(len(tomllib.loads(config.describe())), len(SETTINGS))
        again = loadConfig(self.writeConfig(config.describe()))
        self.assertEqual(dict(again.values), dict(config.values))


class ValidationTests(ConfigTestCase):
    """
    Unknown keys and bad values stop the configuration with one line naming
    the source, the key and the reason.
    """

    def test_unknownKeyInFile(self) -> None:
        """
        A key the gateway does not know is refused, with the file's path.
        """
        path = self.writeConfig('http = "tcp:1"\ncolour = "blue"\n')
        message = self.assertRejected(["unknown key 'colour'"], path)
        self.assertEqual(message, f"{path}: unknown key 'colour'")

    def test_tableInFile(self) -> None:
        """
        Settings are top-level keys: a table is an unknown key too.
        """
        path = self.writeConfig('[gateway]\nhttp = "tcp:1"\n')
        self.assertRejected([path, "unknown key 'gateway'"], path)

    def test_unknownKeyInEnvironment(self) -> None:
        """
        A misspelt C{PBGW_} variable is refused rather than ignored.
        """
        message = self.assertRejected(["unknown key 'call_timout'"], None,
                                      {"PBGW_CALL_TIMOUT": "5"})
        self.assertEqual(message, "env PBGW_CALL_TIMOUT: unknown key 'call_timout'")

    def test_unknownFlag(self) -> None:
        """
        A flag for no setting is refused.
        """
        self.assertRejected(["flag --colour", "unknown key 'colour'"], None, {},
                            {"colour": "blue"})

    def test_numbers(self) -> None:
        """
        Timeouts and sizes must be numbers: not text, not booleans; sizes
        must be whole numbers.
        """
        cases = [
            ('call_timeout = "soon"', ["call_timeout must be a float"]),
            ("call_timeout = true", ["call_timeout must be a float"]),
            ("max_body_size = 1.5", ["max_body_size must be a whole number"]),
            ('max_handles = "10"', ["max_handles must be a int"]),
            ('ping_interval = "never"', ["ping_interval must be a number >= 0"]),
        ]
        for line, fragments in cases:
            path = self.writeConfig(line + "\n")
            self.assertRejected([path + ":", *fragments], path)
        self.assertRejected(["env PBGW_CALL_TIMEOUT: call_timeout must be a number, not 'soon'"],
                            None, {"PBGW_CALL_TIMEOUT": "soon"})
        self.assertRejected(["env PBGW_MAX_BODY_SIZE: max_body_size must be a whole number"],
                            None, {"PBGW_MAX_BODY_SIZE": "1.5"})

    def test_positive(self) -> None:
        """
        Timeouts, sizes and limits must be greater than 0; the ping interval
        and timeout and the mind wait may be 0 but not negative.
        """
        for name in ["call_timeout", "session_idle_timeout", "max_body_size", "max_in_flight",
                     "sse_keepalive", "login_max_failures"]:
            for value in (0, -1):
                self.assertRejected([f"flag --{name.replace('_', '-')}: {name}",
                                     "must be greater than 0"], None, {}, {name: value})
        for name in ["ping_interval", "ping_timeout", "mind_wait"]:
            self.assertEqual(loadConfig(None, {}, {name: 0})[name], 0.0)
            self.assertRejected([name, "must be a number >= 0"], None, {}, {name: -0.5})

    def test_booleans(self) -> None:
        """
        Booleans are TOML booleans in the file, and yes/no, true/false,
        on/off or 1/0 in the environment; nothing else.
        """
        path = self.writeConfig('debug = "yes"\n')
        self.assertRejected([path, "debug must be true or false"], path)
        path = self.writeConfig("anonymous = 1\n")
        self.assertRejected([path, "anonymous must be true or false"], path)
        self.assertRejected(["env PBGW_ANONYMOUS: anonymous must be true or false"], None,
                            {"PBGW_ANONYMOUS": "maybe"})
        for text, expected in [("1", True), ("TRUE", True), ("off", False), ("No", False)]:
            self.assertIs(loadConfig(None, {"PBGW_DEBUG": text})["debug"], expected)

    def test_origins(self) -> None:
        """
        Allowed origins are a list, or a comma-separated string, of
        C{scheme://host[:port]} origins or C{*}; a path, a bare host or a
        non-string is refused.
        """
        for toml in ['["example.com"]', '["https://example.com/app"]', "5", '[1, 2]',
                     '"https://ok.example, ftp://bad.example"']:
            path = self.writeConfig(f"allowed_origins = {toml}\n")
            self.assertRejected([path, "allowed_origins"], path)
        self.assertRejected(["env PBGW_ALLOWED_ORIGINS", "'example.com' is not an origin"],
                            None, {"PBGW_ALLOWED_ORIGINS": "https://ok.example,example.com"})
        path = self.writeConfig('allowed_origins = ["*"]\n')
        self.assertEqual(loadConfig(path)["allowed_origins"], ("*",))
        self.assertEqual(loadConfig(None, {"PBGW_ALLOWED_ORIGINS": ""})["allowed_origins"], ())

    def test_logFormat(self) -> None:
        """
        The log format is C{text} or C{json}.
        """
        self.assertRejected(["trusted_proxies", "'proxy.internal' is not an address"], None, {},
                            {"trusted_proxies": "10.0.0.1, proxy.internal"})
        self.assertRejected(['log_format must be "text" or "json"'], None, {},
                            {"log_format": "xml"})
        self.assertRejected(["env PBGW_LOG_FORMAT", "log_format"], None,
                            {"PBGW_LOG_FORMAT": "JSON"})

    def test_gatewayName(self) -> None:
        """
        A gateway name is 1-32 lowercase letters and digits, since it is
        the prefix that routes a token (C{NAME-...}).
        """
        for bad in ["", "GW1", "gw-1", "gw_1", "g" * 33]:
            self.assertRejected(["gateway_name must be 1-32 lowercase letters and digits"],
                                None, {"PBGW_GATEWAY_NAME": bad})
        path = self.writeConfig("gateway_name = 1\n")
        self.assertRejected([path, "gateway_name"], path)

    def test_strings(self) -> None:
        """
        Endpoints must be non-empty strings; method names must be names.
        """
        path = self.writeConfig("http = 8080\n")
        self.assertRejected([path, "http must be a non-empty string"], path)
        self.assertRejected(["flag --broker: broker must be a non-empty string"], None, {},
                            {"broker": ""})
        self.assertRejected(["mind_notifications must be a list of method names"], None,
                            {"PBGW_MIND_NOTIFICATIONS": "receive, not a name"})

    def test_unreadableFile(self) -> None:
        """
        A missing file, or a folder, is refused with the path and the
        system's reason.
        """
        missing = os.path.abspath(self.mktemp())
        message = self.assertRejected([], missing)
        self.assertEqual(message, f"cannot read {missing}: No such file or directory")
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        self.assertRejected([f"cannot read {folder}: Is a directory"], folder)

    def test_invalidTOML(self) -> None:
        """
        A file that is not TOML is refused with the parser's reason.
        """
        path = self.writeConfig('http = "tcp:8080\n')
        self.assertRejected([f"{path}: not valid TOML:", "line 1"], path)

    def test_defaultsPassTheirChecks(self) -> None:
        """
        Every default is a value its own check accepts unchanged, so that a
        default written back (C{config --print}) is valid.
        """
        for setting in SETTINGS:
            self.assertEqual(setting.check(setting.default), setting.default, setting.name)

    def test_firstBadSourceWins(self) -> None:
        """
        A bad file is reported even when a flag would override the key:
        every source is checked.
        """
        path = self.writeConfig("call_timeout = -1\n")
        self.assertRejected([path, "call_timeout must be greater than 0"], path, {},
                            {"call_timeout": 5})


class GatewayOptionsTests(ConfigTestCase):
    """
    L{Config.gatewayOptions} hands every gateway setting to the gateway.
    """

    def test_everyFieldMapped(self) -> None:
        """
        Every field of L{GatewayOptions} comes from its setting: with every
        setting away from its default, each field has the setting's value.
        """
        fields = [field.name for field in attrs.fields(GatewayOptions)]
        self.assertEqual(sorted(fields), sorted(OPTION_FIELDS))
        flags = {name: expected for name, (_, _, expected) in SAMPLES.items()}
        options = loadConfig(None, {}, flags).gatewayOptions()
        defaults = GatewayOptions()
        for field, name in OPTION_FIELDS.items():
            self.assertEqual(getattr(options, field), SAMPLES[name][2], field)
            self.assertNotEqual(getattr(options, field), getattr(defaults, field), field)

    def test_defaults(self) -> None:
        """
        The default configuration gives the default options.
        """
        self.assertEqual(loadConfig().gatewayOptions(), GatewayOptions())

    def test_brokerOverride(self) -> None:
        """
        C{serve} passes the address of the broker it started, which wins
        over the configured one.
        """
        config = loadConfig(None, {"PBGW_BROKER": "tcp:host=elsewhere:port=1"})
        self.assertEqual(config.gatewayOptions().broker, "tcp:host=elsewhere:port=1")
        self.assertEqual(config.gatewayOptions("tcp:host=127.0.0.1:port=2").broker,
                         "tcp:host=127.0.0.1:port=2")


class DocumentationTests(SynchronousTestCase):
    """
    C{docs/configuration.md} describes the settings there are.
    """

    def setUp(self) -> None:
        with open(DOCUMENT, encoding="utf-8") as f:
            self.document = f.read()

    def test_everySettingInTheTable(self) -> None:
        """
        The settings table has one row per setting, with its environment
        variable and its flag, in the order C{config --print} uses.
        """
        rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| `(PBGW_[A-Z_]+)` \| `(--[a-z-]+)`",
                          self.document, re.MULTILINE)
        self.assertEqual(rows, [(s.name, envName(s.name), "--" + s.name.replace("_", "-"))
                                for s in SETTINGS])

    def test_printExample(self) -> None:
        """
        The C{config --print} example is what the command prints for the
        file, variables and flags it shows.
        """
        toml = re.search(r"```toml\n(.*?)```", self.document, re.DOTALL)
        example = re.search(r"```console\n\$ (.*?) pb-gateway (config --print .*?)\n(.*?)```",
                            self.document, re.DOTALL)
        assert toml is not None and example is not None
        with open("pbgw.toml", "w", encoding="utf-8") as f:
            f.write(toml.group(1))
        environ = dict(part.split("=", 1) for part in shlex.split(example.group(1)))
        args = _parser().parse_args(shlex.split(example.group(2)))
        flags = {s.name: getattr(args, s.name) for s in SETTINGS}
        config = loadConfig(args.config, environ, flags)
        self.assertEqual(config.describe(), example.group(3))
