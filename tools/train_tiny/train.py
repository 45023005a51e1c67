#!/usr/bin/env python3
"""Trains the embedded default model (models/kjv-tiny) on the King James Bible, bytes as tokens.

  python3 extract_kjv.py DATA_DIR            # train.txt / val.txt (needs Debian's bible-kjv)
  python3 train.py --data DATA_DIR --out OUT_DIR [--steps N] [--batch B] [--seq T] ...

Plain PyTorch, one GPU (falls back to CPU for a smoke test). Random windows of the training text,
AdamW, warmup + cosine decay, bf16 autocast (the GDN recurrence itself runs in fp32). Every
--eval-every steps it measures bits per byte on the whole validation set and on a fixed sample
of the training set (both without dropout) and keeps the weights with the best validation bpb;
those are exported (export.py) with reference logits for the C++ engine's agreement test.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from export import export
from model import Config, TinyHybridLM

LN2 = math.log(2.0)


def load_bytes(path, device):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).to(device)


def windows(data, starts, T):
    idx = starts[:, None] + torch.arange(T + 1, device=data.device)[None, :]
    w = data[idx].long()
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def bits_per_byte(model, data, starts, T, batch, amp):
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        x, y = windows(data, starts[i:i + batch], T)
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)[0]
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count / LN2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-minutes", type=float, default=9.0, help="stop early (and say so) past this")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--max-eval-windows", type=int, default=0, help="0: the whole validation set")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=640)
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args()

    t_start = time.time()
    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)

    cfg = Config(hidden_size=args.hidden, intermediate_size=args.intermediate,
                 num_hidden_layers=args.layers, dropout=args.dropout)
    model = TinyHybridLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {torch.cuda.get_device_name() if amp else 'cpu'}, torch {torch.__version__}, "
          f"params {n_params} ({n_params * 2 / 1e6:.2f} MB in bf16)", flush=True)

    train = load_bytes(os.path.join(args.data, "train.txt"), dev)
    val = load_bytes(os.path.join(args.data, "val.txt"), dev)
    T = args.seq
    val_starts = torch.arange(0, len(val) - T - 1, T, device=dev)            # the whole val set
    if args.max_eval_windows:
        val_starts = val_starts[:args.max_eval_windows]
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    train_eval_starts = torch.randint(0, len(train) - T - 1, (len(val_starts),), generator=g).to(dev)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if amp else {}))
    fwd = torch.compile(model) if args.compile else model

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    log_path = os.path.join(args.out, "train_log.jsonl")
    log = open(log_path, "w")
    best = {"val_bpb": math.inf}
    best_state = None
    running, running_n = 0.0, 0
    t_train = time.time()
    t_mark, step_mark = t_train, 0
    stopped_early = False
    step = 0
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            if amp:
                torch.cuda.synchronize()
            step_s = (time.time() - t_mark) / max(1, step - step_mark)
            vb = bits_per_byte(model, val, val_starts, T, 64, amp)
            tb = bits_per_byte(model, train, train_eval_starts, T, 64, amp)
            rec = {"step": step, "elapsed_s": round(time.time() - t_train, 1), "lr": lr_at(step),
                   "step_ms": round(1000 * step_s, 2),
                   "train_running_bpb": running / running_n / LN2 if running_n else None,
                   "train_bpb": tb, "val_bpb": vb, "tokens": step * args.batch * T}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            running, running_n = 0.0, 0
            t_mark, step_mark = time.time(), step
            if vb < best["val_bpb"]:
                best = rec
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if step == args.steps:
            break
        if time.time() - t_start > args.max_minutes * 60:
            stopped_early = True
            print(f"stopping early at step {step}: past --max-minutes", flush=True)
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        x, y = windows(train, torch.randint(0, len(train) - T - 1, (args.batch,), device=dev), T)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = fwd(x)[0]
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item() if step % 10 == 0 else 0.0
        running_n += 1 if step % 10 == 0 else 0
    train_s = time.time() - t_train

    summary = {"args": vars(args), "params": n_params, "best": best, "train_seconds": round(train_s, 1),
               "steps_done": step, "stopped_early": stopped_early,
               "device": torch.cuda.get_device_name() if amp else "cpu", "torch": torch.__version__}
    print("training done:", json.dumps(summary), flush=True)
    summary["export"] = export(cfg, best_state, args.out)
    summary["total_seconds"] = round(time.time() - t_start, 1)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"total wall time {summary['total_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
