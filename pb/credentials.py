"""
Password logins for the PB broker: the user file, the credential interface that PB's
challenge/response login provides, and the checkers a portal uses to verify it.

Why the user file holds MD5 digests.  PB's password login never sends the password: the
server sends a random challenge and the client answers ``md5(md5(password) + challenge)``.
To check that answer the server needs ``md5(password)`` — or the plaintext, from which it
would compute it, which is what Twisted's stock checkers keep.  We store only the unsalted MD5
digest, the least the PB challenge lets a server keep.  Be clear about what that buys.  The
digest is password-equivalent *for PB login*: whoever reads it can answer any challenge
without knowing the password, so the user file must be as private as a password file (mode
0600; L{UserFile.save} writes it that way and L{UserFile.checkPermissions} warns otherwise).
It does not reveal the plaintext, so a stolen file does not directly hand out passwords that
users may have reused elsewhere.  But an unsalted MD5 is fast to compute and the same for
everyone with the same password, so weak or common passwords are recovered from it quickly
with dictionaries or precomputed tables; it protects strong passwords only.  A future
extension of the login protocol could let the server store a salted, slow KDF (scrypt,
argon2) instead; the classic PB challenge cannot.

File format: UTF-8 text, one ``username:md5:<32 hex digits>`` per line; blank lines and lines
starting with ``#`` are ignored (and not preserved by L{UserFile.save}).
"""

from __future__ import annotations

import abc
import contextlib
import hmac
import os
import re
import secrets
import stat
import tempfile
import unicodedata
from collections.abc import Mapping
from hashlib import md5
from types import MappingProxyType
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Attribute, implementer

__all__ = [
    "FilePasswordChecker",
    "IUsernameMD5Password",
    "InMemoryMD5Checker",
    "UserFile",
    "UserFileError",
    "md5Digest",
]

_StrPath = str | os.PathLike[str]

_SCHEME = "md5"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}")
_DIGEST_SIZE = 16
_FILE_MODE = 0o600
_FILE_HEADER = (
    "# pb-gateway PB users: one 'username:md5:<hex MD5 of the password>' per line.\n"
    "# The digest is enough to log in over PB: keep this file private (mode 0600).\n"
)


class IUsernameMD5Password(ICredentials):
    """
    A username with a proof of the password that can be checked against either the
    plaintext or its MD5 digest; PB's challenge/response login provides this.

    Same meaning as Twisted's C{twisted.spread.pb.IUsernameMD5Password}.
    """

    username = Attribute("The user name, L{bytes} (UTF-8) or L{str}.")

    def checkPassword(password: bytes) -> bool:
        """
        Whether these credentials match the plaintext C{password}.
        """

    def checkMD5Password(md5Password: bytes) -> bool:
        """
        Whether these credentials match the password whose raw MD5 digest is C{md5Password}.
        """


def md5Digest(password: str | bytes) -> bytes:
    """
    The raw 16-byte MD5 digest of C{password}; a L{str} is encoded as UTF-8 first.
    """
    if isinstance(password, str):
        password = password.encode("utf-8")
    return md5(password).digest()


class UserFileError(Exception):
    """
    A user file cannot be read, parsed or written, or a change to it is invalid.

    C{path} and C{lineNumber} say where, when known; the message includes them.
    """

    def __init__(self, message: str, path: str | None = None, lineNumber: int | None = None):
        if path is not None and lineNumber is not None:
            message = f"{path}, line {lineNumber}: {message}"
        elif path is not None:
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path
        self.lineNumber = lineNumber


def _usernameProblem(username: str) -> str | None:
    """
    Why C{username} cannot be stored in a user file, or L{None} if it can.
    """
    if not username:
        return "user name is empty"
    if username.startswith("#"):
        # It would be read back as a comment.
        return f"user name {username!r} starts with '#'"
    for char in username:
        if char == ":":
            return f"user name {username!r} contains ':'"
        if char.isspace():
            return f"user name {username!r} contains whitespace"
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return f"user name {username!r} contains a control character"
    return None


def _validateUsers(
    instance: UserFile, attribute: attrs.Attribute[Mapping[str, bytes]], users: Mapping[str, bytes]
) -> None:
    for name, digest in users.items():
        problem = _usernameProblem(name)
        if problem is not None:
            raise UserFileError(problem)
        if len(digest) != _DIGEST_SIZE:
            raise UserFileError(f"digest for user {name!r} is not {_DIGEST_SIZE} bytes")


def _readOnlyUsers(users: Mapping[str, bytes]) -> Mapping[str, bytes]:
    return MappingProxyType(dict(users))


