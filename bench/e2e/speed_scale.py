#!/usr/bin/python3
"""How fast a prefill worker really computed during a run, relative to its profile.

Usage: speed_scale.py WORKER_METRICS PROFILE_JSON   (prints one number)
The worker's own counters give the time its engine spent in prefill forward passes
(prfaas_engine_forward_seconds{phase="prefill"}: compute only, no queueing), the prompt tokens it
computed and the requests it prefilled. The profile, fitted as T(L) = a + b*L by least squares,
predicts count*a + b*tokens for the same work. The ratio is the speed the machine gave the worker
during the run (other processes on the shared cores) relative to when it was profiled; 1.0 when it
computed nothing. It uses no latency or throughput the comparison is about, only compute time.
(prfaas_worker_prefill_duration_seconds is not usable here: it starts at KV admission, so it also
counts the wait behind earlier prompts in the engine loop.)
"""
import json
import re
import sys


def metric(text, name, labels=""):
    pattern = r"^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    m = re.search(pattern + r" ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    text = open(sys.argv[1]).read()
    prof = json.load(open(sys.argv[2]))
    secs = metric(text, "prfaas_engine_forward_seconds_sum", 'phase="prefill"')
    count = metric(text, "prfaas_worker_prefill_duration_seconds_count")
    tokens = metric(text, "prfaas_worker_prefill_tokens_total")
    if count == 0:
        print("1.0")
        return
    pts = [(p["tokens"], p["seconds"]) for p in prof["prefill"]]
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    a = my - b * mx
    print(f"{secs / (count * a + b * tokens):.3f}")


if __name__ == "__main__":
    main()
