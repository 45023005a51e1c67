#!/usr/bin/env python3
"""Peer for bench_gdn: flash-linear-attention's Triton chunk_gated_delta_rule at the same shapes
and shape keys as bench/gpu/bench_gdn.cu (Qwen3-Next GDN: 16 key heads, 32 value heads, d = 128).

fla is asked for exactly the work our gdn_chunk_prefill does: q/k L2-normalised in the kernel,
the gate -exp(A_log) * softplus(a + dt_bias) and sigmoid(b) computed in the kernel, fp32 initial
states read and final states returned, varlen through cu_seqlens. Also measures the two ceilings
(a bf16 8192^3 GEMM and a 2 GiB device-to-device copy through torch) in the same process when
given --ceilings (bench/gpu/run.sh measures them itself with ceilings.py).
fla is not vendored: put its checkout on PYTHONPATH (see bench/results/gpu-kernels.md).
Prints `RESULT kernel=... shape=... ms=... tflops=... gbps=...` lines (event-timed medians).
"""
import math
import sys
from pathlib import Path

import torch

# One timing helper and one ceiling measurement for every GPU benchmark script (bench/gpu).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ceilings  # noqa: E402
from ceilings import median_ms  # noqa: E402

HK, HV, D, C = 16, 32, 128, 64


def report(kernel, shape, ms, flops, nbytes):
    print(f"RESULT kernel={kernel} shape={shape} ms={ms:.4f} tflops={flops / ms * 1e-9:.2f} "
          f"gbps={nbytes / ms * 1e-6:.1f}", flush=True)


def chunk_flops(lens):
    chunks = sum((l + C - 1) // C for l in lens)
    return chunks * HV * (2 * C * C * 5 * D + 6 * C * D * D)


def bench_fla(name, lens, gen):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    t, n = sum(lens), len(lens)
    dev, bf = "cuda", torch.bfloat16
    q = torch.rand(1, t, HK, D, device=dev, generator=gen).mul_(2).sub_(1).to(bf)
    k = torch.rand(1, t, HK, D, device=dev, generator=gen).mul_(2).sub_(1).to(bf)
    v = torch.rand(1, t, HV, D, device=dev, generator=gen).mul_(2).sub_(1).to(bf)
    a = torch.rand(1, t, HV, device=dev, generator=gen).mul_(-6).to(bf)
    b = torch.rand(1, t, HV, device=dev, generator=gen).mul_(6).sub_(3).to(bf)
    a_log = torch.rand(HV, device=dev, generator=gen).mul_(1.5)
    dt_bias = torch.rand(HV, device=dev, generator=gen).mul_(0.6).sub_(0.3)
    h0 = torch.rand(n, HV, D, D, device=dev, generator=gen).sub_(0.5)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), device=dev,
                      dtype=torch.long)
    cu_cpu = cu.cpu()

    def run():
        return chunk_gated_delta_rule(
            q, k, v, a, b, scale=1.0 / math.sqrt(D), initial_state=h0, output_final_state=True,
            use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=a_log, dt_bias=dt_bias,
            use_beta_sigmoid_in_kernel=True, cu_seqlens=cu if n > 1 else None,
            cu_seqlens_cpu=cu_cpu if n > 1 else None)

    with torch.no_grad():
        o, ht = run()
        torch.cuda.synchronize()
        if not torch.isfinite(o.float()).all():
            print(f"fla {name}: non-finite output", file=sys.stderr)
        ms = median_ms(run, 3, 15)
    nbytes = 2.0 * t * (2 * HK * D + 2 * HV * D + 2 * HV) + 8.0 * n * HV * D * D
    report("fla_chunk_gated_delta_rule", f"{name}_T{t}_N{n}", ms, chunk_flops(lens), nbytes)


def main():
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    if "--ceilings" in sys.argv[1:]:
        ceilings.main()
    for name, lens in [("b1", [4096]), ("b1", [16384]), ("b1", [65536]),
                       ("varlen8", [3000, 1024, 4096, 777, 2048, 1500, 2560, 1379])]:
        try:
            bench_fla(name, lens, gen)
        except Exception as e:  # report and go on: the other shapes still compare
            print(f"fla {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
