#!/usr/bin/env python3
"""PyTorch eager baseline: one training step and an inference pass of the paper networks on
DeepLab-VGG16-LargeFOV with BatchNorm (paper-spec.md §2), the same as nddr-bench-step's
--network (default vgg16-nddr, the two-task NDDR-CNN):
  vgg16-nddr           NDDR after every stage (nddr's MultiTask<VGG16, VGG16, NDDR>)
  vgg16-nddr-shortcut  + per task, all fused stage outputs resized (bilinear) to the last one,
                       concatenated, 1x1 conv (1472 -> 512) + BN + ReLU before the head
  vgg16-mt             one shared trunk (stages 1-5), two heads (Shared<5>)
  vgg16-st             one column, segmentation only (MultiTask<VGG16, None>)
  vgg16-cross-stitch   out_k = sum_j a[k][j] x_j after every stage (CrossStitch)
  vgg16-sluice         2 subspaces per task, a 4x4 subspace mix after every stage (Sluice)

Same network as nddr's Network<MultiTask<VGG16, VGG16, NDDR>>: conv3x3 (no bias) + BN(eps 1e-3,
momentum 0.05) + ReLU; TF-'SAME' 3x3 max pools (stride 2, 2, 2, 1, 1; emulated with asymmetric
padding); pool5a avg 3x3 stride 1 excluding padding; fc6 3x3 dilation 12 (1024) + BN + ReLU +
dropout; fc7 1x1 + BN + ReLU + dropout; fc8 1x1 with bias; NDDR after every stage (concat, 1x1
conv 2C->C, BN, ReLU; diagonal init 0.9/0.1). Losses: cross-entropy (ignore 255) on 40 classes
+ 20 x cosine normal loss, labels at the logit size. SGD momentum 0.9, NDDR lr x100.

Prints one JSON line: network, median/min/max seconds per step, images/s, GFLOP/s (nddr-bench-step's
analytic count), peak memory.
Usage: python3 bench/pytorch/nddr_vgg16.py [--network vgg16-nddr] --device cuda --batch 10 --size 321 --iters 20
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


class CrossStitch(nn.Module):
    """(K S) x (K S) mix of the K tasks' S channel subspaces; S = 1 is cross-stitch."""

    def __init__(self, k, subspaces=1):
        super().__init__()
        p = k * subspaces
        self.k, self.s = k, subspaces
        a = torch.full((p, p), 0.1)
        for i in range(p):
            a[i, i] = 0.9
        self.alpha = nn.Parameter(a)

    def forward(self, xs):
        g = [t for x in xs for t in x.chunk(self.s, dim=1)]
        mixed = [sum(self.alpha[p, q] * g[q] for q in range(len(g))) for p in range(len(g))]
        return [torch.cat(mixed[k * self.s:(k + 1) * self.s], dim=1) for k in range(self.k)]


