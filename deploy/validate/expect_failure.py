#!/usr/bin/env python3
"""Runs a validator on a deliberately broken input and passes only if the validator catches it.

  expect_failure.py [--code N] --expect REGEX [--expect REGEX ...] -- COMMAND [ARG ...]

Passes when COMMAND exits non-zero (exactly N with --code; validators use 1 for "found problems"
and 2 for "could not run", so a negative test pins 1 to avoid passing on a broken environment)
and every REGEX matches its combined output, which is how a test asserts that the error names the
file and the field.
"""
import argparse
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", type=int)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.expect:
        ap.error("need --expect and a command after --")
    out = subprocess.run(command, capture_output=True, text=True)
    text = out.stdout + out.stderr
    print(text)
    ok = True
    if out.returncode == 0 or (args.code is not None and out.returncode != args.code):
        print(f"expect_failure: exit status {out.returncode}, wanted "
              f"{args.code if args.code is not None else 'non-zero'}")
        ok = False
    for pattern in args.expect:
        if not re.search(pattern, text, re.MULTILINE):
            print(f"expect_failure: output does not match {pattern!r}")
            ok = False
    print("expect_failure: the broken input was caught as expected" if ok else "expect_failure: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
