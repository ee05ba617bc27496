"""
Pausing Python's cyclic garbage collector around codec work on large messages.

Encoding and decoding a large message allocate hundreds of thousands of
small lists and dicts, none of them in reference cycles; each allocation
burst triggers collections that scan them all in vain (about half the time
of a large decode).  Reference counting still frees everything as usual;
only the cycle detector waits until the codec returns.  A small message
allocates too little to trigger a collection, so pausing around it would
only add its own cost (a few tenths of a microsecond, several times per
call): the codecs pause for large input only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

__all__ = ["LARGE_INPUT", "withoutCycleCollection"]

P = ParamSpec("P")
R = TypeVar("R")

LARGE_INPUT = 2048
"""Bytes of input from which decoding is worth pausing the cycle collector for."""


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