def _parseUsers(text: str, path: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    firstSeen: dict[str, int] = {}
    # Not splitlines(): it also splits on characters like U+2028 and would skew line numbers.
    for lineNumber, rawLine in enumerate(text.split("\n"), 1):
        line = rawLine.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 3:
            raise UserFileError(
                f"expected 'username:{_SCHEME}:<32 hex digits>', got {len(fields)} "
                "':'-separated fields",
                path,
                lineNumber,
            )
        name, scheme, hexDigest = fields
        problem = _usernameProblem(name)
        if problem is not None:
            raise UserFileError(problem, path, lineNumber)
        if scheme != _SCHEME:
            raise UserFileError(
                f"unsupported password scheme {scheme!r} for user {name!r} "
                f"(only {_SCHEME!r} is supported)",
                path,
                lineNumber,
            )
        if not _HEX_DIGEST.fullmatch(hexDigest):
            raise UserFileError(
                f"password digest for user {name!r} is not 32 hex digits", path, lineNumber
            )
        if name in users:
            raise UserFileError(
                f"duplicate user {name!r} (first defined on line {firstSeen[name]})",
                path,
                lineNumber,
            )
        users[name] = bytes.fromhex(hexDigest)
        firstSeen[name] = lineNumber
    return users


def _fsyncDirectory(directory: str) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@attrs.frozen
class UserFile:
    """
    The users of a user file: a read-only mapping of user name to the raw MD5 digest of
    the password.  Immutable: L{add} and L{remove} return a new L{UserFile}; L{save} writes
    one.  C{UserFile()} is the empty file, to start one from scratch.
    """

    users: Mapping[str, bytes] = attrs.field(
        factory=dict, converter=_readOnlyUsers, validator=_validateUsers
    )

    @classmethod
    def load(cls, path: _StrPath) -> UserFile:
        """
        Read and parse the user file at C{path}.

        @raise UserFileError: if it is missing, unreadable, not UTF-8 or has a bad line.
        """
        where = os.fspath(path)
        try:
            with open(where, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UserFileError(f"cannot read user file: {e.strerror}", where) from e
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            lineNumber = data.count(b"\n", 0, e.start) + 1
            raise UserFileError("not valid UTF-8", where, lineNumber) from e
        return cls(_parseUsers(text, where))

    def names(self) -> list[str]:
        """
        The user names, sorted.
        """
        return sorted(self.users)

    def add(self, username: str, password: str | bytes) -> UserFile:
        """
        A copy with C{username} added, or its password replaced if it exists.  Only the MD5
        digest of C{password} is kept.

        @raise UserFileError: if C{username} cannot be stored in a user file.
        """
        problem = _usernameProblem(username)
        if problem is not None:
            raise UserFileError(problem)
        return UserFile({**self.users, username: md5Digest(password)})

    def remove(self, username: str) -> UserFile:
        """
        A copy without C{username}.

        @raise UserFileError: if there is no such user.
        """
        if username not in self.users:
            raise UserFileError(f"no such user {username!r}")
        return UserFile({name: d for name, d in self.users.items() if name != username})

    def save(self, path: _StrPath) -> None:
        """
        Write the users to C{path} atomically, with mode 0600: readers see the old file or
        the new one, never a mix, and the file is never readable by others, even briefly.

        @raise UserFileError: if it cannot be written; C{path} is then unchanged.
        """
        target = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(target))
        lines = [f"{name}:{_SCHEME}:{self.users[name].hex()}\n" for name in self.names()]
        data = (_FILE_HEADER + "".join(lines)).encode("utf-8")
        try:
            fd, temporary = tempfile.mkstemp(
                prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
            )
        except OSError as e:
            raise UserFileError(f"cannot write user file: {e.strerror}", target) from e
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), _FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(e, OSError):
                raise UserFileError(f"cannot write user file: {e.strerror}", target) from e
            raise
        _fsyncDirectory(directory)

    @staticmethod
    def checkPermissions(path: _StrPath) -> str | None:
        """
        A warning if group or others have any access to the user file at C{path} (its
        digests are enough to log in over PB), or L{None} if it is private.

        @raise UserFileError: if C{path} cannot be examined.
        """
        where = os.fspath(path)
        try:
            mode = stat.S_IMODE(os.stat(where).st_mode)
        except OSError as e:
            raise UserFileError(f"cannot examine user file: {e.strerror}", where) from e
        if mode & 0o077:
            return (
                f"{where}: user file has mode {mode:04o}, so group or others can access it; "
                "its digests are enough to log in over PB. Run: chmod 600 "
                f"{where}"
            )
        return None


