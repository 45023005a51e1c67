"""Writes the shipped model and the reference data the C++ engine is tested against.

  config.json        HF Qwen3-Next keys (model.Config.to_hf)
  model.safetensors  every tensor in bf16, HF names (split Qwen3.5-style GDN projections)
  reference.json     logits for fixed prompts and a greedy continuation, computed in float32
                     on the CPU by model.py FROM THE bf16-ROUNDED WEIGHTS (read back from the file)

The safetensors writer/reader is a few lines of stdlib + torch so the format is visible here;
when the `safetensors` package is installed the file is also read back with it as a check.
"""
import json
import math
import struct

import torch

from model import Config, TinyHybridLM

# Prompts whose logits are stored. Token ids are stored too, so the C++ test needs no tokenizer.
# The third one spans three 64-token GDN chunks; the fourth has non-ASCII bytes and special ids.
PROMPTS = [
    list(b"In the beginning"),
    list(b"And God said, Let there be light"),
    list(b"Psalms 23\n1 The LORD is my shepherd; I shall not want.\n2 He maketh me to lie down in "
         b"green pastures: he leadeth me beside the still waters.\n3 He restoreth my soul:"),
    [256] + list("prfaas \u00fc\u20ac\t{\"x\": 42}\n".encode("utf-8")) + [257] + list(b"Amen"),
]
GREEDY_PROMPT = b"In the beginning"
GREEDY_NEW_TOKENS = 64


def write_safetensors(tensors, path, metadata=None):
    """tensors: {name: bf16 CPU tensor}. Names sorted; data 8-byte aligned after the header."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        assert t.dtype == torch.bfloat16, name
        data = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns {name: bf16 tensor}. Only what write_safetensors produces (BF16)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    buf = raw[8 + n:]
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "BF16", name
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(buf[b:e]), dtype=torch.int16).view(torch.bfloat16)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_model(cfg, tensors, dtype):
    m = TinyHybridLM(cfg)
    m.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return m.to(dtype).eval()


@torch.no_grad()
def greedy(model, prompt_ids, n_new):
    """Greedy continuation by prefill + recurrent decode (the engine's path).
    Returns (new ids, smallest top1-top2 logit gap seen)."""
    ids = torch.tensor([prompt_ids])
    logits, st = model(ids)
    out, margin = [], math.inf
    for _ in range(n_new):
        last = logits[0, -1]
        top2 = torch.topk(last, 2).values
        margin = min(margin, (top2[0] - top2[1]).item())
        nxt = int(torch.argmax(last))
        out.append(nxt)
        logits, st = model(torch.tensor([[nxt]]), st, recurrent=True)
    return out, margin


@torch.no_grad()
def greedy_full_recompute(model, prompt_ids, n_new):
    ids = list(prompt_ids)
    for _ in range(n_new):
        ids.append(int(torch.argmax(model(torch.tensor([ids]))[0][0, -1])))
    return ids[len(prompt_ids):]


@torch.no_grad()
def sample(model, prompt, n_new, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    logits, st = model(torch.tensor([list(prompt)]))
    out = []
    for _ in range(n_new):
        p = torch.softmax(logits[0, -1, :256].double() / temperature, -1)   # bytes only
        nxt = int(torch.multinomial(p, 1, generator=gen))
        out.append(nxt)
        logits, st = model(torch.tensor([[nxt]]), st, recurrent=True)
    return bytes(out).decode("utf-8", errors="replace")


def export(cfg: Config, state_dict, out_dir, extra_card=None):
    """state_dict: trained float weights. Writes config.json, model.safetensors, reference.json,
    samples.txt into out_dir. Returns a summary dict."""
    cfg = Config(**{**cfg.__dict__, "dropout": 0.0})
    tensors = {k: v.detach().to("cpu", torch.bfloat16) for k, v in state_dict.items()}
    st_path = f"{out_dir}/model.safetensors"
    write_safetensors(tensors, st_path, {"format": "pt"})
    with open(f"{out_dir}/config.json", "w") as f:
        json.dump(cfg.to_hf(), f, indent=2)
        f.write("\n")

    back = read_safetensors(st_path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in back)
    try:
        from safetensors.torch import load_file
        lib = load_file(st_path)
        assert set(lib) == set(back) and all(torch.equal(lib[k], back[k]) for k in back)
        print("safetensors library reads the file back identically")
    except ImportError:
        pass

    m32 = load_model(cfg, back, torch.float32)
    m64 = load_model(cfg, back, torch.float64)
    ref = {"description": "float32 CPU logits of tools/train_tiny/model.py from the bf16 weights in "
                          "model.safetensors; logits[i] is the next-token distribution after "
                          "ids[0..positions[i]]",
           "compute_dtype": "float32", "prompts": []}
    worst_fp64 = 0.0
    with torch.no_grad():
        for ids in PROMPTS:
            n = len(ids)
            pos = sorted({0, n // 2, n - 1})
            l32 = m32(torch.tensor([ids]))[0][0]
            l64 = m64(torch.tensor([ids]))[0][0]
            rel = ((l32.double() - l64).norm(dim=-1) / l64.norm(dim=-1)).max().item()
            worst_fp64 = max(worst_fp64, rel)
            ref["prompts"].append({
                "text": bytes(i for i in ids if i < 256).decode("utf-8", errors="replace"),
                "ids": ids, "positions": pos,
                "logits": [[float(x) for x in l32[p].tolist()] for p in pos]})
    ref["fp32_vs_fp64_max_rel_l2"] = worst_fp64

    g32, margin = greedy(m32, list(GREEDY_PROMPT), GREEDY_NEW_TOKENS)
    g32_full = greedy_full_recompute(m32, list(GREEDY_PROMPT), GREEDY_NEW_TOKENS)
    g64, _ = greedy(m64, list(GREEDY_PROMPT), GREEDY_NEW_TOKENS)
    ref["greedy"] = {"prompt": GREEDY_PROMPT.decode(), "prompt_ids": list(GREEDY_PROMPT),
                     "new_tokens": GREEDY_NEW_TOKENS, "ids": g32,
                     "text": bytes(i for i in g32 if i < 256).decode("utf-8", errors="replace"),
                     "min_top1_top2_margin": margin,
                     "fp32_full_recompute_agrees": g32_full == g32, "fp64_agrees": g64 == g32}
    with open(f"{out_dir}/reference.json", "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")

    samples = []
    for prompt in (b"In the beginning", b"And Jesus said", b"Psalms 23\n1 The LORD is my shepherd"):
        g, _ = greedy(m32, list(prompt), 240)
        samples.append(f"--- greedy, prompt {prompt!r}\n{prompt.decode()}{bytes(i for i in g if i < 256).decode('utf-8', 'replace')}\n")
        samples.append(f"--- temperature 0.8, seed 1, prompt {prompt!r}\n{prompt.decode()}{sample(m32, prompt, 240, 0.8, 1)}\n")
    with open(f"{out_dir}/samples.txt", "w") as f:
        f.write("".join(samples))
    n_params = sum(v.numel() for v in tensors.values())
    summary = {"params": n_params, "safetensors_bytes": sum(v.numel() * 2 for v in tensors.values()),
               "greedy_text": ref["greedy"]["text"], "greedy_margin": margin,
               "greedy_fp32_full_recompute_agrees": g32_full == g32, "greedy_fp64_agrees": g64 == g32,
               "fp32_vs_fp64_max_rel_l2": worst_fp64}
    print(json.dumps(summary, indent=1))
    print("".join(samples))
    return summary
