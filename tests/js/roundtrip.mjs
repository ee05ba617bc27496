// Reads a JSON array of gateway values on stdin; writes each one decoded to
// JavaScript and encoded back (tests/test_jslib.py compares with Python).
import { decode, encode } from "../../static/lib/values.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const values = JSON.parse(input);
process.stdout.write(JSON.stringify(values.map((value) => encode(decode(value)))));
