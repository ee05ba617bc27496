"""
The gateway's errors, each carrying its meaning for every transport.

An error has a stable C{type} string, an HTTP status (REST, SSE), a JSON-RPC
code (WebSocket) and a finer C{code} string.  One handler per transport
turns them into responses; L{errorFromFailure} turns what PB raises into
them.  No traceback ever leaves the gateway unless the debug setting asks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure

import pb

__all__ = [
    "BadRequest",
    "BrokerUnavailable",
    "CallTimedOut",
    "Forbidden",
    "GatewayError",
    "NotFound",
    "PayloadTooLarge",
    "RemoteFailure",
    "TooManyRequests",
    "Unauthorized",
    "errorFromFailure",
]


class GatewayError(Exception):
    """
    An error meant for the web caller.
    """

    type: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    rpcCode: ClassVar[int] = -32603

    def __init__(self, message: str, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.details = details

    def asJSON(self) -> dict[str, Any]:
        """
        The C{"error"} object of a response body.
        """
        body: dict[str, Any] = {"type": self.type, "message": self.message, "code": self.code}
        body.update(self.details)
        return body


class BadRequest(GatewayError):
    """
    Bad JSON, a bad body or argument shape, or a value that cannot be mapped.
    """

    type = "bad_request"
    status = 400
    rpcCode = -32602


class Unauthorized(GatewayError):
    """
    No token, an unknown or expired token, or bad credentials.
    """

    type = "unauthorized"
    status = 401
    rpcCode = -32001


class Forbidden(GatewayError):
    """
    Not allowed (e.g. the broker's login machinery through the root route).
    """

    type = "forbidden"
    status = 403
    rpcCode = -32002


class NotFound(GatewayError):
    """
    An unknown handle, method or route.
    """

    type = "not_found"
    status = 404
    rpcCode = -32003


class MethodNotAllowed(GatewayError):
    type = "method_not_allowed"
    status = 405
    rpcCode = -32600


class PayloadTooLarge(GatewayError):
    type = "payload_too_large"
    status = 413
    rpcCode = -32004


class TooManyRequests(GatewayError):
    type = "too_many_requests"
    status = 429
    rpcCode = -32005


class RemoteFailure(GatewayError):
    """
    The remote method raised.  A C{pb.Error} (PB's "expected, meant for the
    caller") gives 422; anything else 500.
    """

    type = "remote_error"
    status = 422
    rpcCode = -32010


class RemoteException(RemoteFailure):
    type = "remote_exception"
    status = 500
    rpcCode = -32011


class BrokerUnavailable(GatewayError):
    type = "broker_unavailable"
    status = 503
    rpcCode = -32020


class CallTimedOut(GatewayError):
    type = "timeout"
    status = 504
    rpcCode = -32021


def errorFromFailure(failure: Failure, debug: bool = False) -> GatewayError:
    """
    The gateway error for a failed PB call or connection.
    """
    value = failure.value
    if isinstance(value, GatewayError):
        return value
    if isinstance(value, pb.CallTimeout):
        return CallTimedOut(str(value))
    from twisted.internet.defer import TimeoutError as DeferredTimeout
    from twisted.internet.error import TimeoutError as ConnectTimeout

    if isinstance(value, (DeferredTimeout, ConnectTimeout)):
        return BrokerUnavailable("the broker did not answer in time", "broker_timeout")
    if isinstance(value, (pb.DeadReferenceError, pb.PBConnectionLost)):
        return BrokerUnavailable(f"the broker connection is gone: {value}")
    if isinstance(value, pb.LoginThrottled):
        # The broker's own lockout (per user name).
        return TooManyRequests(str(value), "login_throttled")
    if isinstance(value, UnauthorizedLogin):
        return Unauthorized("bad username or password", "login_failed")
    if isinstance(value, pb.TooLarge) and not isinstance(value, pb.RemoteError):
        return PayloadTooLarge(str(value), "value_too_large")
    if isinstance(value, pb.UnsafeValue) and not isinstance(value, pb.RemoteError):
        return BadRequest(str(value), "unsendable_value")
    if isinstance(value, pb.RemoteError):
        remoteType = value.remoteType
        details: dict[str, Any] = {"remote_type": remoteType}
        if debug and value.remoteTraceback:
            details["traceback"] = value.remoteTraceback
        if isinstance(value, pb.NoSuchMethod) or remoteType.endswith(".NoSuchMethod"):
            return NotFound(value.value, "no_such_method", **details)
        if isinstance(value, pb.ArgumentError):
            return BadRequest(value.value, "bad_arguments", **details)
        if isinstance(value, pb.UnsafeValue):
            return BadRequest(value.value, "unsafe_value", **details)
        if value.isPBError:
            return RemoteFailure(value.value, remoteType, **details)
        return RemoteException(value.value, remoteType, **details)
    from twisted.internet.error import ConnectError, ConnectionLost, ConnectionRefusedError

    if isinstance(value, (ConnectError, ConnectionRefusedError, ConnectionLost)):
        return BrokerUnavailable(f"cannot reach the broker: {value}")
    details = {"traceback": failure.getTraceback()} if debug else {}
    return GatewayError("internal error", **details)
