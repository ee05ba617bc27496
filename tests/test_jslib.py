"""
The browser client library's pure parts, run in Node: the JSON value codec
(C{static/lib/values.js}) and live-object deltas (C{static/lib/delta.js}).

Python is the oracle: values go from the gateway's codec through JavaScript
and back and must come out equal, and the JavaScript C{applyDelta} must leave
the same state, or refuse the same deltas, as C{pb.live.applyDelta}.  Skipped
when C{node} is not installed (the browser tests cover the library too).
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import jsonFromPB, pbFromJSON
from pb.live import applyDelta

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def _node(script: str, payload: Any) -> Any:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(SCRIPTS / script)], input=json.dumps(payload).encode(),
        capture_output=True, cwd=REPO, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def _same(a: Any, b: Any) -> bool:
    """
    Equal, with NaN equal to itself and the same types all the way down.
    """
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_nodeUnitTests() -> None:
    """
    The codec's JavaScript-side behaviour (types, local datetimes, tags on
    the way out, handles) passes its Node unit tests.
    """
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--test", *sorted(str(p) for p in SCRIPTS.glob("*.test.mjs"))],
        capture_output=True, cwd=REPO, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_valuesRoundTripThroughJavaScript() -> None:
    """
    Every PB value the JSON mapping carries (tuples tagged), decoded to
    JavaScript and encoded back, is the value it was (datetimes to the
    millisecond, which is what a JavaScript Date holds).
    """
    values: list[Any] = [
        None, True, 0, -7, 2**53 - 1, 1.5, "text", "",
        [1, [2, "three"]], {"a": 1, "b": {"c": [True, None]}},
        b"\x00\xffbytes", (1, "two", (3,)), {1, 2, 3}, frozenset({"x"}),
        {1: "int key", (1, 2): "tuple key"}, {"$starts": "with a dollar"},
        datetime.datetime(2026, 11, 26, 13, 20, 3, 123000), datetime.date(2026, 2, 28),
        datetime.time(13, 20, 3, 500000), datetime.timedelta(seconds=90061.25),
        decimal.Decimal("1.10"), math.inf, -math.inf, math.nan,
        [{"nested": {b"bytes": {(1,): frozenset({2})}}}],
    ]
    back = _node("roundtrip.mjs", [jsonFromPB(value, tagTuples=True) for value in values])
    for value, json_ in zip(values, back, strict=True):
        assert _same(pbFromJSON(json_), value), (value, json_)


def test_applyDeltaMatchesPython() -> None:
    """
    The JavaScript applyDelta leaves every state as Python's does, and
    refuses (leaving the state unchanged) the deltas Python refuses.
    """
    cases: list[tuple[Any, list[tuple[str, list[Any]]]]] = [
        ({}, [("observe_set", [1, "a", 1]), ("observe_update", [2, {"b": 2, "a": 3}]),
              ("observe_delete", [3, "b"]), ("observe_reset", [4, {"z": [1]}])]),
        ([], [("observe_insert", [1, 0, "x"]), ("observe_insert", [2, 1, "y"]),
              ("observe_insert", [3, 0, "w"]), ("observe_replace", [4, 2, "Y"]),
              ("observe_remove", [5, 0]), ("observe_reset", [6, [1, 2]])]),
        ({"a": 1}, [("observe_delete", [1, "missing"])]),
        ([1], [("observe_insert", [1, 3, "x"])]),
        ([1], [("observe_replace", [1, 1, "x"])]),
        ([1], [("observe_remove", [1, -1])]),
        ([1], [("observe_set", [1, "a", 1])]),
        ({}, [("observe_insert", [1, 0, 1])]),
        ({}, [("observe_set", [True, "a", 1])]),
        ({}, [("observe_set", [1, "a"])]),
        ({}, [("observe_reset", [1, []])]),
        ({}, [("observe_nothing", [1])]),
        ([0], [("observe_replace", [1, 0.5, "x"])]),
    ]
    results = _node("apply.mjs", [{"value": value, "deltas": deltas} for value, deltas in cases])
    for (value, deltas), result in zip(cases, results, strict=True):
        expected, failed = value, False
        for method, args in deltas:
            try:
                expected = applyDelta(expected, method, args)
            except ValueError:
                failed = True
                break
        assert ("error" in result) == failed, (value, deltas, result)
        assert result["value"] == expected, (value, deltas, result)
