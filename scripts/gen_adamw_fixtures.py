#!/usr/bin/python3
"""AdamW fixtures from PyTorch: test/fixtures/adamw.json.

Run with Debian's python3 and its python3-torch (1.13, CPU):

    /usr/bin/python3 scripts/gen_adamw_fixtures.py

A few small fp32 parameters with seeded random init and 100 steps of seeded random
float32 gradients (stored explicitly, shared by every config), run through
torch.optim.AdamW in float32 (foreach=False: the single-tensor formula), for several
configs (lr, betas, weight decay; the bias gets no decay through a second param group;
one config also skips a param's gradient on some steps, as when it gets no grad).
The params after steps 1, 10 and 100 are recorded. Floats are written with the shortest
text that reads back as the same float32.
"""
import json
import os

import numpy as np
import torch

STEPS = 100
SNAPSHOTS = [1, 10, 100]
PARAMS = [
    ("encoder.dense.weight", [7, 5]),
    ("encoder.dense.bias", [5]),
    ("adapter.up.weight", [3, 4, 2]),
]
NO_DECAY = ["encoder.dense.bias"]
CONFIGS = [
    {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.01},
    {"lr": 5e-2, "betas": [0.8, 0.95], "eps": 1e-8, "weightDecay": 0.01},
    {"lr": 1e-3, "betas": [0.8, 0.95], "eps": 1e-8, "weightDecay": 0.0},
    {"lr": 5e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.0},
    # a param without a gradient on some steps: skipped, its own step count does not advance
    {"lr": 5e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.01,
     "skip": [[s, "adapter.up.weight"] for s in range(STEPS) if s % 7 == 3]},
]


def f32(values):
    """Shortest decimal text that reads back as the same float32, as JSON numbers."""
    return [float(repr(np.float32(v))) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def main():
    gen = torch.Generator().manual_seed(20240611)
    init = {name: torch.randn(shape, generator=gen, dtype=torch.float32) * 0.5 for name, shape in PARAMS}
    grads = []
    for s in range(STEPS):
        # a different scale every step (and an occasional tiny one), float32 draws
        scale = float(torch.empty(1).uniform_(0.05, 2.0, generator=gen)) * (1e-3 if s % 17 == 5 else 1.0)
        grads.append({name: torch.randn(shape, generator=gen, dtype=torch.float32) * scale for name, shape in PARAMS})

    configs = []
    for cfg in CONFIGS:
        params = {name: init[name].clone().requires_grad_(True) for name, _ in PARAMS}
        decayed = [params[n] for n, _ in PARAMS if n not in NO_DECAY]
        plain = [params[n] for n in NO_DECAY]
        opt = torch.optim.AdamW(
            [{"params": decayed, "weight_decay": cfg["weightDecay"]}, {"params": plain, "weight_decay": 0.0}],
            lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], foreach=False)
        skip = {(s, n) for s, n in cfg.get("skip", [])}
        snaps = {}
        for s in range(STEPS):
            for name, p in params.items():
                p.grad = None if (s, name) in skip else grads[s][name].clone()
            opt.step()
            if s + 1 in SNAPSHOTS:
                snaps[str(s + 1)] = {name: f32(p.detach()) for name, p in params.items()}
        out = dict(cfg)
        out["noDecay"] = NO_DECAY
        out["snapshots"] = snaps
        configs.append(out)

    fixture = {
        "generator": "scripts/gen_adamw_fixtures.py",
        "torch": torch.__version__,
        "steps": STEPS,
        "params": [{"name": n, "shape": shape, "init": f32(init[n])} for n, shape in PARAMS],
        "grads": [{n: f32(g[n]) for n, _ in PARAMS} for g in grads],
        "configs": configs,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "adamw.json")
    with open(path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
