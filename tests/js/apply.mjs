// Reads [{value, deltas: [[method, args], ...]}] on stdin and applies the
// deltas with the browser's applyDelta; writes [{value} | {error, value}]
// (the value as it was left) for tests/test_jslib.py to compare with Python.
import { applyDelta, DeltaError } from "../../static/lib/delta.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map(({ value, deltas }) => {
  for (const [method, args] of deltas) {
    try {
      value = applyDelta(value, method, args);
    } catch (error) {
      if (!(error instanceof DeltaError)) throw error;
      return { error: error.message, value };
    }
  }
  return { value };
});
process.stdout.write(JSON.stringify(results));
