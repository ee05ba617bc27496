"""
Tools the tests drive (curl, nginx, validators): skipped without them on a
developer's machine, a failure in CI, where C{.ci/test} installs them.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest

__all__ = ["requireTool"]


def requireTool(found: bool, what: str) -> None:
    """
    Skip without C{what}, except in CI (C{CI=true}), where its absence is a
    failure.
    """
    if found:
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{what} is missing: CI must install it (.ci/test)")
    raise SkipTest(f"{what} is not installed")
