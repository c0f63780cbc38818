"""Reference values for the whole two-task NDDR-VGG16 network (tests/networks/pytorch_reference_test.cpp).

An independent float64 PyTorch implementation of NDDR-CNN on DeepLab-VGG16-LargeFOV
(paper-spec.md §2.1-§2.2; BN eps 1e-3 / momentum 0.05, training mode, dropout disabled),
written with torch.nn.functional and a dict of parameters named as nddr's Network names them.
The 43.5M weights are too big to commit, so both sides compute them from a closed form:

    seed(name) = sum_j (j + 1) * byte(name[j])  mod 9973
    u_i        = sin(0.6181640625 * i + seed(name))          (float64, i = flat index)
    rank >= 2  : u_i * sqrt(3 / fan_in),  fan_in = in * kh * kw
    BN weight  : 1 + 0.1 u_i;  BN bias, fc8 bias: 0.1 u_i
    BN buffers : running_mean 0, running_var 1

The step 0.6181640625 = 633 / 1024 is dyadic, so the argument is exact in float64 whether or not
the C++ compiler fuses the multiply-add (the network amplifies a weight perturbation ~1e5x, and
a 0.618 step gave 1e-5 discrepancies through FMA contraction alone).

Saved: the input x (1, 3, 65, 65) (float32 values, compared as float64), the targets, both
outputs (1, 40, 9, 9) and (1, 3, 9, 9), both weighted losses, dL/dx, per parameter the sum and
sum of squares of its gradient and 8 gradient samples at flat indices (k * 7919 + 13) mod n, and
the running statistics of three BN layers after the forward.

Run: /usr/bin/python3 tools/reference/nddr_vgg16.py  (about 20 s on 2 cores)
"""
import math

import torch
import torch.nn.functional as F

from common import rng_tensor, save

TASKS = 2
OUTPUTS = (40, 3)
SEG_WEIGHT, NORMAL_WEIGHT = 1.0, 20.0
BN_EPS, BN_MOMENTUM = 1e-3, 0.05
SIZE = 65
# (stage, convs, in, out, dilation, pool stride)
STAGES = [(1, 2, 3, 64, 1, 2), (2, 2, 64, 128, 1, 2), (3, 3, 128, 256, 1, 2),
          (4, 3, 256, 512, 1, 1), (5, 3, 512, 512, 2, 1)]
SAMPLES = 8
RUNNING_CHECKED = ["task0.stage1.conv1_1.bn", "fusion.stage5.task1.bn", "task1.head.fc7.bn"]


def seed_of(name):
    return sum((j + 1) * b for j, b in enumerate(name.encode())) % 9973


def formula(name, shape, kind):
    n = math.prod(shape)
    u = torch.sin(torch.arange(n, dtype=torch.float64) * 0.6181640625 + float(seed_of(name)))
    if kind == "kernel":
        fan_in = math.prod(shape[1:])
        u = u * math.sqrt(3.0 / fan_in)
    elif kind == "gamma":
        u = 1.0 + 0.1 * u
    else:  # BN beta, fc8 bias
        u = 0.1 * u
    return u.reshape(shape)


class Params:
    """Parameters and BN buffers keyed by nddr's names, in declaration order."""

    def __init__(self):
        self.p = {}
        self.buf = {}

    def conv(self, name, cin, cout, k):
        self.p[name + ".weight"] = formula(name + ".weight", (cout, cin, k, k), "kernel")

    def bn(self, name, c):
        self.p[name + ".weight"] = formula(name + ".weight", (c,), "gamma")
        self.p[name + ".bias"] = formula(name + ".bias", (c,), "beta")
        self.buf[name + ".running_mean"] = torch.zeros(c, dtype=torch.float64)
        self.buf[name + ".running_var"] = torch.ones(c, dtype=torch.float64)


def build():
    P = Params()
    for k in range(TASKS):
        for s, convs, cin, cout, _, _ in STAGES:
            for i in range(1, convs + 1):
                n = f"task{k}.stage{s}.conv{s}_{i}"
                P.conv(n, cin if i == 1 else cout, cout, 3)
                P.bn(n + ".bn", cout)
    for s, _, _, c, _, _ in STAGES:
        for k in range(TASKS):
            n = f"fusion.stage{s}.task{k}"
            P.conv(n + ".conv", TASKS * c, c, 1)
            P.bn(n + ".bn", c)
    for k in range(TASKS):
        h = f"task{k}.head"
        P.conv(h + ".fc6", 512, 1024, 3)
        P.bn(h + ".fc6.bn", 1024)
        P.conv(h + ".fc7", 1024, 1024, 1)
        P.bn(h + ".fc7.bn", 1024)
        P.conv(h + ".fc8", 1024, OUTPUTS[k], 1)
        P.p[h + ".fc8.bias"] = formula(h + ".fc8.bias", (OUTPUTS[k],), "beta")
    for t in P.p.values():
        t.requires_grad_(True)
    return P


