#!/usr/bin/python3
"""Service times implied by a single-prefill-server run, against the profile's prediction.

Usage: service_times.py REQUESTS_JSONL PROFILE_JSON
For a configuration whose every prefill ran on one FIFO worker (homogeneous, all-remote), request
i's prefill can start no earlier than its send time and the previous request's first token, so
s_i = ttft_point_i - max(send_i, ttft_point_{i-1}) bounds its service time (router, prefill and
first-token hops included). Prints the sum of the s_i against the sum of the profile's T(L_i),
i.e. how fast the workers really ran during the run relative to when they were profiled.
"""
import json
import sys


def interp(points, x):
    pts = sorted(points)
    if x <= pts[0][0]:
        (x0, y0), (x1, y1) = pts[0], pts[1]
    elif x >= pts[-1][0]:
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
    else:
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= x <= x1:
                break
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def main():
    reqs = [json.loads(line) for line in open(sys.argv[1])]
    prof = json.load(open(sys.argv[2]))
    pts = [(p["tokens"], p["seconds"]) for p in prof["prefill"]]
    reqs = sorted((r for r in reqs if r["ok"]), key=lambda r: r["start_s"] + r["ttft_s"])
    prev = 0.0
    implied, predicted, rows = 0.0, 0.0, []
    for r in reqs:
        done = r["start_s"] + r["ttft_s"]
        s = done - max(r["start_s"], prev)
        prev = done
        t = interp(pts, r["prompt_tokens"])
        implied += s
        predicted += t
        rows.append((r["prompt_tokens"], s, t))
    print(f"requests {len(rows)}: implied service {implied:.1f} s, profile {predicted:.1f} s, "
          f"ratio {implied / predicted:.2f}")
    busy_span = reqs[-1]["start_s"] + reqs[-1]["ttft_s"] - reqs[0]["start_s"]
    print(f"prefill server busy {implied / busy_span:.0%} of the run")


if __name__ == "__main__":
    main()
