"""Reference values for nddr::ops::conv2d (forward y; dx, dw, db for a given dy), float64.

Run: /usr/bin/python3 tools/reference/conv2d.py  ->  tests/data/conv2d.safetensors

Per case <name>: x, w, [b], dy, y, dx, dw, [db], and config = [stride_h, stride_w,
dilation_h, dilation_w, pad_h, pad_w, same, bias] (float64), so the C++ test needs only the
case names. TF 'SAME' padding is done explicitly with F.pad (possibly asymmetric), which is
exactly the convention nddr implements.
"""
import math

import torch
import torch.nn.functional as F

from common import save, rng_tensor

# name: (x shape, w shape, (sh, sw), (dh, dw), (ph, pw) or "same", bias)
CASES = {
    "pad1": ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), True),
    "dil2": ((1, 2, 9, 9), (3, 2, 3, 3), (1, 1), (2, 2), (2, 2), True),
    "dil12": ((1, 3, 27, 27), (2, 3, 3, 3), (1, 1), (12, 12), (12, 12), True),
    "same_s2": ((2, 3, 9, 11), (4, 3, 3, 3), (2, 2), (1, 1), "same", True),
    "same_s2_asym": ((1, 2, 7, 9), (3, 2, 4, 2), (2, 2), (1, 1), "same", True),
    "same_s2_dil2": ((1, 2, 8, 7), (2, 2, 3, 3), (2, 2), (2, 2), "same", False),
    "pointwise": ((2, 5, 4, 3), (6, 5, 1, 1), (1, 1), (1, 1), (0, 0), True),
    "strided_nobias": ((1, 3, 6, 7), (2, 3, 2, 3), (2, 1), (1, 1), (1, 0), False),
}


def same_pads(size, k, stride, dilation):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def main():
    gen = torch.Generator().manual_seed(20190615)
    tensors = {}
    for name, (xs, ws, stride, dilation, pad, bias) in CASES.items():
        x = rng_tensor(gen, *xs).requires_grad_()
        w = rng_tensor(gen, *ws).requires_grad_()
        b = rng_tensor(gen, ws[0]).requires_grad_() if bias else None
        if pad == "same":
            top, bottom = same_pads(xs[2], ws[2], stride[0], dilation[0])
            left, right = same_pads(xs[3], ws[3], stride[1], dilation[1])
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=stride,
                         dilation=dilation)
            pad_hw, same = (0, 0), 1.0
        else:
            y = F.conv2d(x, w, b, stride=stride, padding=pad, dilation=dilation)
            pad_hw, same = pad, 0.0
        dy = rng_tensor(gen, *y.shape)
        y.backward(dy)
        p = name + "."
        tensors[p + "x"] = x
        tensors[p + "w"] = w
        tensors[p + "dy"] = dy
        tensors[p + "y"] = y
        tensors[p + "dx"] = x.grad
        tensors[p + "dw"] = w.grad
        if bias:
            tensors[p + "b"] = b
            tensors[p + "db"] = b.grad
        tensors[p + "config"] = torch.tensor(
            [*stride, *dilation, *pad_hw, same, 1.0 if bias else 0.0], dtype=torch.float64)
    save("conv2d", tensors, {"generator": "tools/reference/conv2d.py",
                             "cases": ",".join(CASES)})


if __name__ == "__main__":
    main()
