#!/usr/bin/env python3
"""Measures the two ceilings every GPU kernel number is compared with (METHOD.md): a bf16 GEMM
8192^3 through torch (random data) and a 2 GiB device-to-device copy (bytes read + written).
Prints `RESULT kernel=ceiling_gemm_bf16 ...` and `RESULT kernel=ceiling_d2d_copy ...`."""
import torch


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, 5, 20)
    print(f"RESULT kernel=ceiling_gemm_bf16 shape=8192^3 ms={ms:.4f} tflops={2 * n ** 3 / ms / 1e9:.1f}",
          flush=True)
    del a, b
    nbytes = 2 << 30
    src = torch.randint(0, 255, (nbytes,), device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 3, 20)
    print(f"RESULT kernel=ceiling_d2d_copy shape=2GiB ms={ms:.4f} gbps={2 * nbytes / ms / 1e6:.0f}",
          flush=True)


if __name__ == "__main__":
    main()
