#!/usr/bin/env python3
"""PyTorch eager baseline: one training step of the two-task NDDR-VGG16 (NDDR-CNN on
DeepLab-VGG16-LargeFOV with BatchNorm, paper-spec.md §2) and an inference pass.

Same network as nddr's Network<MultiTask<VGG16, VGG16, NDDR>>: conv3x3 (no bias) + BN(eps 1e-3,
momentum 0.05) + ReLU; TF-'SAME' 3x3 max pools (stride 2, 2, 2, 1, 1; emulated with asymmetric
padding); pool5a avg 3x3 stride 1 excluding padding; fc6 3x3 dilation 12 (1024) + BN + ReLU +
dropout; fc7 1x1 + BN + ReLU + dropout; fc8 1x1 with bias; NDDR after every stage (concat, 1x1
conv 2C->C, BN, ReLU; diagonal init 0.9/0.1). Losses: cross-entropy (ignore 255) on 40 classes
+ 20 x cosine normal loss, labels at the logit size. SGD momentum 0.9, NDDR lr x100.

Prints one JSON line: median/min/max seconds per step, images/s, peak memory.
Usage: python3 bench/pytorch/nddr_vgg16.py --device cuda --batch 10 --size 321 --iters 20
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def same_pad(size, k, s):
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class SamePool(nn.Module):
    def __init__(self, stride, avg=False):
        super().__init__()
        self.stride, self.avg = stride, avg

    def forward(self, x):
        ph = same_pad(x.shape[2], 3, self.stride)
        pw = same_pad(x.shape[3], 3, self.stride)
        if self.avg:
            ones = torch.ones_like(x[:, :1])
            s = F.avg_pool2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1])), 3, self.stride, divisor_override=1)
            c = F.avg_pool2d(F.pad(ones, (pw[0], pw[1], ph[0], ph[1])), 3, self.stride, divisor_override=1)
            return s / c
        return F.max_pool2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf")), 3, self.stride)


def cbr(cin, cout, k=3, dil=1):
    pad = dil * (k - 1) // 2
    return [nn.Conv2d(cin, cout, k, padding=pad, dilation=dil, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.05), nn.ReLU(inplace=True)]


STAGES = [(2, 3, 64, 1, 2), (2, 64, 128, 1, 2), (3, 128, 256, 1, 2), (3, 256, 512, 1, 1),
          (3, 512, 512, 2, 1)]


def column_stages():
    stages = []
    for s, (convs, cin, cout, dil, stride) in enumerate(STAGES):
        layers = []
        for i in range(convs):
            layers += cbr(cin if i == 0 else cout, cout, dil=dil)
        layers.append(SamePool(stride))
        if s == 4:
            layers.append(SamePool(1, avg=True))
        stages.append(nn.Sequential(*layers))
    return nn.ModuleList(stages)


def head(outputs):
    return nn.Sequential(*cbr(512, 1024, dil=12), nn.Dropout(0.5), *cbr(1024, 1024, k=1),
                         nn.Dropout(0.5), nn.Conv2d(1024, outputs, 1))


class Nddr(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.conv = nn.Conv2d(2 * c, c, 1, bias=False)
        with torch.no_grad():
            eye = torch.eye(c)
            w = torch.cat([0.9 * eye, 0.1 * eye] if k == 0 else [0.1 * eye, 0.9 * eye], dim=1)
            self.conv.weight.copy_(w[:, :, None, None])
        self.bn = nn.BatchNorm2d(c, eps=1e-3, momentum=0.05)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class NddrVgg16(nn.Module):
    def __init__(self):
        super().__init__()
        self.columns = nn.ModuleList([column_stages(), column_stages()])
        self.nddr = nn.ModuleList([nn.ModuleList([Nddr(c, k) for k in range(2)])
                                   for (_, _, c, _, _) in STAGES])
        self.heads = nn.ModuleList([head(40), head(3)])

    def forward(self, x):
        f = [x, x]
        for s in range(5):
            a = [self.columns[k][s](f[k]) for k in range(2)]
            cat = torch.cat(a, dim=1)
            f = [self.nddr[s][k](cat) for k in range(2)]
        return [self.heads[k](f[k]) for k in range(2)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=161)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--mode", choices=["train", "infer"], default="train")
    ap.add_argument("--no-tf32", action="store_true", help="full FP32 cuDNN convolutions")
    args = ap.parse_args()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(1234)
    net = NddrVgg16().to(dev)
    nddr_params = [p for n, p in net.named_parameters() if n.startswith("nddr")]
    other = [p for n, p in net.named_parameters() if not n.startswith("nddr")]
    opt = torch.optim.SGD([{"params": other, "lr": 1e-3}, {"params": nddr_params, "lr": 0.1}],
                          momentum=0.9, weight_decay=2.5e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    out_hw = math.ceil(args.size / 8)
    seg = torch.randint(0, 40, (args.batch, out_hw, out_hw), device=dev)
    nrm = F.normalize(torch.randn(args.batch, 3, out_hw, out_hw, device=dev), dim=1)

    def step():
        if args.mode == "infer":
            with torch.no_grad():
                net.eval()
                net(x)
            return
        net.train()
        opt.zero_grad(set_to_none=True)
        o = net(x)
        loss = F.cross_entropy(o[0], seg, ignore_index=255) + \
            20.0 * (1.0 - (F.normalize(o[1], dim=1) * nrm).sum(1)).mean()
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    tf32 = dev.type == "cuda" and torch.backends.cudnn.allow_tf32
    res = {"impl": "pytorch-eager", "torch": torch.__version__, "device": str(dev),
           "precision": "tf32" if tf32 else "fp32",
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "mode": args.mode, "batch": args.batch, "size": args.size, "iters": args.iters,
           "median_s": med, "min_s": min(times), "max_s": max(times),
           "images_per_s": args.batch / med,
           "cudnn_tf32": torch.backends.cudnn.allow_tf32 if dev.type == "cuda" else None,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
           "threads": torch.get_num_threads()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