def conv_bn_relu(P, name, x, dilation=1):
    w = P.p[name + ".weight"]
    pad = dilation * (w.shape[-1] - 1) // 2  # TF 'SAME' at stride 1: symmetric
    x = F.conv2d(x, w, None, padding=pad, dilation=dilation)
    x = F.batch_norm(x, P.buf[name + ".bn.running_mean"], P.buf[name + ".bn.running_var"],
                     P.p[name + ".bn.weight"], P.p[name + ".bn.bias"], training=True,
                     momentum=BN_MOMENTUM, eps=BN_EPS)
    return F.relu(x)


def stage(P, k, spec, x):
    s, convs, _, _, dilation, stride = spec
    for i in range(1, convs + 1):
        x = conv_bn_relu(P, f"task{k}.stage{s}.conv{s}_{i}", x, dilation)
    # TF 'SAME' 3x3 max pool: for the odd sizes here (65, 33, 17, 9) the padding is 1 each side.
    assert x.shape[-1] % 2 == 1
    x = F.max_pool2d(x, 3, stride, padding=1)
    if s == 5:
        x = F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False)
    return x


def nddr(P, s, xs):
    cat = torch.cat(xs, dim=1)  # task order
    out = []
    for k in range(TASKS):
        n = f"fusion.stage{s}.task{k}"
        z = F.conv2d(cat, P.p[n + ".conv.weight"])
        z = F.batch_norm(z, P.buf[n + ".bn.running_mean"], P.buf[n + ".bn.running_var"],
                         P.p[n + ".bn.weight"], P.p[n + ".bn.bias"], training=True,
                         momentum=BN_MOMENTUM, eps=BN_EPS)
        out.append(F.relu(z))
    return out


def head(P, k, x):
    h = f"task{k}.head"
    x = conv_bn_relu(P, h + ".fc6", x, 12)  # drop6 disabled
    x = conv_bn_relu(P, h + ".fc7", x)      # drop7 disabled
    return F.conv2d(x, P.p[h + ".fc8.weight"], P.p[h + ".fc8.bias"])


def forward(P, x):
    fs = [x] * TASKS
    for spec in STAGES:
        fs = nddr(P, spec[0], [stage(P, k, spec, fs[k]) for k in range(TASKS)])
    return [head(P, k, fs[k]) for k in range(TASKS)]


def normal_loss(pred, target):
    """Mean over labelled pixels (target != 0) of 1 - cos(pred, target); the norm floored at
    1e-6 as the authors' TF code (tf.nn.l2_normalize, epsilon 1e-12 on the squared norm) and
    nddr::SurfaceNormal do."""
    valid = (target != 0).any(dim=1)  # (N, H, W)
    cos = (F.normalize(pred, dim=1, eps=1e-6) * F.normalize(target, dim=1, eps=1e-6)).sum(1)
    return (1.0 - cos)[valid].mean()


def main():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(20190616)
    # float32-representable values: the file stores x as F32 to stay small.
    x = rng_tensor(gen, 1, 3, SIZE, SIZE).float().double().requires_grad_(True)
    labels = torch.randint(0, OUTPUTS[0], (1, 9, 9), generator=gen, dtype=torch.int64)
    labels.view(-1)[torch.randperm(81, generator=gen)[:7]] = 255
    normals = F.normalize(rng_tensor(gen, 1, 3, 9, 9), dim=1)
    for i in torch.randperm(81, generator=gen)[:5].tolist():
        normals[0, :, i // 9, i % 9] = 0.0  # unlabelled pixels

    P = build()
    outs = forward(P, x)
    seg = SEG_WEIGHT * F.cross_entropy(outs[0], labels, ignore_index=255, reduction="mean")
    nrm = NORMAL_WEIGHT * normal_loss(outs[1], normals)
    (seg + nrm).backward()

    t = {
        "x": x.detach().float(),
        "seg_target": labels.int(),
        "normal_target": normals,
        "out0": outs[0].detach(),
        "out1": outs[1].detach(),
        "loss0": seg.detach().reshape(1),
        "loss1": nrm.detach().reshape(1),
        "dx": x.grad,
        "param_count": torch.tensor([len(P.p)], dtype=torch.int64),
        "param_numel": torch.tensor([p.numel() for p in P.p.values()], dtype=torch.int64),
    }
    for name, p in P.p.items():
        g = p.grad.reshape(-1)
        n = g.numel()
        idx = torch.tensor([(k * 7919 + 13) % n for k in range(SAMPLES)])
        t["grad_sum." + name] = g.sum().reshape(1)
        t["grad_sq." + name] = (g * g).sum().reshape(1)
        t["grad_sample." + name] = g[idx]
    for bn in RUNNING_CHECKED:
        t["running_mean." + bn] = P.buf[bn + ".running_mean"]
        t["running_var." + bn] = P.buf[bn + ".running_var"]
    print(f"loss seg {seg.item():.12g} normal {nrm.item():.12g}; "
          f"{len(P.p)} parameters, {sum(p.numel() for p in P.p.values())} elements")
    save("nddr_vgg16", t, {"generator": "tools/reference/nddr_vgg16.py",
                           "parameter_order": ",".join(P.p)})


if __name__ == "__main__":
    main()
