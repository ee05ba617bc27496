"""
Login throttling: too many failed logins for one user name, or from one
client address, lock further attempts out for a while.

Used by the broker for PB password logins (L{pb.LoginThrottled}) and by the
gateway for web logins (HTTP 429, JSON-RPC -32005).
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """
    Counts failed logins per key (C{"user:alice"}, C{"addr:10.0.0.7"})
    within a sliding window of C{window} seconds; at C{maxFailures} the key
    is locked out for C{lockout} seconds.  At most C{maxKeys} keys are
    remembered (oldest forgotten first), so the table cannot be grown
    without bound.
    """

    def __init__(self, clock: IReactorTime, maxFailures: int = 5, window: float = 60.0,
                 lockout: float = 60.0, maxKeys: int = 100_000) -> None:
        self.clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.lockout = lockout
        self.maxKeys = maxKeys
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lockedUntil: dict[str, float] = {}

    def lockedFor(self, *keys: str) -> int:
        """
        Whole seconds (at least 1) until none of C{keys} is locked out; 0 if
        none is.
        """
        now = self.clock.seconds()
        longest = 0
        for key in keys:
            until = self._lockedUntil.get(key)
            if until is None:
                continue
            if until <= now:
                del self._lockedUntil[key]
                continue
            longest = max(longest, max(1, int(until - now + 0.999)))
        return longest

    def failed(self, *keys: str) -> None:
        """
        Count a failed login against each of C{keys}.
        """
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
        """
        Forget the failures counted against C{keys}.
        """
        for key in keys:
            self._failures.pop(key, None)
