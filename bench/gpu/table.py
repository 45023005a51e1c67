#!/usr/bin/env python3
"""Builds the summary table of a bench/gpu/run.sh run from the RESULT lines in its output files.

A RESULT line is `RESULT key=value ...` with at least kernel, shape and ms; tflops or gbps give the
share of the ceiling (ceiling_gemm_bf16 / ceiling_d2d_copy from ceilings.py); `peer=NAME` pairs it
with the line of kernel=NAME and the same shape, and the ratio is peer ms / our ms (> 1: ours is
faster). usage: table.py FILE... (prints markdown; the last lines of run.sh's output)."""
import sys


def parse(paths):
    rows = []
    for path in paths:
        try:
            text = open(path, errors="replace").read()
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("RESULT "):
                continue
            kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            if "kernel" in kv and "shape" in kv:
                rows.append(kv)
    return rows


def num(kv, key):
    try:
        return float(kv[key])
    except (KeyError, ValueError):
        return None


def main():
    rows = parse(sys.argv[1:])
    by_key = {(r["kernel"], r["shape"]): r for r in rows}
    gemm = next((num(r, "tflops") for r in rows if r["kernel"] == "ceiling_gemm_bf16"), None)
    copy = next((num(r, "gbps") for r in rows if r["kernel"] == "ceiling_d2d_copy"), None)
    print(f"ceilings: bf16 GEMM {gemm} TFLOP/s, D2D copy {copy} GB/s")
    print("| kernel | shape | ours ms | rate | peer | peer ms | ratio (peer/ours) | % of ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    peers = {r.get("peer") for r in rows if r.get("peer")}
    for r in rows:
        if r["kernel"].startswith("ceiling_") or r["kernel"] in peers:
            continue
        ms, tf, gb = num(r, "ms"), num(r, "tflops"), num(r, "gbps")
        rate, pct = "", ""
        if tf is not None:
            rate = f"{tf:.1f} TFLOP/s"
            pct = f"{100 * tf / gemm:.0f}% GEMM" if gemm else ""
        elif gb is not None:
            rate = f"{gb:.0f} GB/s"
            pct = f"{100 * gb / copy:.0f}% copy" if copy else ""
        peer, pms, ratio = r.get("peer", ""), "", ""
        p = by_key.get((peer, r["shape"])) if peer else None
        if p is not None and num(p, "ms") and ms:
            pms = f"{num(p, 'ms'):.4f}"
            ratio = f"{num(p, 'ms') / ms:.2f}x"
        elif peer:
            pms = "missing"
        print(f"| {r['kernel']} | {r['shape']} | {'' if ms is None else f'{ms:.4f}'} | {rate} | "
              f"{peer} | {pms} | {ratio} | {pct} |")


if __name__ == "__main__":
    main()
