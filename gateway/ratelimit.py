"""
Login throttling for web logins: too many failed logins for one user name,
or from one client address, lock further attempts out for a while (HTTP 429
with C{Retry-After}; JSON-RPC -32005 with C{retry_after}).  The counting is
L{pb.throttle.LoginThrottle}'s, which the broker uses for PB logins.
"""

from __future__ import annotations

from pb.throttle import LoginThrottle

from .errors import TooManyRequests

__all__ = ["LoginLimiter"]


class LoginLimiter(LoginThrottle):
    """
    A L{LoginThrottle} whose lockouts are the gateway's L{TooManyRequests}.
    """

    def check(self, *keys: str) -> None:
        """
        @raise TooManyRequests: one of C{keys} is locked out.
        """
        retryAfter = self.lockedFor(*keys)
        if retryAfter:
            raise TooManyRequests(
                f"too many failed logins: try again in {retryAfter} s", "login_throttled",
                retry_after=retryAfter,
            )
