#!/usr/bin/python3
"""Cuts the workload of the CPU end-to-end comparison out of the Mooncake conversation trace.

The same file feeds `prfaas bench` (the measurement) and `prfaas sim` (the prediction), so both see
identical arrivals, lengths and prefix structure. Steps, all deterministic:
  1. take `--count` requests starting at `--start`;
  2. spread each timestamp uniformly inside its `--jitter`-second bucket (the trace is quantised to
     ~3 s; replaying the buckets as bursts would measure the buckets, not the system), seeded;
  3. rescale the gaps so the mean rate is `--rate` req/s, first arrival at 0;
  4. scale prompt and output lengths by `--scale` (the embedded model is tiny and has a 4096-token
     context), cap prompts at `--max-input` and keep the hash ids that still cover the prompt. The
     block size becomes 512 * scale tokens (pass it as --block-tokens to both tools), so the
     trace's prefix sharing survives as real prefix sharing.
Output: Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids).
"""
import argparse
import json
import math
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rate", type=float, required=True, help="mean arrival rate, req/s")
    ap.add_argument("--scale", type=float, default=0.125)
    ap.add_argument("--max-input", type=int, default=3072)
    ap.add_argument("--jitter", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    with open(a.trace) as f:
        rows = [json.loads(line) for i, line in enumerate(f) if a.start <= i < a.start + a.count]
    if len(rows) < 2:
        raise SystemExit("slice has fewer than 2 requests")
    rng = random.Random(a.seed)
    times = sorted(r["timestamp"] / 1000.0 + rng.uniform(0, a.jitter) for r in rows)
    t0 = times[0]
    span = times[-1] - t0
    gap_scale = (len(rows) - 1) / (a.rate * span) if span > 0 else 0.0
    block = 512 * a.scale
    out = []
    for r, t in zip(rows, times):
        n_in = min(max(1, round(r["input_length"] * a.scale)), a.max_input)
        n_out = max(1, round(r["output_length"] * a.scale))
        ids = r["hash_ids"][: math.ceil(n_in / block)]
        out.append({"timestamp": round((t - t0) * gap_scale * 1000.0, 3), "input_length": n_in,
                    "output_length": n_out, "hash_ids": ids})
    with open(a.out, "w") as f:
        for o in out:
            f.write(json.dumps(o) + "\n")
    ins = [o["input_length"] for o in out]
    outs = [o["output_length"] for o in out]
    print(f"{a.out}: {len(out)} requests over {out[-1]['timestamp'] / 1000:.1f} s, "
          f"input mean {sum(ins) / len(ins):.0f} (max {max(ins)}), output mean "
          f"{sum(outs) / len(outs):.1f}, block {block:g} tokens")


if __name__ == "__main__":
    main()