class NddrFusion(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branches = nn.ModuleList([Nddr(c, k) for k in range(2)])

    def forward(self, xs):
        cat = torch.cat(xs, dim=1)
        return [b(cat) for b in self.branches]


class ShortcutModule(nn.Module):
    def __init__(self, cin=64 + 128 + 256 + 512 + 512, cout=512):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.05)

    def forward(self, fs):
        size = fs[-1].shape[2:]
        r = [f if f.shape[2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
             for f in fs]
        return F.relu(self.bn(self.conv(torch.cat(r, dim=1))))


NETWORKS = ["vgg16-nddr", "vgg16-nddr-shortcut", "vgg16-mt", "vgg16-st", "vgg16-cross-stitch",
            "vgg16-sluice"]


class PaperNet(nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network
        self.outputs = [40] if network == "vgg16-st" else [40, 3]
        trunks = 1 if network in ("vgg16-st", "vgg16-mt") else 2
        self.columns = nn.ModuleList([column_stages() for _ in range(trunks)])
        if network in ("vgg16-nddr", "vgg16-nddr-shortcut"):
            self.nddr = nn.ModuleList([NddrFusion(c) for (_, _, c, _, _) in STAGES])
        elif network == "vgg16-cross-stitch":
            self.nddr = nn.ModuleList([CrossStitch(2) for _ in STAGES])
        elif network == "vgg16-sluice":
            self.nddr = nn.ModuleList([CrossStitch(2, 2) for _ in STAGES])
        else:
            self.nddr = None
        if network == "vgg16-nddr-shortcut":
            self.shortcut = nn.ModuleList([ShortcutModule() for _ in range(2)])
        self.heads = nn.ModuleList([head(o) for o in self.outputs])

    def forward(self, x):
        if len(self.columns) == 1:
            f = x
            for stage in self.columns[0]:
                f = stage(f)
            return [h(f) for h in self.heads]
        f, history = [x, x], []
        for s in range(5):
            f = self.nddr[s]([self.columns[k][s](f[k]) for k in range(2)])
            history.append(f)
        if self.network == "vgg16-nddr-shortcut":
            f = [self.shortcut[k]([h[k] for h in history]) for k in range(2)]
        return [self.heads[k](f[k]) for k in range(2)]


def forward_gflop(network, batch, height, width=None):
    """nddr-bench-step's analytic forward count (multiply-add = 2)."""
    width = width or height
    h1, w1 = math.ceil(height / 2), math.ceil(width / 2)
    h2, w2 = math.ceil(h1 / 2), math.ceil(w1 / 2)
    h3, w3 = math.ceil(h2 / 2), math.ceil(w2 / 2)
    p0, p1, p2, p3 = height * width, h1 * w1, h2 * w2, h3 * w3
    trunk = [(3, 64, 9, p0), (64, 64, 9, p0), (64, 128, 9, p1), (128, 128, 9, p1),
             (128, 256, 9, p2), (256, 256, 9, p2), (256, 256, 9, p2),
             (256, 512, 9, p3)] + [(512, 512, 9, p3)] * 5
    head_l = [(512, 1024, 9, p3), (1024, 1024, 1, p3)]
    flops = lambda ls: sum(2.0 * a * b * k * hw for a, b, k, hw in ls)
    single = network == "vgg16-st"
    tasks = 1 if single else 2
    trunks = 1 if network in ("vgg16-st", "vgg16-mt") else 2
    f = trunks * flops(trunk) + tasks * flops(head_l) + 2.0 * 1024 * (40 if single else 43) * p3
    for c, hw in zip([64, 128, 256, 512, 512], [p1, p2, p3, p3, p3]):
        if network in ("vgg16-nddr", "vgg16-nddr-shortcut"):
            f += tasks * 2.0 * tasks * c * c * hw
        elif network == "vgg16-cross-stitch":
            f += tasks * 2.0 * tasks * c * hw
        elif network == "vgg16-sluice":
            f += tasks * 2.0 * tasks * 2 * c * hw
    if network == "vgg16-nddr-shortcut":
        f += tasks * 2.0 * 1472 * 512 * p3
    return f * batch / 1e9


def profile_one_step(step, sync, path):
    """Per-kernel device time of one step (the kernels, not the operators that launched them)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    totals = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            n, t = totals.get(ev.name, (0, 0.0))
            totals[ev.name] = (n + 1, t + ev.time_range.elapsed_us())
    with open(path, "w") as f:
        f.write("name,calls,total_us\n")
        for name, (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            f.write('"%s",%d,%.1f\n' % (name.replace('"', "'"), n, t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", choices=NETWORKS, default="vgg16-nddr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=161, help="input height (and width)")
    ap.add_argument("--width", type=int, default=0, help="input width (0: --size)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--mode", choices=["train", "infer"], default="train")
    ap.add_argument("--no-tf32", action="store_true", help="full FP32 cuDNN convolutions")
    ap.add_argument("--bf16", action="store_true",
                    help="mixed precision: forward and losses under torch.autocast(bfloat16) "
                         "(PyTorch's standard BF16 AMP; FP32 master weights)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (time the algorithms per shape)")
    ap.add_argument("--deterministic", action="store_true",
                    help="torch.backends.cudnn.deterministic = True")
    ap.add_argument("--channels-last", action="store_true",
                    help="model and input in torch.channels_last (NHWC) memory format: oneDNN's "
                         "fastest CPU convolutions")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile(model) (PyTorch >= 2; the warm-up steps compile)")
    ap.add_argument("--profile", metavar="FILE",
                    help="after the warm-up, profile one step (torch.profiler) and write its "
                         "per-kernel GPU times to FILE (CSV: name,calls,total_us)")
    args = ap.parse_args()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.backends.cudnn.deterministic = args.deterministic
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(1234)
    width = args.width or args.size
    net = PaperNet(args.network).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        net = net.to(memory_format=fmt)
    model = net
    if args.compile:
        if not hasattr(torch, "compile"):
            raise SystemExit(f"nddr_vgg16.py: --compile needs PyTorch >= 2 (this is {torch.__version__})")
        model = torch.compile(net)
    fusion = lambda n: n.startswith("nddr") or n.startswith("shortcut")
    nddr_params = [p for n, p in net.named_parameters() if fusion(n)]
    other = [p for n, p in net.named_parameters() if not fusion(n)]
    opt = torch.optim.SGD([{"params": other, "lr": 1e-3}, {"params": nddr_params, "lr": 0.1}],
                          momentum=0.9, weight_decay=2.5e-4)
    x = torch.randn(args.batch, 3, args.size, width, device=dev).contiguous(memory_format=fmt)
    out_h, out_w = math.ceil(args.size / 8), math.ceil(width / 8)
    seg = torch.randint(0, 40, (args.batch, out_h, out_w), device=dev)
    nrm = F.normalize(torch.randn(args.batch, 3, out_h, out_w, device=dev), dim=1)

    def step():
        if args.mode == "infer":
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                 enabled=args.bf16):
                net.eval()
                model(x)
            return
        net.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            o = model(x)
            loss = F.cross_entropy(o[0], seg, ignore_index=255)
            if len(o) > 1:
                loss = loss + 20.0 * (1.0 - (F.normalize(o[1], dim=1) * nrm).sum(1)).mean()
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if args.profile:
        profile_one_step(step, sync, args.profile)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    tf32 = dev.type == "cuda" and torch.backends.cudnn.allow_tf32
    gflop = forward_gflop(args.network, args.batch, args.size, width) * (3 if args.mode == "train" else 1)
    impl = "pytorch-" + ("+".join(n for n, on in (("channels-last", args.channels_last),
                                                   ("compile", args.compile)) if on) or "eager")
    res = {"impl": impl, "network": args.network, "torch": torch.__version__, "device": str(dev),
           "precision": "bf16" if args.bf16 else "tf32" if tf32 else "fp32",
           "conv_algos": ("benchmark" if args.cudnn_benchmark else "heuristic") +
                         ("+deterministic" if args.deterministic else ""),
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "mode": args.mode, "batch": args.batch, "size": args.size, "width": width,
           "iters": args.iters,
           "median_s": med, "min_s": min(times), "max_s": max(times),
           "images_per_s": args.batch / med, "gflop_per_s": gflop / med,
           "cudnn_tf32": torch.backends.cudnn.allow_tf32 if dev.type == "cuda" else None,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
           "threads": torch.get_num_threads()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
