"""Reference values for channel concat, linear, L2-normalize and the two losses
(tests/ops/{concat,linear,l2_normalize,loss}_test.cpp).
Run: /usr/bin/python3 tools/reference/misc_ops.py
Labels are stored as float64 (the C++ test casts them to int32)."""
import torch
import torch.nn.functional as F

from common import save, rng_tensor

torch.set_default_dtype(torch.float64)
gen = torch.Generator().manual_seed(20190616)
t = {}

# ---- torch.cat along channels, K = 3, unequal channel counts --------------------------------
xs = [rng_tensor(gen, 2, c, 3, 4) for c in (2, 3, 1)]
for k, x in enumerate(xs):
    t[f"concat.x{k}"] = x
t["concat.y"] = torch.cat(xs, dim=1)

# ---- F.linear: rank-4 input with bias, rank-2 input without ----------------------------------
x = rng_tensor(gen, 3, 2, 2, 3).requires_grad_()
w = rng_tensor(gen, 5, 12).requires_grad_()
b = rng_tensor(gen, 5).requires_grad_()
y = F.linear(x.flatten(1), w, b)
dy = rng_tensor(gen, 3, 5)
y.backward(dy)
t.update({"linear4.x": x, "linear4.w": w, "linear4.b": b, "linear4.y": y.reshape(3, 5, 1, 1),
          "linear4.dy": dy.reshape(3, 5, 1, 1), "linear4.dx": x.grad, "linear4.dw": w.grad,
          "linear4.db": b.grad})
x = rng_tensor(gen, 4, 6).requires_grad_()
w = rng_tensor(gen, 3, 6).requires_grad_()
y = F.linear(x, w)
dy = rng_tensor(gen, 4, 3)
y.backward(dy)
t.update({"linear2.x": x, "linear2.w": w, "linear2.y": y, "linear2.dy": dy,
          "linear2.dx": x.grad, "linear2.dw": w.grad})

# ---- F.normalize(dim=1): one zero pixel and one pixel with norm below eps --------------------
x = rng_tensor(gen, 2, 4, 3, 3) * 2.0
x[0, :, 1, 1] = 0.0
x[1, :, 2, 0] = torch.tensor([1e-13, -2e-13, 3e-13, 0.5e-13])
x.requires_grad_()
y = F.normalize(x, dim=1, eps=1e-12)
dy = rng_tensor(gen, 2, 4, 3, 3)
y.backward(dy)
t.update({"l2n.x": x, "l2n.y": y, "l2n.dy": dy, "l2n.dx": x.grad})

# ---- softmax cross-entropy, ignore_index 255, rank 4 and rank 2 ------------------------------
logits = (rng_tensor(gen, 2, 5, 3, 4) * 3.0).requires_grad_()
labels = torch.randint(0, 5, (2, 3, 4), generator=gen)
labels[0, 0, 1] = 255
labels[1, 2, 3] = 255
labels[1, 0, 0] = 255
loss = F.cross_entropy(logits, labels, ignore_index=255)
loss.backward()
t.update({"ce4.logits": logits, "ce4.labels": labels.double(), "ce4.loss": loss.reshape(1),
          "ce4.dlogits": logits.grad})
logits = (rng_tensor(gen, 4, 6) * 3.0).requires_grad_()
labels = torch.tensor([3, 255, 0, 5])
loss = F.cross_entropy(logits, labels, ignore_index=255)
loss.backward()
t.update({"ce2.logits": logits, "ce2.labels": labels.double(), "ce2.loss": loss.reshape(1),
          "ce2.dlogits": logits.grad})

# ---- surface-normal loss: p any scale, g unit vectors, zero vector = invalid -----------------
p = rng_tensor(gen, 2, 3, 4, 5) * 3.0
g = F.normalize(rng_tensor(gen, 2, 3, 4, 5), dim=1)
g[0, :, 0, 0] = 0.0
g[0, :, 2, 3] = 0.0
g[1, :, 3, 4] = 0.0
valid = g.abs().sum(dim=1) != 0  # (N, H, W)
t.update({"normal.p": p, "normal.g": g})
for form in ("l2", "cosine"):
    pp = p.clone().requires_grad_()
    ph = F.normalize(pp, dim=1, eps=1e-12)
    if form == "l2":
        per_pixel = ((ph - g) ** 2).sum(dim=1)
    else:
        per_pixel = 1.0 - (ph * g).sum(dim=1)
    loss = per_pixel[valid].mean()
    loss.backward()
    t[f"normal.{form}.loss"] = loss.reshape(1)
    t[f"normal.{form}.dp"] = pp.grad

save("misc_ops", t, {"generator": "tools/reference/misc_ops.py"})
