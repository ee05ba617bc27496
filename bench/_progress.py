"""
Progress lines of the benchmark suites on standard error, each stamped with
the seconds since the run started, so that a run shows where its time goes
(start-ups, warm-ups, measurements) without a profiler.
"""

from __future__ import annotations

import sys
import time

__all__ = ["elapsed", "progress"]

_STARTED = time.monotonic()


def elapsed() -> float:
    """
    Seconds since this module was imported, which is when the run started.
    """
    return time.monotonic() - _STARTED


def progress(suite: str, message: str) -> None:
    """
    Print C{message} for C{suite} on standard error, stamped.
    """
    print(f"{elapsed():6.1f} s [{suite}] {message}", file=sys.stderr, flush=True)
