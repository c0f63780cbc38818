"""Exact parameter counts of the backbones in include/nddr/backbones/, computed by building
the same networks in PyTorch (run with /usr/bin/python3). The numbers are hard-coded in
tests/networks/backbone_test.cpp and docs/backbones.md; this script is how they were checked.

Trainable = conv/linear weights and biases + BatchNorm gamma/beta; buffers = BatchNorm running
mean/var (num_batches_tracked excluded). Convs have no bias except the task-output ones.
"""
import torch.nn as nn


def conv_bn(cin, cout, k, stride=1, dilation=1):
    return [nn.Conv2d(cin, cout, k, stride, padding=0, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


def vgg_convs(pool):
    layers, cin = [], 3
    for s, (convs, cout) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for _ in range(convs):
            layers += conv_bn(cin, cout, 3, dilation=2 if (pool == "deeplab" and s == 5) else 1)
            cin = cout
        layers.append(nn.MaxPool2d(3 if pool == "deeplab" else 2))
    return nn.Sequential(*layers)


def largefov_head(outputs):
    return nn.Sequential(*conv_bn(512, 1024, 3, dilation=12), nn.Dropout(),
                         *conv_bn(1024, 1024, 1), nn.Dropout(), nn.Conv2d(1024, outputs, 1))


def classifier_head(outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, outputs))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride, dilation):
        super().__init__()
        self.main = nn.Sequential(*conv_bn(cin, mid, 1, stride), *conv_bn(mid, mid, 3, 1, dilation),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if cin != cout or stride != 1 else None)


def resnet101():
    layers = conv_bn(3, 64, 7, 2) + [nn.MaxPool2d(3, 2)]
    cin = 64
    for units, mid, stride, dilation in [(3, 64, 1, 1), (4, 128, 2, 1), (23, 256, 1, 2),
                                         (3, 512, 1, 4)]:
        for u in range(units):
            layers.append(Bottleneck(cin, mid, 4 * mid, stride if u == 0 else 1, dilation))
            cin = 4 * mid
    return nn.Sequential(*layers)


def aspp(outputs):
    return nn.ModuleList([nn.Conv2d(2048, outputs, 3, padding=d, dilation=d) for d in (6, 12, 18, 24)])


def counts(*modules):
    trainable = sum(p.numel() for m in modules for p in m.parameters())
    buffers = sum(b.numel() for m in modules for n, b in m.named_buffers()
                  if not n.endswith("num_batches_tracked"))
    return trainable, buffers


def main():
    deeplab = vgg_convs("deeplab")
    kernels = sum(m.weight.numel() for m in deeplab.modules() if isinstance(m, nn.Conv2d))
    print("vgg16 conv1_1..conv5_3 kernels", kernels)
    for n in (40, 3):
        print(f"vgg16 + largefov (n={n})", counts(deeplab, largefov_head(n)))
    for n in (100, 2):
        print(f"vgg16_classifier (n={n})", counts(vgg_convs("classifier"), classifier_head(n)))
    r = resnet101()
    print("resnet101 stages", counts(r))
    for n in (40, 3):
        print(f"resnet101 + aspp (n={n})", counts(r, aspp(n)))
    try:
        import torchvision
        tv = torchvision.models.resnet101()
        tv.fc = nn.Identity()
        print("torchvision resnet101 without fc", counts(tv))
    except ImportError:
        print("torchvision not available")


if __name__ == "__main__":
    main()
