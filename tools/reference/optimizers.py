"""Reference values for nddr's Adam and AdamW (tests/train/optimizer_test.cpp): torch.optim.Adam
and torch.optim.AdamW, with and without amsgrad, on a small problem of four parameters in three
groups with their own lr and weight-decay multipliers, driven by SequentialLR(LinearLR,
CosineAnnealingLR) (linear warm-up then cosine, eta_min = 0 so that the multipliers scale the
whole curve exactly as nddr's lr_mult does).

The loss is L(theta) = sum(c * sin(theta)) with fixed c, so the gradient c * cos(theta) depends
on the parameters (the C++ test computes it the same way). Everything in float64.

Writes tests/data/optimizers.safetensors:
  init.<param>, coef.<param>              starting values and the coefficients c
  lr                                      (STEPS,) the scheduled lr of a multiplier-1 group
  <run>.step<k>.<param>                   parameters after step k (k = 1 .. STEPS)
  <run>.exp_avg_sq.<param>                v after the last step
with <run> in adam, adam_amsgrad, adamw, adamw_amsgrad. Metadata holds the hyper-parameters.

Run: /work/venv-optim/bin/python tools/reference/optimizers.py (any Python with torch).
"""
import math

import torch

from common import rng_tensor, save

STEPS = 7
BASE_LR = 0.05
WARMUP = 3
START_FACTOR = 0.25
T_MAX = 6  # longer than the 4 cosine steps of the run, so the rate never reaches 0
BETAS = (0.8, 0.95)
EPS = 1e-6
WEIGHT_DECAY = 0.1

# name, shape, group (lr_mult, weight_decay_mult)
PARAMS = [
    ("conv.weight", (3, 2, 2, 2), (1.0, 1.0)),
    ("conv.bias", (3,), (1.0, 1.0)),
    ("nddr.weight", (3, 6), (10.0, 0.5)),
    ("fc8.bias", (4,), (20.0, 0.0)),
]


def run(name, cls, amsgrad, init, coef):
    params = {n: init[n].clone().requires_grad_(True) for n, _, _ in PARAMS}
    groups = [{"params": [params[n]], "lr": BASE_LR * m[0], "weight_decay": WEIGHT_DECAY * m[1]}
              for n, _, m in PARAMS]
    opt = cls(groups, lr=BASE_LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
              amsgrad=amsgrad, foreach=False)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=START_FACTOR, end_factor=1.0,
                                             total_iters=WARMUP)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_MAX, eta_min=0.0)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[WARMUP])
    out, lrs = {}, []
    for k in range(1, STEPS + 1):
        lrs.append(opt.param_groups[1]["lr"])  # conv.bias: multiplier 1
        opt.zero_grad()
        loss = sum((coef[n] * torch.sin(params[n])).sum() for n, _, _ in PARAMS)
        loss.backward()
        opt.step()
        sched.step()
        for n, _, _ in PARAMS:
            out[f"{name}.step{k}.{n}"] = params[n].detach().clone()
    for n, _, _ in PARAMS:
        out[f"{name}.exp_avg_sq.{n}"] = opt.state[params[n]]["exp_avg_sq"].clone()
    return out, lrs


def main():
    gen = torch.Generator().manual_seed(20240518)
    init = {n: rng_tensor(gen, *s) for n, s, _ in PARAMS}
    coef = {n: rng_tensor(gen, *s, lo=-2.0, hi=2.0) for n, s, _ in PARAMS}
    tensors = {}
    for n, _, _ in PARAMS:
        tensors[f"init.{n}"] = init[n]
        tensors[f"coef.{n}"] = coef[n]
    lr_ref = None
    for name, cls, ams in [("adam", torch.optim.Adam, False),
                           ("adam_amsgrad", torch.optim.Adam, True),
                           ("adamw", torch.optim.AdamW, False),
                           ("adamw_amsgrad", torch.optim.AdamW, True)]:
        out, lrs = run(name, cls, ams, init, coef)
        tensors.update(out)
        assert lr_ref is None or lrs == lr_ref
        lr_ref = lrs
    tensors["lr"] = torch.tensor(lr_ref, dtype=torch.float64)
    assert not math.isnan(sum(lr_ref))
    save("optimizers", tensors, {
        "generator": "tools/reference/optimizers.py",
        "steps": STEPS, "base_lr": BASE_LR, "warmup": WARMUP, "start_factor": START_FACTOR,
        "t_max": T_MAX, "betas": f"{BETAS[0]},{BETAS[1]}", "eps": EPS,
        "weight_decay": WEIGHT_DECAY,
    })


if __name__ == "__main__":
    main()
