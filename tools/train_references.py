"""Reference numbers for qformer/src/train (AdamW parity, LAVIS LR schedule).

Run: python tools/train_references.py   (torch==2.9.1, CPU)
Writes tests/fixtures/train/adamw_torch.json, read by qformer/src/train/optim.rs tests.

AdamW: torch.optim.AdamW with two parameter groups (weight_decay 0.05 / 0.0), betas (0.9, 0.98),
eps 1e-8, a different lr at each of 5 steps (set on every group, as LAVIS's scheduler does), and
explicit gradients (no model). At step 3 parameter "b" has no gradient (p.grad = None), so torch
skips it and its per-parameter step count lags behind.
"""
import json
import math
import os

import torch

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train", "adamw_torch.json")

shapes = {"w": (4, 3), "b": (3,), "temp": (), "query_tokens": (1, 2, 3)}
decay = {"w": True, "b": False, "temp": True, "query_tokens": True}
params = {n: torch.nn.Parameter(torch.randn(s, dtype=torch.float32)) for n, s in shapes.items()}
with torch.no_grad():
    params["temp"].fill_(0.07)

lrs = [1e-3, 5e-3, 1e-2, 2e-2, 7.5e-3]
cfg = dict(betas=(0.9, 0.98), eps=1e-8, weight_decay=0.05)
groups = [
    {"params": [params[n] for n in shapes if decay[n]], "weight_decay": 0.05},
    {"params": [params[n] for n in shapes if not decay[n]], "weight_decay": 0.0},
]
opt = torch.optim.AdamW(groups, lr=lrs[0], betas=cfg["betas"], eps=cfg["eps"], foreach=False)

init = {n: p.detach().clone().reshape(-1).tolist() for n, p in params.items()}
grads_log, expected = [], []
for step, lr in enumerate(lrs):
    for g in opt.param_groups:
        g["lr"] = lr
    grads = {}
    for n, p in params.items():
        if step == 2 and n == "b":
            p.grad = None
            continue
        # Mixed magnitudes, including tiny ones where eps matters.
        g = torch.randn(shapes[n], dtype=torch.float32) * (10.0 ** (step - 2))
        if g.dim() > 0:
            g.view(-1)[0] = 1e-9
        p.grad = g
        grads[n] = g.reshape(-1).tolist()
    opt.step()
    grads_log.append(grads)
    expected.append({n: p.detach().reshape(-1).tolist() for n, p in params.items()})

final_state = {}
for n, p in params.items():
    st = opt.state[p]
    final_state[n] = {
        "exp_avg": st["exp_avg"].reshape(-1).tolist(),
        "exp_avg_sq": st["exp_avg_sq"].reshape(-1).tolist(),
        "step": int(st["step"].item()),
    }

fixture = {
    "generator": "tools/train_references.py",
    "torch_version": torch.__version__,
    "betas": list(cfg["betas"]),
    "eps": cfg["eps"],
    "weight_decay": cfg["weight_decay"],
    "lrs": lrs,
    "params": {n: {"shape": list(shapes[n]), "decay": decay[n], "init": init[n]} for n in shapes},
    "grads": grads_log,
    "expected": expected,
    "final_state": final_state,
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(fixture, f, indent=1)
print("wrote", os.path.normpath(OUT))

# LAVIS lavis/common/optims.py, pretrain_stage1 values: the literals in schedule.rs tests.
warm = lambda i: min(1e-4, 1e-6 + (1e-4 - 1e-6) * i / max(5000, 1))
cos = lambda e: (1e-4 - 1e-5) * 0.5 * (1.0 + math.cos(math.pi * e / 10)) + 1e-5
print("warmup", [repr(warm(i)) for i in (0, 1, 2500, 4999, 5000, 9000)])
print("cosine", [repr(cos(e)) for e in (1, 5, 9)])
