// Unit tests of the browser's value codec (run by tests/test_jslib.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Copy,
  Decimal,
  decode,
  encode,
  FrozenSet,
  isTuple,
  PyDate,
  PyTime,
  Timedelta,
  tuple,
  Unpersistable,
} from "../../static/lib/values.js";

test("tags decode to JavaScript types", () => {
  assert.deepEqual(decode({ $bytes: "aGk=" }), new Uint8Array([104, 105]));
  assert.ok(isTuple(decode({ $tuple: [1, 2] })));
  assert.deepEqual(decode({ $set: [1, 2] }), new Set([1, 2]));
  assert.ok(decode({ $frozenset: [1] }) instanceof FrozenSet);
  assert.deepEqual(decode({ $dict: [[1, "a"]] }), new Map([[1, "a"]]));
  assert.ok(decode({ $date: "2026-11-26" }) instanceof PyDate);
  assert.ok(decode({ $time: "13:20:03" }) instanceof PyTime);
  assert.equal(decode({ $timedelta: 1.5 }).seconds, 1.5);
  assert.equal(decode({ $decimal: "1.10" }).text, "1.10");
  assert.ok(Number.isNaN(decode({ $float: "nan" })));
  assert.equal(decode({ $float: "-inf" }), -Infinity);
  assert.deepEqual(decode({ $copy: "demo.SharedData", state: { name: "x" } }),
    new Copy("demo.SharedData", { name: "x" }));
  assert.equal(decode({ $unpersistable: "no" }).reason, "no");
  assert.ok(decode({ $unpersistable: "no" }) instanceof Unpersistable);
});

test("a naive datetime is local wall-clock time, to the millisecond", () => {
  const date = decode({ $datetime: "2026-11-26T13:20:03.123456" });
  assert.deepEqual(
    [date.getFullYear(), date.getMonth(), date.getDate(), date.getHours(), date.getMinutes(),
      date.getSeconds(), date.getMilliseconds()],
    [2026, 10, 26, 13, 20, 3, 123],
  );
  assert.deepEqual(encode(date), { $datetime: "2026-11-26T13:20:03.123" });
  assert.deepEqual(encode(new Date(2026, 0, 2, 3, 4, 5)), { $datetime: "2026-01-02T03:04:05" });
});

test("values without a JSON form are tagged on the way out", () => {
  assert.deepEqual(encode(tuple(1, "a")), { $tuple: [1, "a"] });
  assert.deepEqual(encode(new Set([1])), { $set: [1] });
  assert.deepEqual(encode(new FrozenSet([1])), { $frozenset: [1] });
  assert.deepEqual(encode(new Map([[1, 2]])), { $dict: [[1, 2]] });
  assert.deepEqual(encode(new Uint8Array([104, 105])), { $bytes: "aGk=" });
  assert.deepEqual(encode([NaN, Infinity]), [{ $float: "nan" }, { $float: "inf" }]);
  assert.deepEqual(encode(new Decimal("1.10")), { $decimal: "1.10" });
  assert.deepEqual(encode(new Timedelta(2)), { $timedelta: 2 });
  // A key the gateway would read as a tag goes as a pair.
  assert.deepEqual(encode({ $cost: 1 }), { $dict: [["$cost", 1]] });
  assert.throws(() => encode(() => 1), TypeError);
  assert.throws(() => encode(2n ** 60n), TypeError);
});

test("a FrozenSet cannot change", () => {
  const frozen = new FrozenSet([1]);
  assert.throws(() => frozen.add(2), TypeError);
  assert.throws(() => frozen.delete(1), TypeError);
  assert.deepEqual([...frozen], [1]);
});

test("handles are resolved through the client's callbacks", () => {
  const handles = {
    ref: (/** @type {string} */ h) => ({ ref: h }),
    cache: (/** @type {any} */ json) => ({ cache: json.$cache }),
    encodeHandle: (/** @type {any} */ v) => (v && v.ref ? { $ref: v.ref } : undefined),
  };
  const value = decode([{ $ref: "r1" }, { $cache: "c1", type: "T", state: {}, seq: 0 }], handles);
  assert.deepEqual(value, [{ ref: "r1" }, { cache: "c1" }]);
  assert.deepEqual(encode(value[0], handles), { $ref: "r1" });
  // Without handles the tags stay as they came.
  assert.deepEqual(decode({ $ref: "r1" }), { $ref: "r1" });
});
