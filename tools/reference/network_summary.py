"""Trainable parameters and multiply-adds of the vgg16-* and tiny-* networks of nddr-summary
(docs/tools.md), computed independently by building the same networks in PyTorch and running
them on the meta device (shapes only). Run with /work/venv-optim/bin/python (or any Python with
torch); it prints the table that tests/train/network_tools_test.cpp hard-codes.

Conventions (as nddr-summary's): trainable = conv weights (+ fc8 bias) + BatchNorm gamma/beta;
multiply-adds = for every convolution (fusion and shortcut 1x1 convolutions included)
output elements x (input channels x kh x kw); a cross-stitch / sluice layer: output elements x
K S (each output subspace mixes the K S subspaces); nothing for BN, ReLU, pooling, resizing.
Tasks: 40 and 3 outputs (-st: 40). Input 1 x 3 x H x W.
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F


def same_pad(size, k, s, d=1):
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total


class Counter:
    def __init__(self):
        self.macs = 0


class Conv(nn.Module):
    """TF 'SAME' conv (no bias unless `bias`), counts its multiply-adds."""

    def __init__(self, cin, cout, k, d=1, bias=False, counter=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, dilation=d, bias=bias)
        self.k, self.d, self.counter = k, d, counter

    def forward(self, x):
        ph = same_pad(x.shape[2], self.k, 1, self.d)
        pw = same_pad(x.shape[3], self.k, 1, self.d)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        y = self.conv(x)
        w = self.conv.weight.shape
        self.counter.macs += y.numel() * w[1] * w[2] * w[3]
        return y


class Pool(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        # SAME max pooling 3x3: output ceil(size / stride).
        h, w = math.ceil(x.shape[2] / self.stride), math.ceil(x.shape[3] / self.stride)
        return torch.empty(x.shape[0], x.shape[1], h, w, device=x.device)


def conv_bn(cin, cout, k, c, d=1):
    return [Conv(cin, cout, k, d, counter=c), nn.BatchNorm2d(cout), nn.ReLU()]


VGG = [(2, 64, 1, 2), (2, 128, 1, 2), (3, 256, 1, 2), (3, 512, 1, 1), (3, 512, 2, 1)]
TINY = [(1, 8, 1, 2), (1, 16, 1, 2), (1, 32, 1, 2), (1, 32, 1, 1), (1, 32, 1, 1)]


def stages(cfg, c):
    out, cin = [], 3
    for convs, cout, d, stride in cfg:
        layers = []
        for i in range(convs):
            layers += conv_bn(cin if i == 0 else cout, cout, 3, c, d)
        layers.append(Pool(stride))  # (+ avg pool in VGG stage 5: same shape, no parameters)
        out.append(nn.Sequential(*layers))
        cin = cout
    return nn.ModuleList(out)


def head(backbone, cin, n, c):
    if backbone == "vgg16":  # LargeFOV: fc6 3x3 dilation 12, fc7 1x1, fc8 1x1 with bias
        return nn.Sequential(*conv_bn(cin, 1024, 3, c, 12), *conv_bn(1024, 1024, 1, c),
                             Conv(1024, n, 1, bias=True, counter=c))
    # TinyHead: fc6 3x3 dilation 2 (16 channels), fc8 1x1 with bias
    return nn.Sequential(*conv_bn(cin, 16, 3, c, 2), Conv(16, n, 1, bias=True, counter=c))


class Nddr(nn.Module):
    def __init__(self, ch, c):
        super().__init__()
        self.convs = nn.ModuleList([Conv(2 * ch, ch, 1, counter=c) for _ in range(2)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(ch) for _ in range(2)])

    def forward(self, xs):
        cat = torch.cat(xs, 1)
        return [bn(conv(cat)) for conv, bn in zip(self.convs, self.bns)]


class Mix(nn.Module):
    """Cross-stitch (S = 1) and sluice (S = 2): alpha (2 S, 2 S)."""

    def __init__(self, subspaces, c):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(2 * subspaces, 2 * subspaces))
        self.c = c

    def forward(self, xs):
        self.c.macs += sum(x.numel() for x in xs) * self.alpha.shape[0]
        return xs


class Shortcut(nn.Module):
    def __init__(self, chans, c):
        super().__init__()
        self.conv = Conv(sum(chans), 512, 1, counter=c)
        self.bn = nn.BatchNorm2d(512)

    def forward(self, feats):
        last = feats[-1]
        parts = [torch.empty(f.shape[0], f.shape[1], last.shape[2], last.shape[3],
                             device=f.device) for f in feats]
        return self.bn(self.conv(torch.cat(parts, 1)))


def network(backbone, method, shortcut, c):
    cfg = VGG if backbone == "vgg16" else TINY
    chans = [x[1] for x in cfg]
    tasks = [40] if method == "st" else [40, 3]
    cols = nn.ModuleList([stages(cfg, c) for _ in (tasks if method != "mt" else [0])])
    fusion = {"nddr": lambda ch: Nddr(ch, c), "cross-stitch": lambda ch: Mix(1, c),
              "sluice": lambda ch: Mix(2, c)}.get(method)
    fusions = nn.ModuleList([fusion(ch) for ch in chans]) if fusion else None
    shortcuts = nn.ModuleList([Shortcut(chans, c) for _ in cols]) if shortcut else None
    head_in = 512 if shortcut else chans[-1]
    heads = nn.ModuleList([head(backbone, head_in, n, c) for n in tasks])
    return nn.ModuleList([cols, heads] + ([fusions] if fusions else []) +
                         ([shortcuts] if shortcuts else [])), cols, fusions, shortcuts, heads


def count(backbone, method, shortcut, size):
    c = Counter()
    net, cols, fusions, shortcuts, heads = network(backbone, method, shortcut, c)
    params = sum(p.numel() for p in net.parameters())
    net.to("meta")
    x = torch.empty(1, 3, size, size, device="meta")
    feats = [x] * len(cols)
    per_stage = [[] for _ in cols]
    for s in range(5):
        feats = [col[s](f) for col, f in zip(cols, feats)]
        if fusions is not None:
            feats = fusions[s](feats)
        for k, f in enumerate(feats):
            per_stage[k].append(f)
    outs = [sc(per_stage[k]) for k, sc in enumerate(shortcuts)] if shortcuts else feats
    for k, h in enumerate(heads):
        h(outs[k if len(outs) > 1 else 0])
    return params, c.macs


if __name__ == "__main__":
    for backbone, size in (("vgg16", 321), ("tiny", 33)):
        for method in ("st", "mt", "cross-stitch", "sluice", "nddr"):
            for sc in (False, True):
                name = f"{backbone}-{method}" + ("-shortcut" if sc else "")
                p, m = count(backbone, method, sc, size)
                print(f'  {{"{name}", {size}, {p}, {m}}},')
