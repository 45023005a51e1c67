#!/usr/bin/env python3
"""Optional: compares model.py with HF transformers' Qwen3-Next (torch fallback path, float64, CPU).

Builds a small random model.py model, converts its weights to HF's interleaved Qwen3-Next layout
(in_proj_qkvz / in_proj_ba grouped per key head) with dense MLPs on every layer
(mlp_only_layers), and compares logits. Needs `transformers` (present on the GPU machine, not in CI).
"""
import sys

import torch

from model import Config, TinyHybridLM


def to_hf_interleaved(sd, c):
    out = {}
    hk, hv, dk, dv = c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim
    rep = hv // hk
    for name, w in sd.items():
        if name.endswith("linear_attn.in_proj_qkv.weight"):
            pre = name[: -len("in_proj_qkv.weight")]
            q, k, v = w.split([hk * dk, hk * dk, hv * dv], dim=0)
            z = sd[pre + "in_proj_z.weight"]
            groups = []
            for gi in range(hk):
                groups += [q[gi * dk:(gi + 1) * dk], k[gi * dk:(gi + 1) * dk],
                           v[gi * rep * dv:(gi + 1) * rep * dv], z[gi * rep * dv:(gi + 1) * rep * dv]]
            out[pre + "in_proj_qkvz.weight"] = torch.cat(groups, 0)
            b, a = sd[pre + "in_proj_b.weight"], sd[pre + "in_proj_a.weight"]
            out[pre + "in_proj_ba.weight"] = torch.cat(
                sum([[b[gi * rep:(gi + 1) * rep], a[gi * rep:(gi + 1) * rep]] for gi in range(hk)], []), 0)
        elif any(name.endswith(s) for s in ("in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight")):
            continue
        else:
            out[name] = w
    return out


def main():
    try:
        import transformers
        from transformers import Qwen3NextConfig, Qwen3NextForCausalLM
    except Exception as e:  # noqa: BLE001
        print(f"hf_crosscheck skipped: {e}")
        return 0
    torch.manual_seed(0)
    c = Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
               intermediate_size=96, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
               linear_value_head_dim=8, partial_rotary_factor=0.25, rope_theta=10000.0)
    m = TinyHybridLM(c).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = c.to_hf()
    hf.pop("tokenizer")
    hf.update(mlp_only_layers=list(range(c.num_hidden_layers)), num_experts=4, num_experts_per_tok=2,
              moe_intermediate_size=32, shared_expert_intermediate_size=32, decoder_sparse_step=1,
              rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta,
                               "partial_rotary_factor": c.partial_rotary_factor})
    cfg = Qwen3NextConfig(**hf)
    cfg._attn_implementation = "eager"
    ref = Qwen3NextForCausalLM(cfg).double().eval()
    missing, unexpected = ref.load_state_dict(to_hf_interleaved(m.state_dict(), c), strict=False)
    print(f"transformers {transformers.__version__}: missing {missing}, unexpected {unexpected}")
    ids = torch.randint(0, 260, (2, 150))
    with torch.no_grad():
        a = m(ids)[0]
        b = ref(input_ids=ids).logits
    err = ((a - b).abs().max() / b.abs().max()).item()
    print(f"model.py vs HF Qwen3Next logits: max abs diff / max |logit| = {err:.3g}")
    # HF's torch fallbacks (chunk_gated_delta_rule, RMSNorm) compute in float32 even for a float64
    # model, so agreement is ~1e-5, not 1e-12; a semantic mismatch shows up as 1e-2 or more.
    return 0 if err < 1e-4 and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
