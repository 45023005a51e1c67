#!/usr/bin/env python3
"""Peer for bench_attention: PyTorch scaled_dot_product_attention, flash backend (FlashAttention-2
inside PyTorch), causal, bf16, at the same shapes and shape keys as bench/gpu/bench_attention.cu.

GQA (16 q heads over 2 kv heads) is passed as `enable_gqa=True` when the flash backend accepts it;
otherwise K/V are expanded with repeat_interleave outside the timed region (printed as gqa=...).
The varlen batch runs one SDPA call per sequence inside one timed region (SDPA has no varlen
entry point). FLOPs are counted like ours: 4 * head_dim * q_heads * sum T(T+1)/2.
Also prints the cuDNN backend at 16K for reference (not the target peer).
Prints `RESULT kernel=sdpa_flash shape=... ms=... tflops=... gqa=...` lines (event-timed medians).
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# One timing helper and one ceiling measurement for every GPU benchmark script (bench/gpu).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ceilings import median_ms  # noqa: E402

Q_HEADS, KV_HEADS = 16, 2


def make(t, d, gen):
    q = torch.randn(1, Q_HEADS, t, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, KV_HEADS, t, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, KV_HEADS, t, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    return q, k, v


def call_for(backend, q, k, v):
    """Returns (fn, gqa_mode) running SDPA on the given backend, or raises if it cannot."""
    def gqa():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    try:
        gqa()
        torch.cuda.synchronize()
        return gqa, "enable_gqa"
    except RuntimeError:
        pass
    rep = Q_HEADS // KV_HEADS
    ke, ve = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)

    def expanded():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
    expanded()
    torch.cuda.synchronize()
    return expanded, "repeat_interleave"


def bench(kernel, backend, shape, lens, d, reps):
    gen = torch.Generator(device="cuda").manual_seed(0)
    calls, mode = [], None
    for t in lens:
        fn, mode = call_for(backend, *make(t, d, gen))
        calls.append(fn)

    def run():
        for fn in calls:
            fn()
    ms = median_ms(run, 2, reps)
    flops = sum(4.0 * d * Q_HEADS * t * (t + 1) / 2 for t in lens)
    print(f"RESULT kernel={kernel} shape={shape} ms={ms:.4f} tflops={flops / (ms * 1e-3) / 1e12:.1f} "
          f"gqa={mode}", flush=True)


def main():
    if not torch.cuda.is_available():
        print("sdpa.py: no CUDA device")
        return 0
    print(f"# device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    flash = SDPBackend.FLASH_ATTENTION
    bench("sdpa_flash", flash, "T4096_b1_hd256", [4096], 256, 20)
    bench("sdpa_flash", flash, "T16384_b1_hd256", [16384], 256, 10)
    bench("sdpa_flash", flash, "T65536_b1_hd256", [65536], 256, 3)
    bench("sdpa_flash", flash, "T16384_b1_hd128", [16384], 128, 10)
    bench("sdpa_flash", flash, "varlen8_T20480_hd256", [4096, 1024, 8192, 2048, 512, 3072, 256, 1280],
          256, 10)
    try:
        bench("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION, "T16384_b1_hd256", [16384], 256, 10)
    except RuntimeError as e:  # informational only
        print(f"# sdpa_cudnn unavailable: {e}".splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
