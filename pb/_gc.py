"""
Pausing Python's cyclic garbage collector around codec work.

Encoding and decoding a large message allocate hundreds of thousands of
small lists and dicts, none of them in reference cycles; each allocation
burst triggers collections that scan them all in vain (about half the time
of a large decode).  Reference counting still frees everything as usual;
only the cycle detector waits until the codec returns.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

__all__ = ["withoutCycleCollection"]

P = ParamSpec("P")
R = TypeVar("R")


def withoutCycleCollection(function: Callable[P, R]) -> Callable[P, R]:
    """
    Run C{function} with the cycle collector paused (if it was running).
    """

    @wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.enable()

    return paused
