"""
Tests for login throttling (L{gateway.ratelimit.LoginLimiter}).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import TooManyRequests
from gateway.ratelimit import LoginLimiter


class LoginLimiterTests(SynchronousTestCase):
    """
    Failed logins lock a key out for a while, and only that key.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = LoginLimiter(self.clock, maxFailures=3, window=10, lockout=30)

    def test_lockoutAfterFailures(self) -> None:
        """
        The third failure within the window locks the key out with a
        Retry-After of the lockout; other keys are untouched.
        """
        for _ in range(3):
            self.limiter.check("user:alice")
            self.limiter.failed("user:alice")
        with self.assertRaises(TooManyRequests) as raised:
            self.limiter.check("user:alice")
        self.assertEqual(raised.exception.details["retry_after"], 30)
        self.assertEqual(raised.exception.status, 429)
        self.limiter.check("user:bob")

    def test_lockoutEnds(self) -> None:
        """
        After the lockout the key may try again.
        """
        for _ in range(3):
            self.limiter.failed("addr:10.0.0.1")
        self.clock.advance(29)
        self.assertRaises(TooManyRequests, self.limiter.check, "addr:10.0.0.1")
        self.clock.advance(1)
        self.limiter.check("addr:10.0.0.1")

    def test_windowSlides(self) -> None:
        """
        Failures older than the window do not count.
        """
        self.limiter.failed("user:alice")
        self.limiter.failed("user:alice")
        self.clock.advance(11)
        self.limiter.failed("user:alice")
        self.limiter.check("user:alice")

    def test_successForgets(self) -> None:
        """
        A successful login forgets the user's earlier failures.
        """
        self.limiter.failed("user:alice")
        self.limiter.failed("user:alice")
        self.limiter.succeeded("user:alice")
        self.limiter.failed("user:alice")
        self.limiter.check("user:alice")

    def test_boundedMemory(self) -> None:
        """
        At most maxKeys keys are remembered.
        """
        limiter = LoginLimiter(self.clock, maxFailures=3, maxKeys=100)
        for n in range(1000):
            limiter.failed(f"addr:{n}")
        self.assertLessEqual(len(limiter._failures), 100)
