"""Reference values for nddr BatchNorm2d (torch.nn.functional.batch_norm, float64).

Per case: x, gamma, beta, dy, initial running_mean / running_var (random, so the momentum
update and inference are not trivial), and
  train.*   training forward y, dx, dgamma, dbeta, updated running stats (eps 1e-5, momentum 0.1)
  tfslim.*  the same with the TF-slim preset (eps 1e-3, momentum 0.05)
  noaffine.* training forward y and dx without gamma/beta (eps 1e-5)
  eval.*    inference forward y with the initial running stats, and its dx, dgamma, dbeta
  relu.*    ReLU(BatchNorm(x)) in training with the TF-slim preset (nddr's BatchNormOptions::relu)
  relu_eval.* the same in inference
Run: /usr/bin/python3 tools/reference/batch_norm.py
"""
import torch
import torch.nn.functional as F

from common import save, rng_tensor

SHAPES = [(2, 3, 4, 5), (1, 4, 3, 3), (6, 2, 1, 2)]


def run(x, rm0, rv0, gamma, beta, dy, training, momentum, eps, relu=False):
    x = x.clone().requires_grad_(True)
    g = gamma.clone().requires_grad_(True) if gamma is not None else None
    b = beta.clone().requires_grad_(True) if beta is not None else None
    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, g, b, training=training, momentum=momentum, eps=eps)
    if relu:
        y = F.relu(y)
    y.backward(dy)
    out = {"y": y.detach(), "dx": x.grad, "running_mean": rm, "running_var": rv}
    if g is not None:
        out["dgamma"] = g.grad
        out["dbeta"] = b.grad
    return out


def main():
    gen = torch.Generator().manual_seed(20190616)
    tensors = {}
    for i, shape in enumerate(SHAPES):
        c = shape[1]
        x = rng_tensor(gen, *shape, lo=-1.5, hi=2.5)
        gamma = rng_tensor(gen, c, lo=0.5, hi=1.5)
        beta = rng_tensor(gen, c)
        dy = rng_tensor(gen, *shape)
        rm0 = rng_tensor(gen, c, lo=-0.5, hi=0.5)
        rv0 = rng_tensor(gen, c, lo=0.5, hi=2.0)
        p = f"case{i}."
        tensors.update({p + "x": x, p + "gamma": gamma, p + "beta": beta, p + "dy": dy,
                        p + "running_mean0": rm0, p + "running_var0": rv0})
        runs = {
            "train": run(x, rm0, rv0, gamma, beta, dy, True, 0.1, 1e-5),
            "tfslim": run(x, rm0, rv0, gamma, beta, dy, True, 0.05, 1e-3),
            "noaffine": run(x, rm0, rv0, None, None, dy, True, 0.1, 1e-5),
            "eval": run(x, rm0, rv0, gamma, beta, dy, False, 0.1, 1e-5),
            "relu": run(x, rm0, rv0, gamma, beta, dy, True, 0.05, 1e-3, relu=True),
            "relu_eval": run(x, rm0, rv0, gamma, beta, dy, False, 0.05, 1e-3, relu=True),
        }
        for mode, out in runs.items():
            for k, v in out.items():
                if mode.endswith("eval") and k.startswith("running"):
                    continue
                tensors[p + mode + "." + k] = v
    save("batch_norm", tensors, {"generator": "tools/reference/batch_norm.py"})


if __name__ == "__main__":
    main()
