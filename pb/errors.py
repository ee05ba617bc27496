"""
The errors PB callers see, each with the meaning it carries across the wire.

L{Error} is PB's way of saying "expected, meant for the caller": a remote
method that raises an L{Error} subclass is not logged with a traceback on the
server, and the gateway reports it as a client-side failure.  Every other
class here is raised by the broker itself.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin

__all__ = [
    "ArgumentError",
    "CallTimeout",
    "DeadReferenceError",
    "Error",
    "LoginFailed",
    "LoginThrottled",
    "NoSuchMethod",
    "PBConnectionLost",
    "ProtocolError",
    "RemoteError",
    "TooLarge",
    "UnsafeValue",
    "remoteErrorFor",
]


class Error(Exception):
    """
    An expected failure, sent to the caller without a logged traceback.
    """


class ProtocolError(Exception):
    """
    The peer broke the PB protocol; the connection is closed.
    """


class DeadReferenceError(Error):
    """
    A call on a reference whose connection is gone.
    """


class PBConnectionLost(Error):
    """
    The connection was lost before the call's answer arrived.
    """


class CallTimeout(Error, TimeoutError):
    """
    A call's answer did not arrive within its timeout.  Nothing is left in
    the broker's tables for it; a late answer is dropped.
    """


class NoSuchMethod(Error, AttributeError):
    """
    The remote object has no method by that name.
    """


class ArgumentError(Error, TypeError):
    """
    The arguments do not fit the remote method's signature.
    """


class TooLarge(Error, ValueError):
    """
    A value exceeds a size limit of the side that produced it; the one call
    fails and the connection goes on.
    """


class UnsafeValue(Error, TypeError):
    """
    A value cannot be serialized (sending side) or names a type this side
    does not accept (receiving side); the one call fails and the connection
    goes on.
    """


class LoginFailed(Error, UnauthorizedLogin):
    """
    The credentials were refused (the same error for an unknown user and a
    wrong password).  Also a C{twisted.cred} L{UnauthorizedLogin}, so Twisted
    peers recognise it.
    """


class LoginThrottled(LoginFailed):
    """
    Too many failed logins for this user name: its password logins are
    refused for a while, whatever the password
    (L{BrokerOptions.loginMaxFailures}).
    """


class RemoteError(Error):
    """
    An exception raised on the other side, as the caller sees it.

    @ivar remoteType: the qualified name of the remote exception's class,
        e.g. C{"builtins.ZeroDivisionError"}.
    @ivar remoteParents: the qualified names of its base classes, most
        derived first (Twisted calls these C{parents}).
    @ivar remoteTraceback: the remote traceback text, or a placeholder when
        the peer does not send tracebacks.
    """

    def __init__(
        self,
        remoteType: str,
        value: str,
        remoteTraceback: str = "",
        remoteParents: tuple[str, ...] = (),
    ) -> None:
        super().__init__(value)
        self.remoteType = remoteType
        self.value = value
        self.remoteTraceback = remoteTraceback
        self.remoteParents = remoteParents or (remoteType,)

    def __str__(self) -> str:
        return self.value

    @property
    def isPBError(self) -> bool:
        """
        Whether the remote exception was a PB L{Error} (ours or Twisted's):
        an expected failure meant for the caller.
        """
        return any(name in _PB_ERROR_NAMES for name in self.remoteParents)


_PB_ERROR_NAMES = frozenset({"twisted.spread.pb.Error", "pb.errors.Error"})

_remoteClasses: dict[str, type[RemoteError]] = {}


def remoteErrorFor(
    remoteType: str, value: str, remoteTraceback: str, remoteParents: tuple[str, ...]
) -> RemoteError:
    """
    Build the L{RemoteError} for a remote exception.

    For Python's built-in exceptions the result is also an instance of that
    exception (a remote C{ValueError} can be caught with C{except ValueError}),
    without importing anything the peer names.
    """
    cls = _remoteClasses.get(remoteType)
    if cls is None:
        local = _localEquivalent(remoteType)
        if local is None:
            return RemoteError(remoteType, value, remoteTraceback, remoteParents)
        try:
            cls = type(f"Remote{local.__name__}", (RemoteError, local), {})
        except TypeError:
            # Some built-in exceptions have incompatible layouts.
            cls = RemoteError
        # Only names we know are cached, so a peer cannot grow this table.
        _remoteClasses[remoteType] = cls
    return cls(remoteType, value, remoteTraceback, remoteParents)


def _localEquivalent(remoteType: str) -> type[Exception] | None:
    if remoteType.startswith("builtins."):
        import builtins

        builtin: Any = getattr(builtins, remoteType[len("builtins.") :], None)
        if isinstance(builtin, type) and issubclass(builtin, Exception):
            return builtin
        return None
    return _KNOWN_ERRORS.get(remoteType)


_KNOWN_ERRORS: dict[str, type[Exception]] = {
    **{
        f"pb.errors.{cls.__name__}": cls
        for cls in (
            ArgumentError,
            CallTimeout,
            DeadReferenceError,
            LoginFailed,
            LoginThrottled,
            NoSuchMethod,
            PBConnectionLost,
            TooLarge,
            UnsafeValue,
        )
    },
    "twisted.cred.error.UnauthorizedLogin": UnauthorizedLogin,
    "twisted.spread.flavors.NoSuchMethod": NoSuchMethod,
    "twisted.spread.pb.DeadReferenceError": DeadReferenceError,
    "twisted.spread.pb.PBConnectionLost": PBConnectionLost,
}