def _usernameText(username: object) -> str | None:
    """
    A credential's user name as text, or L{None} if it is neither text nor UTF-8 bytes.
    """
    if isinstance(username, bytes):
        try:
            return username.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(username, str):
        return username
    return None


def _matchesDigest(credentials: Any, digest: bytes) -> bool | Deferred[bool]:
    """
    Whether C{credentials} prove knowledge of the password whose MD5 digest is C{digest}.
    """
    if IUsernameMD5Password.providedBy(credentials):
        result: bool | Deferred[bool] = credentials.checkMD5Password(digest)
        return result
    if IUsernamePassword.providedBy(credentials):
        password = credentials.password
        if not isinstance(password, (str, bytes)):
            return False
        return hmac.compare_digest(md5Digest(password), digest)
    # A bare IUsernameHashedPassword wants the plaintext, which we do not have.
    return False


@implementer(ICredentialsChecker)
class _MD5DigestChecker(abc.ABC):
    """
    Check credentials against a mapping of user name to password MD5 digest, supplied by
    L{_currentUsers}.  Succeeds with the user name as UTF-8 L{bytes}, the avatar ID Twisted's
    realms expect; fails with L{UnauthorizedLogin} alike for an unknown user and a wrong
    password, so that a client cannot tell which names exist.
    """

    credentialInterfaces = (IUsernameMD5Password, IUsernameHashedPassword, IUsernamePassword)

    # An unknown user is checked against this, so that it costs the same as a wrong password.
    _decoyDigest = md5Digest(secrets.token_bytes(16))

    @abc.abstractmethod
    def _currentUsers(self) -> Mapping[str, bytes]:
        """
        The users to check against: name to MD5 digest.
        """

    def requestAvatarId(self, credentials: object) -> Deferred[bytes | tuple[()]]:
        """
        The user name in C{credentials}, as UTF-8 L{bytes}, if they prove its password.
        """
        return Deferred.fromCoroutine(self._avatarId(credentials))

    async def _avatarId(self, credentials: object) -> bytes | tuple[()]:
        username = _usernameText(getattr(credentials, "username", None))
        digest = self._currentUsers().get(username) if username is not None else None
        matched = _matchesDigest(credentials, self._decoyDigest if digest is None else digest)
        if isinstance(matched, Deferred):
            matched = await matched
        if matched and username is not None and digest is not None:
            return username.encode("utf-8")
        raise UnauthorizedLogin()


class InMemoryMD5Checker(_MD5DigestChecker):
    """
    A credentials checker over an in-memory mapping of user name to password MD5 digest;
    for tests and examples.
    """

    def __init__(self, users: Mapping[str, bytes] | None = None) -> None:
        self.users: dict[str, bytes] = dict(users or {})

    def addUser(self, username: str | bytes, password: str | bytes) -> None:
        """
        Add C{username} (L{str}, or UTF-8 L{bytes}), or replace its password; only the MD5
        digest of C{password} is kept.
        """
        if isinstance(username, bytes):
            username = username.decode("utf-8")
        self.users[username] = md5Digest(password)

    def _currentUsers(self) -> Mapping[str, bytes]:
        return self.users


def _fileIdentity(path: str) -> tuple[int, int, int, int] | None:
    """
    What changes when the file at C{path} is rewritten or replaced, or L{None} if it cannot
    be examined.  The inode catches an atomic replace within one mtime tick.
    """
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class FilePasswordChecker(_MD5DigestChecker):
    """
    A credentials checker over a user file, reloaded when the file changes, so that users
    added or removed take effect on a running broker.  If the changed file cannot be read
    or parsed, the last good users stay in force and an error is logged (once per change).
    """

    log = Logger()

    def __init__(self, path: _StrPath) -> None:
        """
        Load the user file at C{path}.

        @raise UserFileError: if it cannot be loaded; a broker should not start without it.
        """
        self.path = os.fspath(path)
        # Examined before loading, so that a change made while loading triggers a reload.
        self._identity = _fileIdentity(self.path)
        self._users = UserFile.load(self.path).users
        warning = UserFile.checkPermissions(self.path)
        if warning is not None:
            self.log.warn("{problem}", problem=warning)

    def _currentUsers(self) -> Mapping[str, bytes]:
        identity = _fileIdentity(self.path)
        if identity != self._identity:
            self._identity = identity
            try:
                self._users = UserFile.load(self.path).users
            except UserFileError as e:
                self.log.error(
                    "Cannot reload user file {path}, keeping the last good users: {error}",
                    path=self.path,
                    error=str(e),
                )
            else:
                self.log.info(
                    "Reloaded {count} users from {path}", count=len(self._users), path=self.path
                )
        return self._users
