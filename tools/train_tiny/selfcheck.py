#!/usr/bin/env python3
"""Checks that the model's execution paths agree (run before training; CPU is enough, ~1 min).

1. gdn_chunked (WY form) == gdn_recurrent (delta rule), float64, several lengths, chunk sizes,
   with and without an initial state.
2. Whole model: one parallel forward == prefill of a prefix + token-by-token decode with the
   recurrent state and KV cache (the engine's prefill/decode split), float64.
Exits non-zero on any mismatch.
"""
import sys

import torch

from model import Config, TinyHybridLM, gdn_chunked, gdn_recurrent


def check_gdn(device):
    worst = 0.0
    for T in (1, 5, 16, 17, 64, 100, 130):
        for chunk in (16, 64):
            for with_state in (False, True):
                B, H, dk, dv = 2, 3, 8, 12
                f64 = dict(dtype=torch.float64, device=device)
                q = torch.nn.functional.normalize(torch.randn(B, T, H, dk, **f64), dim=-1)
                k = torch.nn.functional.normalize(torch.randn(B, T, H, dk, **f64), dim=-1)
                v = torch.randn(B, T, H, dv, **f64)
                g = -torch.rand(B, T, H, **f64) * 2.0
                beta = torch.rand(B, T, H, **f64)
                S0 = torch.randn(B, H, dk, dv, **f64) if with_state else None
                o1, s1 = gdn_recurrent(q, k, v, g, beta, dk ** -0.5, S0)
                o2, s2 = gdn_chunked(q, k, v, g, beta, dk ** -0.5, S0, chunk=chunk)
                err = max((o1 - o2).abs().max().item(), (s1 - s2).abs().max().item())
                worst = max(worst, err)
                if not err < 1e-10:
                    sys.exit(f"gdn chunked != recurrent: T={T} chunk={chunk} state={with_state} err={err}")
    print(f"gdn chunked vs recurrent: max abs diff {worst:.3g}")


def check_model(device):
    c = Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               head_dim=16, intermediate_size=96, linear_num_key_heads=2, linear_num_value_heads=4,
               linear_key_head_dim=16, linear_value_head_dim=8)
    m = TinyHybridLM(c).to(device=device, dtype=torch.float64).eval()
    with torch.no_grad():
        for p in m.parameters():        # move every weight off its init value (norms start at 0/1)
            p.add_(torch.randn_like(p) * 0.1)
    ids = torch.randint(0, 260, (2, 90), device=device)
    with torch.no_grad():
        full, _ = m(ids)
        split = 70                      # prefill (chunked, 2 chunks) then decode one at a time
        pre, st = m(ids[:, :split])
        steps = [pre]
        for t in range(split, ids.shape[1]):
            lt, st = m(ids[:, t:t + 1], st, recurrent=True)
            steps.append(lt)
        inc = torch.cat(steps, dim=1)
    err = (full - inc).abs().max().item()
    if not err < 1e-9:
        sys.exit(f"model parallel != prefill+decode: {err}")
    print(f"model parallel vs prefill+decode: max abs diff {err:.3g}")
    # Gradients reach every parameter.
    m.train()
    loss = m(ids)[0].logsumexp(-1).mean()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if missing:
        sys.exit(f"no gradient for {missing}")
    print("gradients reach all parameters")


if __name__ == "__main__":
    torch.manual_seed(0)
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    check_gdn(dev)
    check_model(dev)
    print("selfcheck OK")
