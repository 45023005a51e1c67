#!/usr/bin/env python3
"""Extracts the King James Bible as plain text and splits it into train/validation sets.

Source: Debian packages `bible-kjv-text` (the data, /usr/lib/bible.data) and `bible-kjv` (the
`bible` program that decodes it).  `apt-get install -y bible-kjv` pulls in both.

Output layout (ASCII, '\n' line ends), one chapter after another:

    Genesis 1
    1 In the beginning God created the heaven and the earth.
    2 And the earth was without form, and void; ...
    <blank line>
    Genesis 2
    ...

Split: whole books, deterministic.  The last books of the canon are moved to validation until they
hold at least --val-fraction of the bytes (by default 5%: Hebrews..Revelation is more than that,
so it ends at 1 Peter or so; the script prints the exact list).

Usage: extract_kjv.py OUT_DIR [--bible /usr/bin/bible] [--val-fraction 0.05]
Writes OUT_DIR/train.txt, OUT_DIR/val.txt, OUT_DIR/split.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys

EXPECTED_VERSES = 31102
HEADER = re.compile(r"^(\S.*) (\d+)$")         # "Genesis 1", "1 Kings 3", "Song of Solomon 2"
VERSE = re.compile(r"^\s+(\d+) (.*)$")          # "  12 And God said, ..."


def read_bible(bible_bin):
    # -l with a huge width disables the program's line wrapping: one verse per line.
    out = subprocess.run([bible_bin, "-l1000000", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True).stdout.decode("ascii")
    books = []                 # [(name, [(chapter, [(verse, text)])])]
    for line in out.split("\n"):
        if not line.strip():
            continue
        m = VERSE.match(line)
        if m:
            books[-1][1][-1][1].append((int(m.group(1)), m.group(2).strip()))
            continue
        m = HEADER.match(line)
        if not m:
            sys.exit(f"unexpected line from {bible_bin}: {line!r}")
        name, chapter = m.group(1), int(m.group(2))
        if not books or books[-1][0] != name:
            books.append((name, []))
        books[-1][1].append((chapter, []))
    return books


def format_book(name, chapters):
    parts = []
    for chapter, verses in chapters:
        lines = [f"{name} {chapter}"] + [f"{v} {text}" for v, text in verses]
        parts.append("\n".join(lines) + "\n\n")
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--bible", default="/usr/bin/bible")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    args = ap.parse_args()

    books = read_bible(args.bible)
    n_verses = sum(len(vs) for _, chs in books for _, vs in chs)
    if len(books) != 66 or n_verses != EXPECTED_VERSES:
        sys.exit(f"expected 66 books / {EXPECTED_VERSES} verses, got {len(books)} / {n_verses}")
    texts = [format_book(name, chs) for name, chs in books]
    total = sum(len(t) for t in texts)

    n_val, val_bytes = 0, 0
    while val_bytes < args.val_fraction * total:
        n_val += 1
        val_bytes += len(texts[-n_val])
    train = "".join(texts[:-n_val])
    val = "".join(texts[-n_val:])

    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "train.txt"), "w", encoding="ascii", newline="\n") as f:
        f.write(train)
    with open(os.path.join(args.out_dir, "val.txt"), "w", encoding="ascii", newline="\n") as f:
        f.write(val)
    split = {"train_books": [b[0] for b in books[:-n_val]],
             "val_books": [b[0] for b in books[-n_val:]],
             "train_bytes": len(train), "val_bytes": len(val), "verses": n_verses}
    with open(os.path.join(args.out_dir, "split.json"), "w") as f:
        json.dump(split, f, indent=1)
    print(f"train {len(train)} bytes, val {len(val)} bytes; val books: {', '.join(split['val_books'])}")


if __name__ == "__main__":
    main()
