"""Reference values for the dense tasks (tests/networks/task_test.cpp): masked L1 and L2
regression (depth: target 0 or NaN = invalid), plain and class-balanced binary cross-entropy
(NaN = unlabelled), with PyTorch autograd for the gradients, and the depth and binary metrics
with NumPy. Run: /work/venv-optim/bin/python tools/reference/dense_tasks.py
Writes tests/data/dense_tasks.safetensors."""
import numpy as np
import torch
import torch.nn.functional as F

from common import save, rng_tensor

torch.set_default_dtype(torch.float64)
gen = torch.Generator().manual_seed(20261208)
t = {}


def masked_mean(per_element, mask):
    return per_element[mask].sum() / mask.sum()


# ---- depth: (2, 1, 4, 5), L1 and L2, invalid where the target is 0 or NaN ------------------
p = rng_tensor(gen, 2, 1, 4, 5, lo=0.2, hi=4.0)
g = rng_tensor(gen, 2, 1, 4, 5, lo=0.5, hi=3.5)
g[0, 0, 1, 2] = 0.0
g[0, 0, 3, 4] = 0.0
g[1, 0, 0, 0] = float("nan")
p[1, 0, 2, 1] = -0.3  # a negative prediction: fails every delta accuracy
mask = ~torch.isnan(g) & (g != 0)
t["depth.p"], t["depth.g"] = p.clone(), g.clone()
for name, fn in (("l1", F.l1_loss), ("l2", F.mse_loss)):
    x = p.clone().requires_grad_()
    loss = fn(x[mask], g[mask])  # mean over the valid elements
    loss.backward()
    t[f"depth.{name}.loss"] = loss.detach().reshape(1)
    t[f"depth.{name}.grad"] = x.grad

# ---- 3-channel regression, L2, NaN-only invalid ---------------------------------------------
p3 = rng_tensor(gen, 2, 3, 3, 4)
g3 = rng_tensor(gen, 2, 3, 3, 4)
g3[0, 1, 0, 0] = float("nan")
g3[1, 2, 2, 3] = float("nan")
g3[1, 0, 1, 1] = 0.0  # valid here
m3 = ~torch.isnan(g3)
x = p3.clone().requires_grad_()
loss = F.mse_loss(x[m3], g3[m3])
loss.backward()
t.update({"reg3.p": p3, "reg3.g": g3, "reg3.l2.loss": loss.detach().reshape(1),
          "reg3.l2.grad": x.grad})

# ---- binary: (2, 1, 4, 5) logits, targets 0/1 with NaN --------------------------------------
logits = rng_tensor(gen, 2, 1, 4, 5, lo=-4.0, hi=4.0)
target = (torch.rand(2, 1, 4, 5, generator=gen) < 0.3).double()
target[0, 0, 0, 1] = float("nan")
target[1, 0, 3, 3] = float("nan")
valid = ~torch.isnan(target)
pos, neg = valid & (target >= 0.5), valid & (target < 0.5)
t["bin.p"], t["bin.g"] = logits.clone(), target.clone()
x = logits.clone().requires_grad_()
bce = F.binary_cross_entropy_with_logits(x[valid], target[valid])
bce.backward()
t["bin.bce.loss"], t["bin.bce.grad"] = bce.detach().reshape(1), x.grad
# class-balanced: pixel weights n / (2 n_class), normalised by n (sklearn's "balanced")
x = logits.clone().requires_grad_()
n, n_pos, n_neg = valid.sum(), pos.sum(), neg.sum()
w = torch.zeros_like(target)
w[pos] = n / (2.0 * n_pos)
w[neg] = n / (2.0 * n_neg)
per = F.binary_cross_entropy_with_logits(x, torch.nan_to_num(target), reduction="none")
balanced = (w * per)[valid].sum() / n
balanced.backward()
t["bin.balanced.loss"], t["bin.balanced.grad"] = balanced.detach().reshape(1), x.grad

# ---- metrics with NumPy ---------------------------------------------------------------------
pn, gn = p.numpy().ravel(), g.numpy().ravel()
ok = ~np.isnan(gn) & (gn != 0)
e = pn[ok] - gn[ok]
ratio = np.where(pn[ok] > 0, np.maximum(pn[ok] / gn[ok], gn[ok] / np.where(pn[ok] > 0, pn[ok], 1)),
                 np.inf)
t["depth.metrics"] = torch.tensor([
    np.mean(np.abs(e)), np.mean(np.abs(e) / gn[ok]), np.sqrt(np.mean(e * e)),
    np.mean(ratio < 1.25), np.mean(ratio < 1.25 ** 2), np.mean(ratio < 1.25 ** 3)])
ln, tn = logits.numpy().ravel(), target.numpy().ravel()
ok = ~np.isnan(tn)
pred, truth = ln[ok] > 0, tn[ok] >= 0.5
tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
t["bin.metrics"] = torch.tensor([np.mean(pred == truth), tp / (tp + fp + fn),
                                 2 * tp / (2 * tp + fp + fn)])

save("dense_tasks", t, {"generator": "tools/reference/dense_tasks.py"})
