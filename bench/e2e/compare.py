#!/usr/bin/python3
"""Measured (prfaas bench) vs simulated (prfaas sim) for each configuration of run_comparison.sh.

Usage: compare.py OUT_DIR CONFIG...  Reads OUT_DIR/<config>/{bench,sim,sim-speed}.json (the last
is optional) and prints Markdown tables: throughput and TTFT/TPOT percentiles of each, then the
simulator's relative error ((sim - measured) / measured) on mean TTFT and on throughput.
"""
import json
import os
import sys

PREDICTIONS = [("sim", "simulated (profile)"), ("sim-speed", "simulated (in-run speed)")]


def main():
    out, configs = sys.argv[1], sys.argv[2:]
    rows = []
    for cfg in configs:
        b = json.load(open(f"{out}/{cfg}/bench.json"))
        sims = {}
        for key, _ in PREDICTIONS:
            path = f"{out}/{cfg}/{key}.json"
            if os.path.exists(path):
                sims[key] = json.load(open(path))[0]
        rows.append((cfg, b, sims))
    print("| config | source | completed | throughput (req/s) | TTFT mean (s) | p50 | p90 | p99 "
          "| TPOT mean (ms) | p90 (ms) | offload |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg, b, sims in rows:
        t, p = b["ttft_s"], b["tpot_s"]
        print(f"| {cfg} | measured | {b['requests']['completed']}/{b['requests']['planned']} "
              f"| {b['throughput']['requests_per_s']:.3f} | {t['mean']:.3f} | {t['p50']:.3f} "
              f"| {t['p90']:.3f} | {t['p99']:.3f} | {p['mean'] * 1e3:.1f} | {p['p90'] * 1e3:.1f} "
              f"| - |")
        for key, label in PREDICTIONS:
            if key not in sims:
                continue
            s = sims[key]
            t, p = s["ttft_s"], s["tpot_s"]
            print(f"| {cfg} | {label} | {s['completed']}/{s['requests']} "
                  f"| {s['throughput_rps']:.3f} | {t['mean']:.3f} | {t['p50']:.3f} "
                  f"| {t['p90']:.3f} | {t['p99']:.3f} | {p['mean'] * 1e3:.1f} "
                  f"| {p['p90'] * 1e3:.1f} | {s['offload_ratio']:.2f} |")
    print()
    print("| config | prediction | error on mean TTFT | error on throughput |")
    print("|---|---|---|---|")
    for cfg, b, sims in rows:
        for key, label in PREDICTIONS:
            if key not in sims:
                continue
            s = sims[key]
            e_ttft = (s["ttft_s"]["mean"] - b["ttft_s"]["mean"]) / b["ttft_s"]["mean"]
            e_tput = ((s["throughput_rps"] - b["throughput"]["requests_per_s"]) /
                      b["throughput"]["requests_per_s"])
            print(f"| {cfg} | {label} | {e_ttft * 100:+.1f}% | {e_tput * 100:+.1f}% |")


if __name__ == "__main__":
    main()
