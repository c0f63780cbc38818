"""Writes tests/data/resnet_mini.safetensors: a torchvision-style `resnet101` state_dict with
the real key names (conv1, bn1, layer{1..4}.{i}.conv{1..3}/bn{1..3}, layer{L}.0.downsample.{0,1},
fc, BatchNorm running statistics and num_batches_tracked) at nddr::ResNetMini's size (stem
width 4, bottleneck widths 4, 8, 16, 32, units 1, 1, 2, 1), and tests/data/resnet_mini_ref.
safetensors: an input `ref.x` and the output `ref.y` of the DeepLab-v2 ResNet that nddr builds
from those weights, computed here:

- the stride of a stage's first unit in its first 1x1 conv (DeepLab-v2 / Caffe; torchvision's
  "v1.5" has it in the 3x3 conv: the reason torchvision's own forward is NOT the reference);
- TF 'SAME' padding everywhere (asymmetric for even sizes; -inf for the max pool);
- res3 stride 2, res4 dilation 2, res5 dilation 4 (every unit), output stride 8;
- BatchNorm in inference mode with eps 1e-3 (BatchNormOptions::tf_slim; torchvision's is 1e-5).

The module is built with torch.nn here (torchvision is not installed in the venvs), laid out as
torchvision.models.resnet.ResNet / Bottleneck so that state_dict() yields its key names;
`full_keys()` checks the naming at ResNet-101's real size (3, 4, 23, 3 units) and the list is
written to tests/data/resnet101_torchvision_keys.txt (key and shape per line) for the C++ test.

Run: /work/venv-optim/bin/python tools/reference/resnet_weights.py
"""
import math
import os

import torch
from torch import nn
import torch.nn.functional as F

from common import DATA, rng_tensor, save

WIDTH = 4
UNITS = (1, 1, 2, 1)
EPS = 1e-3


class Bottleneck(nn.Module):
    """torchvision's Bottleneck attribute names: conv1/bn1, conv2/bn2, conv3/bn3, downsample."""
    expansion = 4

    def __init__(self, inplanes, planes, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample


class ResNet(nn.Module):
    def __init__(self, width, units, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, n in enumerate(units):
            planes = width * 2 ** i
            down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, bias=False),
                                 nn.BatchNorm2d(planes * 4))
            blocks = [Bottleneck(inplanes, planes, down)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, classes)


def same_pad(x, k, s, d, value=0.0):
    """TF 'SAME': out = ceil(in / s), the extra padding at the bottom / right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def conv(x, c, s=1, d=1):
    k = c.weight.shape[2]
    return F.conv2d(same_pad(x, k, s, d), c.weight, stride=s, dilation=d)


def bn(x, b, relu):
    y = F.batch_norm(x, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, EPS)
    return F.relu(y) if relu else y


def deeplab_forward(m, x):
    """The DeepLab-v2 column nddr builds (ResNetMini stages 1..5), eval mode."""
    x = bn(conv(x, m.conv1, 2), m.bn1, True)
    x = F.max_pool2d(same_pad(x, 3, 2, 1, value=-math.inf), 3, 2)
    for i, (stride, dilation) in enumerate(((1, 1), (2, 1), (1, 2), (1, 4))):
        for u, blk in enumerate(getattr(m, f"layer{i + 1}")):
            s = stride if u == 0 else 1
            y = bn(conv(x, blk.conv1, s), blk.bn1, True)
            y = bn(conv(y, blk.conv2, 1, dilation), blk.bn2, True)
            y = bn(conv(y, blk.conv3), blk.bn3, False)
            sc = bn(conv(x, blk.downsample[0], s), blk.downsample[1], False) \
                if blk.downsample is not None else x
            x = F.relu(y + sc)
    return x


def full_keys():
    """torchvision resnet101's keys and shapes (the module above at full size)."""
    m = ResNet(64, (3, 4, 23, 3))
    lines = [f"{k} {','.join(map(str, v.shape))}" for k, v in m.state_dict().items()]
    params = sum(v.numel() for k, v in m.named_parameters() if not k.startswith("fc."))
    assert params == 42500160, params  # docs/backbones.md: torchvision resnet101 without fc
    assert len(lines) == 626, len(lines)  # 314 parameters, 312 buffers (104 num_batches_tracked)
    return lines


def main():
    gen = torch.Generator().manual_seed(7)
    m = ResNet(WIDTH, UNITS, classes=10).double()
    state = m.state_dict()
    tensors = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            tensors[k] = torch.tensor(100, dtype=torch.int64)
        elif k.endswith("running_var"):
            tensors[k] = rng_tensor(gen, *v.shape, lo=0.5, hi=1.5)
        elif k.endswith(".weight") and v.dim() == 4:
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            tensors[k] = rng_tensor(gen, *v.shape) * math.sqrt(3.0 / fan_in)
        elif k.endswith(".weight") and v.dim() == 1:
            tensors[k] = rng_tensor(gen, *v.shape, lo=0.5, hi=1.5)
        else:
            tensors[k] = rng_tensor(gen, *v.shape, lo=-0.2, hi=0.2)
    x = rng_tensor(gen, 2, 3, 21, 18)
    # Stored as a checkpoint would be (F32), except num_batches_tracked (I64); the reference
    # forward ran in double on the F32-rounded weights.
    out = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    m.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in out.items()})
    with torch.no_grad():
        y = deeplab_forward(m, x)
    meta = {"generator": "tools/reference/resnet_weights.py", "width": WIDTH,
            "units": ",".join(map(str, UNITS)), "bn_eps": EPS}
    save("resnet_mini", out, meta)  # a pure state_dict: strict imports see only its keys
    save("resnet_mini_ref", {"ref.x": x, "ref.y": y}, meta)
    with open(os.path.join(DATA, "resnet101_torchvision_keys.txt"), "w") as f:
        f.write("# torchvision resnet101 state_dict keys and shapes "
                "(tools/reference/resnet_weights.py)\n")
        f.write("\n".join(full_keys()) + "\n")


if __name__ == "__main__":
    main()
