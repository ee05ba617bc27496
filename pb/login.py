"""
Perspectives and login: who a PB caller is, and how they prove it.

A server with a C{twisted.cred} portal publishes a login object as its root.
Password login is PB's challenge/response (the server sends random bytes,
the client answers C{md5(md5(password) + challenge)}), so no password
crosses the wire; anonymous login needs an anonymous checker in the portal.
The realm answers with an avatar (L{Avatar}, L{Perspective}) whose
C{perspective_*} methods the client calls; its logout runs once, when the
client drops its last reference to it or the connection is lost.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import Anonymous, IUsernameHashedPassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.python.components import registerAdapter
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from .credentials import IUsernameMD5Password
from .errors import Error, LoginFailed, LoginThrottled
from .flavors import IPBRoot, Referenceable, _decodeKeywords, _positional, callLocal, findMethod
from .jelly import Jellyable
from .throttle import LoginThrottle

__all__ = [
    "AsReferenceable",
    "Avatar",
    "IPerspective",
    "Perspective",
    "Realm",
    "challenge",
    "respond",
]


class IPerspective(Interface):
    """
    A logged-in user's view of a service: what L{Realm}s hand out for PB.
    """

    def perspectiveMessageReceived(broker: Any, message: str, args: Any, kw: Any) -> Any:
        """
        Run the C{perspective_<message>} method for a remote call; C{args}
        and C{kw} are still serialized (see L{Broker.unserialize}).
        """


@implementer(IPerspective)
class Avatar:
    """
    A logged-in user: the client's C{callRemote("x", ...)} runs my
    C{perspective_x(...)}.

    @ivar avatarId: who logged in (bytes for a password login, as Twisted's
        checkers give it; C{()} for anonymous).
    @ivar mind: the client's C{client} object from login (a
        L{pb.RemoteReference}), or L{None}.
    """

    avatarId: Any = None
    mind: Any = None

    def __init__(self, avatarId: Any = None) -> None:
        if avatarId is not None:
            self.avatarId = avatarId

    def perspectiveMessageReceived(self, broker: Any, message: str, args: Any, kw: Any) -> Any:
        args = _positional(broker.unserialize(args, self))
        kw = _decodeKeywords(broker.unserialize(kw, self))
        method = findMethod(self, "perspective_", message)
        return broker.serialize(callLocal(method, args, kw), self)

    def logout(self) -> None:
        """
        Called once when this login ends.
        """


class Perspective(Avatar):
    """
    An avatar that always knows who it is: C{Perspective(avatarId)}.
    """

    def __init__(self, avatarId: Any) -> None:
        super().__init__(avatarId)
        self.avatarId = avatarId


@implementer(IRealm)
class Realm:
    """
    A realm handing out PB avatars.

    By default every login gets a new C{avatarFactory(avatarId)}; override
    L{createAvatar} (it may be C{async}) to look users up.  The avatar's
    C{mind} is set to the client's mind.  C{requestAvatar} returns
    C{(IPerspective, avatar, avatar.logout)}.
    """

    avatarFactory: Callable[[Any], Any] = Perspective

    def createAvatar(self, avatarId: Any, mind: Any) -> Any:
        avatar = self.avatarFactory(avatarId)
        if getattr(avatar, "mind", None) is None:
            try:
                avatar.mind = mind
            except AttributeError:
                pass
        return avatar

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if IPerspective not in interfaces:
            raise NotImplementedError("this realm only hands out pb.IPerspective avatars")
        avatar = self.createAvatar(avatarId, mind)
        if inspect.iscoroutine(avatar):
            avatar = Deferred.fromCoroutine(avatar)
        if isinstance(avatar, Deferred):
            return avatar.addCallback(_avatarTriple)
        return _avatarTriple(avatar)


def _avatarTriple(avatar: Any) -> tuple[Any, Any, Callable[[], Any]]:
    return (IPerspective, avatar, getattr(avatar, "logout", None) or (lambda: None))


class AsReferenceable(Referenceable):
    """
    Lend an object that is not itself Referenceable, dispatching calls to its
    C{<messageType>MessageReceived} method (avatars: C{"perspective"}).
    """

    def __init__(self, object: Any, messageType: str = "remote") -> None:
        self.object = object
        self.remoteMessageReceived = getattr(object, messageType + "MessageReceived")  # type: ignore[method-assign]


def respond(challenge: bytes, password: bytes | str) -> bytes:
    """
    The answer to a login challenge: C{md5(md5(password) + challenge)}.
    """
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hashlib.md5(hashlib.md5(password).digest() + challenge).digest()


def challenge() -> bytes:
    """
    A fresh login challenge: 16 bytes from the operating system's CSPRNG
    (Twisted draws its challenges from C{random}, which is predictable).
    """
    return secrets.token_bytes(16)


@implementer(IPBRoot)
class _PortalRoot:
    """
    A portal served as a root object.  Failed password logins are counted
    here per user name, for every connection of the server
    (L{LoginThrottle}).
    """

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.throttle: LoginThrottle | None = None

    def rootObject(self, broker: Any) -> Referenceable:
        options = broker.options
        if self.throttle is None and options.loginMaxFailures:
            self.throttle = LoginThrottle(broker.clock, options.loginMaxFailures,
                                          options.loginWindow, options.loginLockout)
        return _PortalWrapper(self.portal, broker, self.throttle)


registerAdapter(_PortalRoot, Portal, IPBRoot)


def _loginRefused(failure: Failure) -> Failure:
    if failure.check(UnauthorizedLogin) and not failure.check(LoginFailed):
        return Failure(LoginFailed(failure.getErrorMessage() or "bad username or password"))
    return failure


class _AvatarLender:
    broker: Any

    def _cbLogin(self, result: tuple[Any, Any, Callable[[], Any]]) -> Any:
        _interface, avatar, logout = result
        if not isinstance(avatar, Jellyable):
            avatar = AsReferenceable(avatar, "perspective")
        broker = self.broker
        puid = avatar.processUniqueID()
        pending = [logout]

        def maybeLogout() -> None:
            if not pending:
                return
            fn = pending.pop()
            broker.dontNotifyOnDisconnect(maybeLogout)
            broker._localCleanup.pop(puid, None)
            fn()

        broker._localCleanup[puid] = maybeLogout
        broker.notifyOnDisconnect(maybeLogout)
        return avatar


class _PortalWrapper(Referenceable, _AvatarLender):
    """
    The root object of a server with a portal: login happens through me.
    """

    _pbLogin = True

    def __init__(self, portal: Portal, broker: Any,
                 throttle: LoginThrottle | None = None) -> None:
        self.portal = portal
        self.broker = broker
        self.throttle = throttle

    def remote_login(self, username: bytes | str) -> tuple[bytes, Referenceable]:
        if isinstance(username, str):
            username = username.encode("utf-8")
        if not isinstance(username, bytes):
            raise Error("username must be a string")
        c = challenge()
        challenger = _PortalAuthChallenger(self.portal, self.broker, username, c)
        challenger.throttle = self.throttle
        challenger.checkThrottle()
        return c, challenger

    def remote_loginAnonymous(self, mind: Any) -> Deferred[Any]:
        d = self.portal.login(Anonymous(), mind, IPerspective)
        return d.addCallbacks(self._cbLogin, _loginRefused)


@implementer(IUsernameHashedPassword, IUsernameMD5Password)
class _PortalAuthChallenger(Referenceable, _AvatarLender):
    """
    One password login in progress; answers one response only, so a
    captured response cannot be replayed against it.
    """

    def __init__(self, portal: Portal, broker: Any, username: bytes, challenge: bytes) -> None:
        self.portal = portal
        self.broker = broker
        self.username = username
        self.challenge = challenge
        self.response: bytes | None = None
        self.throttle: LoginThrottle | None = None

    def _throttleKeys(self) -> tuple[str, ...]:
        # Per user name only: a gateway's logins all come from its one
        # address, and one user's failures must not lock everyone out.
        return ("user:" + self.username.decode("utf-8", "replace"),)

    def checkThrottle(self) -> None:
        """
        @raise LoginThrottled: this user name is locked out.
        """
        if self.throttle is None:
            return
        retryAfter = self.throttle.lockedFor(*self._throttleKeys())
        if retryAfter:
            raise LoginThrottled(f"too many failed logins: try again in {retryAfter} s")

    def remote_respond(self, response: bytes, mind: Any) -> Deferred[Any]:
        if self.response is not None:
            raise Error("this login challenge was already answered")
        if not isinstance(response, bytes):
            raise Error("the response must be bytes")
        self.checkThrottle()
        self.response = response
        d = self.portal.login(self, mind, IPerspective)
        if self.throttle is not None:
            d.addCallbacks(self._loggedIn, self._refused)
        return d.addCallbacks(self._cbLogin, _loginRefused)

    def _loggedIn(self, result: Any) -> Any:
        assert self.throttle is not None
        self.throttle.succeeded(self._throttleKeys()[0])
        return result

    def _refused(self, failure: Failure) -> Failure:
        assert self.throttle is not None
        if failure.check(UnauthorizedLogin):
            self.throttle.failed(*self._throttleKeys())
        return failure

    def checkPassword(self, password: bytes | str) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        return self.checkMD5Password(hashlib.md5(password).digest())

    def checkMD5Password(self, md5Password: bytes) -> bool:
        correct = hashlib.md5(md5Password + self.challenge).digest()
        return self.response is not None and secrets.compare_digest(self.response, correct)

