#!/usr/bin/env python3
"""Recomputes models/kjv-tiny/reference.json from the shipped weights and compares (CPU, seconds).

  python3 verify_reference.py [MODEL_DIR]

Useful after touching model.py, or to check that another PyTorch build reproduces the reference
(float32 summation order differs between builds, so agreement is ~1e-6, not bit-exact).
"""
import json
import sys

import torch

from export import GREEDY_NEW_TOKENS, greedy, load_model, read_safetensors
from model import Config


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "../../models/kjv-tiny"
    cfg = Config.from_hf(json.load(open(f"{d}/config.json")))
    ref = json.load(open(f"{d}/reference.json"))
    m = load_model(cfg, read_safetensors(f"{d}/model.safetensors"), torch.float32)
    worst = 0.0
    with torch.no_grad():
        for p in ref["prompts"]:
            logits = m(torch.tensor([p["ids"]]))[0][0]
            for pos, want in zip(p["positions"], p["logits"]):
                want = torch.tensor(want, dtype=torch.float64)
                err = ((logits[pos].double() - want).abs().max() / want.abs().max()).item()
                worst = max(worst, err)
    ids, margin = greedy(m, ref["greedy"]["prompt_ids"], GREEDY_NEW_TOKENS)
    same = ids == ref["greedy"]["ids"]
    print(f"max rel error {worst:.3g}; greedy {'matches' if same else 'DIFFERS'} (min margin {margin:.3g}): "
          f"{bytes(ids).decode('utf-8', 'replace')!r}")
    return 0 if worst < 1e-4 and same else 1


if __name__ == "__main__":
    sys.exit(main())
