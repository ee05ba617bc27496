"""
Tests for L{pb.credentials}: the MD5 user file, and the checkers that verify PB's
challenge/response login and plaintext passwords against it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from hashlib import md5
from typing import cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    ICredentials,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.spread.pb import challenge as pbChallenge
from twisted.spread.pb import respond as pbRespond
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.verify import verifyObject

from pb.credentials import (
    FilePasswordChecker,
    InMemoryMD5Checker,
    IUsernameMD5Password,
    UserFile,
    UserFileError,
    md5Digest,
)

# Passwords distinctive enough that finding them in a file cannot be a coincidence.
ALICE_PASSWORD = "alice-Secret-0x5eed"
BOB_PASSWORD = "bob-Secret-0xfeed"


def useTemporaryWorkingDirectory(testCase: SynchronousTestCase) -> None:
    """
    Run C{testCase} in a fresh directory, so that C{mktemp} paths (relative to the working
    directory) do not litter the checkout when the tests run under plain pytest.
    """
    previous = os.getcwd()
    directory = tempfile.mkdtemp(prefix="test_credentials.")
    os.chdir(directory)
    testCase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    testCase.addCleanup(os.chdir, previous)


@implementer(IUsernameMD5Password)
class ChallengeResponse:
    """
    The server's side of a PB password login: the challenge it sent and the client's
    response, checked the way PB checks them.
    """

    def __init__(self, username: str | bytes, challenge: bytes, response: bytes) -> None:
        self.username = username
        self.challenge = challenge
        self.response = response

    @classmethod
    def fromClient(cls, username: str | bytes, password: bytes) -> ChallengeResponse:
        """
        A login where the client answered a fresh challenge, computed by Twisted's own PB
        client code, so the test does not grade its own homework.
        """
        challenge = pbChallenge()
        return cls(username, challenge, pbRespond(challenge, password))

    def checkPassword(self, password: bytes) -> bool:
        return self.checkMD5Password(md5(password).digest())

    def checkMD5Password(self, md5Password: bytes) -> bool:
        return md5(md5Password + self.challenge).digest() == self.response


@implementer(IUsernameHashedPassword)
class HashedOnly:
    """
    A credential that, like HTTP digest, can only be checked against the plaintext.
    """

    def __init__(self, username: bytes, password: bytes) -> None:
        self.username = username
        self.password = password

    def checkPassword(self, password: bytes) -> bool:
        return password == self.password


class MD5DigestTests(SynchronousTestCase):
    """
    Tests for L{md5Digest}.
    """

    def test_rawDigestOfUTF8(self) -> None:
        """
        The digest is the raw 16-byte MD5 of the password, a L{str} encoded as UTF-8 first.
        """
        self.assertEqual(md5Digest(b"p\xc3\xa4ss"), md5(b"p\xc3\xa4ss").digest())
        self.assertEqual(md5Digest("päss"), md5Digest("päss".encode()))
        self.assertEqual(len(md5Digest("")), 16)

    def test_isWhatThePBChallengeNeeds(self) -> None:
        """
        Knowing only the digest is enough to verify the response Twisted's PB client sends.
        """
        challenge = pbChallenge()
        self.assertEqual(
            md5(md5Digest(ALICE_PASSWORD) + challenge).digest(),
            pbRespond(challenge, ALICE_PASSWORD.encode()),
        )


class UserFileTests(SynchronousTestCase):
    """
    Tests for L{UserFile}: editing, saving and loading.
    """

    def setUp(self) -> None:
        useTemporaryWorkingDirectory(self)

    def test_roundTrip(self) -> None:
        """
        Users added and saved are loaded back with the same digests, names sorted.
        """
        path = self.mktemp()
        original = UserFile().add("bob", BOB_PASSWORD).add("älice", ALICE_PASSWORD)
        original.save(path)
        loaded = UserFile.load(path)
        self.assertEqual(loaded, original)
        self.assertEqual(loaded.names(), ["bob", "älice"])
        self.assertEqual(loaded.users["älice"], md5Digest(ALICE_PASSWORD))

    def test_addIsFunctional(self) -> None:
        """
        C{add} returns a new L{UserFile} and leaves the original as it was; adding an
        existing user replaces its password.
        """
        empty = UserFile()
        once = empty.add("alice", "old")
        twice = once.add("alice", ALICE_PASSWORD)
        self.assertEqual(empty.names(), [])
        self.assertEqual(once.users["alice"], md5Digest("old"))
        self.assertEqual(twice.users["alice"], md5Digest(ALICE_PASSWORD))
        self.assertEqual(twice.names(), ["alice"])

    def test_usersAreReadOnly(self) -> None:
        """
        The C{users} mapping cannot be changed behind the file's back.
        """
        users = UserFile().add("alice", ALICE_PASSWORD).users
        with self.assertRaises(TypeError):
            users["mallory"] = md5Digest("x")  # type: ignore[index]

    def test_addRejectsNamesTheFileCannotHold(self) -> None:
        """
        C{add} refuses names that could not be read back: empty, with ':', whitespace or
        control characters, or starting with the comment marker.
        """
        for name in ["", "a:b", "a b", "a\tb", "a\x00b", "a\x7fb", "#alice", "a\u200bb"]:
            with self.assertRaises(UserFileError, msg=repr(name)):
                UserFile().add(name, "pw")

    def test_remove(self) -> None:
        """
        C{remove} returns a copy without the user.
        """
        users = UserFile().add("alice", ALICE_PASSWORD).add("bob", BOB_PASSWORD)
        self.assertEqual(users.remove("alice").names(), ["bob"])
        self.assertEqual(users.names(), ["alice", "bob"])

    def test_removeUnknown(self) -> None:
        """
        Removing a user that does not exist is an error naming the user.
        """
        error = self.assertRaises(UserFileError, UserFile().add("alice", "pw").remove, "bob")
        self.assertIn("'bob'", str(error))

    def test_noPlaintextInFile(self) -> None:
        """
        The saved file holds the digest in hex and nowhere the password, in any encoding.
        """
        path = self.mktemp()
        UserFile().add("alice", ALICE_PASSWORD).add("bob", BOB_PASSWORD.encode()).save(path)
        with open(path, "rb") as f:
            content = f.read()
        for password in [ALICE_PASSWORD, BOB_PASSWORD]:
            self.assertNotIn(password.encode("utf-8"), content)
            self.assertNotIn(password.encode("utf-16-le"), content)
            self.assertIn(md5Digest(password).hex().encode(), content)

    def test_savedFileIsPrivate(self) -> None:
        """
        The saved file has mode 0600, also when it replaces a file readable by others.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("")
        os.chmod(path, 0o644)
        UserFile().add("alice", ALICE_PASSWORD).save(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_saveLeavesNoTemporaryFiles(self) -> None:
        """
        Saving, repeatedly, leaves only the user file in its directory.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "users.txt")
        UserFile().add("alice", ALICE_PASSWORD).save(path)
        UserFile().add("bob", BOB_PASSWORD).save(path)
        self.assertEqual(os.listdir(directory), ["users.txt"])
        self.assertEqual(UserFile.load(path).names(), ["bob"])

    def test_failedSaveLeavesNoTemporaryFiles(self) -> None:
        """
        A save that cannot replace its target raises L{UserFileError}, leaves the target
        as it was and cleans up its temporary file.
        """
        directory = self.mktemp()
        target = os.path.join(directory, "users.txt")
        os.makedirs(target)  # a directory cannot be replaced by a file
        error = self.assertRaises(UserFileError, UserFile().add("alice", "pw").save, target)
        self.assertIn(target, str(error))
        self.assertEqual(os.listdir(directory), ["users.txt"])
        self.assertTrue(os.path.isdir(target))

    def test_commentsAndBlankLines(self) -> None:
        """
        Blank lines, C{#} comments and surrounding whitespace are ignored; hex may be
        upper case.
        """
        path = self.mktemp()
        digest = md5Digest(ALICE_PASSWORD).hex().upper()
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# users\n\n   \n  alice:md5:{digest}  \r\n# bob:md5:nothex\n")
        self.assertEqual(UserFile.load(path).users, {"alice": md5Digest(ALICE_PASSWORD)})

    def test_loadMissing(self) -> None:
        """
        Loading a file that does not exist is a L{UserFileError} naming the file.
        """
        path = self.mktemp()
        error = self.assertRaises(UserFileError, UserFile.load, path)
        self.assertEqual(error.path, path)
        self.assertIn(path, str(error))

    def assertParseError(self, lines: list[str], lineNumber: int, fragment: str) -> None:
        """
        Loading a file of C{lines} fails with a L{UserFileError} that names the file and
        C{lineNumber} and says C{fragment}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write("\n".join(lines).encode("utf-8", "surrogateescape"))
        error = self.assertRaises(UserFileError, UserFile.load, path)
        self.assertEqual((error.path, error.lineNumber), (path, lineNumber))
        self.assertIn(f"{path}, line {lineNumber}:", str(error))
        self.assertIn(fragment, str(error))

    def test_parseErrorDuplicateUser(self) -> None:
        """
        A user defined twice is reported at the second definition, citing the first.
        """
        good = f"alice:md5:{md5Digest('a').hex()}"
        self.assertParseError(["# users", good, "", good], 4, "duplicate user 'alice'")
        self.assertParseError([good, "", good], 3, "first defined on line 1")

    def test_parseErrorBadScheme(self) -> None:
        """
        A scheme other than C{md5} (a plaintext password, say) is reported.
        """
        self.assertParseError(
            ["", f"alice:plain:{'0' * 32}"], 2, "unsupported password scheme 'plain'"
        )

    def test_parseErrorBadHex(self) -> None:
        """
        A digest that is not exactly 32 hex digits is reported.
        """
        for digest in ["0" * 31, "0" * 33, "g" * 32, "0" * 30 + " 0", ""]:
            self.assertParseError([f"alice:md5:{digest}"], 1, "not 32 hex digits")

    def test_parseErrorBadName(self) -> None:
        """
        An empty user name, or one with whitespace or control characters, is reported.
        """
        digest = "0" * 32
        self.assertParseError([f":md5:{digest}"], 1, "user name is empty")
        self.assertParseError(["#ok", f"al ice:md5:{digest}"], 2, "whitespace")
        self.assertParseError([f"al\x01ice:md5:{digest}"], 1, "control character")

    def test_parseErrorFieldCount(self) -> None:
        """
        A line without exactly three C{:}-separated fields is reported.
        """
        self.assertParseError(["alice"], 1, "expected 'username:md5:<32 hex digits>'")
        self.assertParseError([f"a:b:md5:{'0' * 32}"], 1, "got 4")

    def test_parseErrorNotUTF8(self) -> None:
        """
        Bytes that are not UTF-8 are reported with their line.
        """
        self.assertParseError(["# ok", "al\udcffice:md5:" + "0" * 32], 2, "not valid UTF-8")

    @given(names=st.sets(st.text(min_size=1, max_size=12), max_size=5))
    def test_anyValidNameRoundTrips(self, names: set[str]) -> None:
        """
        Every name C{add} accepts is read back unchanged from a saved file.
        """
        users = UserFile()
        for name in names:
            try:
                users = users.add(name, name)
            except UserFileError:
                continue
        path = os.path.join(tempfile.mkdtemp(), "users")
        try:
            users.save(path)
            self.assertEqual(UserFile.load(path), users)
        finally:
            shutil.rmtree(os.path.dirname(path))

    def test_checkPermissionsWarnsWhenOthersCanRead(self) -> None:
        """
        A user file readable by group or others gets a warning naming the file and its
        mode; a private one gets none.
        """
        path = self.mktemp()
        UserFile().add("alice", ALICE_PASSWORD).save(path)
        self.assertIsNone(UserFile.checkPermissions(path))
        os.chmod(path, 0o644)
        warning = UserFile.checkPermissions(path)
        assert warning is not None
        self.assertIn(path, warning)
        self.assertIn("0644", warning)
        os.chmod(path, 0o640)
        self.assertIsNotNone(UserFile.checkPermissions(path))


class CheckerTestsMixin:
    """
    Behaviour common to every MD5 checker; C{makeChecker} builds one knowing alice (with
    L{ALICE_PASSWORD}) and bob (with L{BOB_PASSWORD}).
    """

    def makeChecker(self) -> InMemoryMD5Checker | FilePasswordChecker:
        """
        The checker under test; each test class says which.
        """
        raise TypeError(f"{type(self).__name__} must define makeChecker")

    def assertAvatarId(self, credentials: object, avatarId: bytes) -> None:
        """
        The checker accepts C{credentials} as C{avatarId}.
        """
        assert isinstance(self, SynchronousTestCase)
        result = self.successResultOf(self.makeChecker().requestAvatarId(credentials))
        self.assertEqual(result, avatarId)
        self.assertIsInstance(result, bytes)

    def assertUnauthorized(self, credentials: object) -> None:
        """
        The checker rejects C{credentials} with L{UnauthorizedLogin}.
        """
        assert isinstance(self, SynchronousTestCase)
        failure = self.failureResultOf(
            self.makeChecker().requestAvatarId(credentials), UnauthorizedLogin
        )
        self.assertIs(failure.type, UnauthorizedLogin)

    def test_providesInterface(self) -> None:
        """
        The checker is an L{ICredentialsChecker} for MD5, hashed and plaintext credentials.
        """
        assert isinstance(self, SynchronousTestCase)
        checker = self.makeChecker()
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertIn(IUsernameMD5Password, checker.credentialInterfaces)
        self.assertIn(IUsernamePassword, checker.credentialInterfaces)

    def test_plaintextPasswordBytes(self) -> None:
        """
        A right plaintext password, as bytes, logs in; the avatar ID is the UTF-8 name.
        """
        self.assertAvatarId(UsernamePassword(b"alice", ALICE_PASSWORD.encode()), b"alice")

    def test_plaintextPasswordStr(self) -> None:
        """
        User name and password may be L{str} as well as L{bytes}.
        """
        self.assertAvatarId(UsernamePassword("alice", ALICE_PASSWORD), b"alice")  # type: ignore[arg-type]
        self.assertAvatarId(UsernamePassword("bob", BOB_PASSWORD.encode()), b"bob")  # type: ignore[arg-type]

    def test_challengeResponse(self) -> None:
        """
        A PB challenge answered with the right password logs in.
        """
        self.assertAvatarId(ChallengeResponse.fromClient(b"bob", BOB_PASSWORD.encode()), b"bob")
        self.assertAvatarId(
            ChallengeResponse.fromClient("alice", ALICE_PASSWORD.encode()), b"alice"
        )

    def test_challengeResponseWrongPassword(self) -> None:
        """
        A PB challenge answered with another user's password is rejected.
        """
        self.assertUnauthorized(ChallengeResponse.fromClient(b"alice", BOB_PASSWORD.encode()))

    def test_wrongPassword(self) -> None:
        """
        A wrong plaintext password is rejected with L{UnauthorizedLogin}.
        """
        self.assertUnauthorized(UsernamePassword(b"alice", b"guess"))
        self.assertUnauthorized(UsernamePassword(b"alice", b""))

    def test_unknownUser(self) -> None:
        """
        An unknown user is rejected with the same L{UnauthorizedLogin} as a wrong password,
        so that names cannot be enumerated.
        """
        self.assertUnauthorized(UsernamePassword(b"mallory", ALICE_PASSWORD.encode()))
        self.assertUnauthorized(ChallengeResponse.fromClient(b"mallory", b"anything"))

    def test_unknownUserWithDecoyDigest(self) -> None:
        """
        An unknown user is rejected even if the credential accepts any digest.
        """
        credentials = ChallengeResponse(b"mallory", b"", b"")
        credentials.checkMD5Password = lambda md5Password: True  # type: ignore[method-assign]
        self.assertUnauthorized(credentials)

    def test_hashedPasswordAloneRejected(self) -> None:
        """
        A credential that can only be checked against the plaintext is rejected, even
        with the right password: there is no plaintext to check it against.
        """
        self.assertUnauthorized(HashedOnly(b"alice", ALICE_PASSWORD.encode()))

    def test_usernameNotUTF8(self) -> None:
        """
        A user name that is not UTF-8 is rejected, not an internal error.
        """
        self.assertUnauthorized(UsernamePassword(b"\xffalice", ALICE_PASSWORD.encode()))

    def test_portalLogin(self) -> None:
        """
        Through a L{Portal}, the realm gets the avatar ID as bytes, as Twisted's realms
        expect.
        """
        assert isinstance(self, SynchronousTestCase)
        requested: list[bytes] = []

        @implementer(IRealm)
        class Realm:
            def requestAvatar(
                self, avatarId: bytes, mind: object, *interfaces: type[Interface]
            ) -> tuple[type[Interface], object, object]:
                requested.append(avatarId)
                return interfaces[0], avatarId.decode(), lambda: None

        portal = Portal(cast(IRealm, Realm()), [cast(ICredentialsChecker, self.makeChecker())])
        login = portal.login(
            cast(ICredentials, ChallengeResponse.fromClient(b"alice", ALICE_PASSWORD.encode())),
            None,
            Interface,
        )
        self.assertEqual(self.successResultOf(login)[1], "alice")
        self.assertEqual(requested, [b"alice"])


class InMemoryMD5CheckerTests(CheckerTestsMixin, SynchronousTestCase):
    """
    Tests for L{InMemoryMD5Checker}.
    """

    def makeChecker(self) -> InMemoryMD5Checker:
        checker = InMemoryMD5Checker({"alice": md5Digest(ALICE_PASSWORD)})
        checker.addUser(b"bob", BOB_PASSWORD.encode())
        return checker

    def test_addUserStoresOnlyDigest(self) -> None:
        """
        C{addUser} keeps the digest, not the password, under a L{str} name.
        """
        checker = InMemoryMD5Checker()
        checker.addUser("älice".encode(), ALICE_PASSWORD)
        self.assertEqual(checker.users, {"älice": md5Digest(ALICE_PASSWORD)})


class FilePasswordCheckerTests(CheckerTestsMixin, SynchronousTestCase):
    """
    Tests for L{FilePasswordChecker}.
    """

    def setUp(self) -> None:
        useTemporaryWorkingDirectory(self)
        self.path = self.mktemp()
        UserFile().add("alice", ALICE_PASSWORD).add("bob", BOB_PASSWORD).save(self.path)

    def makeChecker(self) -> FilePasswordChecker:
        return FilePasswordChecker(self.path)

    def loginSucceeds(self, checker: FilePasswordChecker, name: str, password: str) -> bool:
        """
        Whether C{checker} lets C{name} log in with C{password}.
        """
        login = checker.requestAvatarId(UsernamePassword(name.encode(), password.encode()))
        results: list[object] = []
        login.addBoth(results.append)
        if isinstance(results[0], Failure):
            results[0].trap(UnauthorizedLogin)
            return False
        self.assertEqual(results, [name.encode()])
        return True

    def writeFile(self, content: str) -> None:
        """
        Overwrite the user file in place, and make sure its change is visible even on file
        systems with a coarse modification time.
        """
        before = os.stat(self.path)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(content)
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))

    def test_missingFile(self) -> None:
        """
        A checker cannot be made for a missing user file: the broker should not start.
        """
        self.assertRaises(UserFileError, FilePasswordChecker, self.mktemp())

    def test_reloadAfterChange(self) -> None:
        """
        Users added and removed in the file take effect on a running checker.
        """
        checker = self.makeChecker()
        self.assertFalse(self.loginSucceeds(checker, "carol", "carol-pw"))
        UserFile.load(self.path).add("carol", "carol-pw").remove("bob").save(self.path)
        self.assertTrue(self.loginSucceeds(checker, "carol", "carol-pw"))
        self.assertFalse(self.loginSucceeds(checker, "bob", BOB_PASSWORD))
        self.assertTrue(self.loginSucceeds(checker, "alice", ALICE_PASSWORD))

    def test_reloadAfterInPlaceEdit(self) -> None:
        """
        A file edited in place (same inode) is reloaded too.
        """
        checker = self.makeChecker()
        self.writeFile(f"carol:md5:{md5Digest('carol-pw').hex()}\n")
        self.assertTrue(self.loginSucceeds(checker, "carol", "carol-pw"))
        self.assertFalse(self.loginSucceeds(checker, "alice", ALICE_PASSWORD))

    def test_keepsLastGoodUsersWhenInvalid(self) -> None:
        """
        When the file becomes invalid, the last good users still log in, and the error
        is logged once, naming the line, not on every login.
        """
        checker = self.makeChecker()
        self.writeFile("alice:md5:nothex\n")
        with capturedLogs() as events:
            self.assertTrue(self.loginSucceeds(checker, "alice", ALICE_PASSWORD))
            self.assertTrue(self.loginSucceeds(checker, "bob", BOB_PASSWORD))
        errors = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1, events)
        self.assertIn("line 1", errors[0]["error"])
        self.assertEqual(errors[0]["path"], self.path)

    def test_keepsLastGoodUsersWhenDeleted(self) -> None:
        """
        When the file disappears the last good users stay; when it is back, it is used.
        """
        checker = self.makeChecker()
        os.unlink(self.path)
        with capturedLogs() as events:
            self.assertTrue(self.loginSucceeds(checker, "alice", ALICE_PASSWORD))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])
        UserFile().add("carol", "carol-pw").save(self.path)
        self.assertTrue(self.loginSucceeds(checker, "carol", "carol-pw"))
        self.assertFalse(self.loginSucceeds(checker, "alice", ALICE_PASSWORD))

    def test_warnsAboutReadableFile(self) -> None:
        """
        A checker made over a file others can read logs a warning.
        """
        os.chmod(self.path, 0o644)
        with capturedLogs() as events:
            self.makeChecker()
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1, events)
        self.assertIn("0644", warnings[0]["problem"])
