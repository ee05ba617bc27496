"""
Login throttling: too many failed logins for one user name, or from one
client address, lock further attempts out for a while (HTTP 429 with
C{Retry-After}; JSON-RPC -32005 with C{retry_after}).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .errors import TooManyRequests

__all__ = ["LoginLimiter"]


class LoginLimiter:
    """
    Counts failed logins per key (C{"user:alice"}, C{"addr:10.0.0.7"})
    within a sliding window; at C{maxFailures} the key is locked out for
    C{lockout} seconds.  At most C{maxKeys} keys are remembered (oldest
    forgotten first), so the table cannot be grown without bound.
    """

    def __init__(self, clock: Any, maxFailures: int = 5, window: float = 60.0,
                 lockout: float = 60.0, maxKeys: int = 100_000) -> None:
        self.clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.lockout = lockout
        self.maxKeys = maxKeys
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lockedUntil: dict[str, float] = {}

    def check(self, *keys: str) -> None:
        """
        @raise TooManyRequests: one of C{keys} is locked out.
        """
        now = self.clock.seconds()
        for key in keys:
            until = self._lockedUntil.get(key)
            if until is None:
                continue
            if until <= now:
                del self._lockedUntil[key]
                continue
            retryAfter = max(1, int(until - now + 0.999))
            error = TooManyRequests(
                f"too many failed logins: try again in {retryAfter} s", "login_throttled",
                retry_after=retryAfter,
            )
            raise error

    def failed(self, *keys: str) -> None:
        now = self.clock.seconds()
        for key in keys:
            times = [t for t in self._failures.pop(key, []) if now - t < self.window]
            times.append(now)
            if len(times) >= self.maxFailures:
                self._lockedUntil[key] = now + self.lockout
                times = []
            self._failures[key] = times
        while len(self._failures) > self.maxKeys:
            self._failures.popitem(last=False)
        if len(self._lockedUntil) > self.maxKeys:
            self._lockedUntil = {k: t for k, t in self._lockedUntil.items() if t > now}

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
