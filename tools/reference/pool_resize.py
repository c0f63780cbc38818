"""Reference values for pooling and resizing (tests/ops/pool_test.cpp, tests/ops/resize_test.cpp).

Run: /usr/bin/python3 tools/reference/pool_resize.py  ->  tests/data/pool_resize.safetensors

Pooling cases "pool<i>.*": x, dy (inputs), y, dx (forward and autograd dx for the given dy),
params = [kind (0 max, 1 avg), kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, same,
count_include_pad]. TF 'SAME' is emulated in torch with an explicit F.pad: -inf for max; for
avg (padding excluded) the sum-pool of the zero-padded input divided by the count-pool of a
zero-padded ones tensor.
Global average pooling: "gap.*" (x, dy, y, dx).
Resize cases "resize<i>.*": x, dy, y, dx, params = [mode, out_h, out_w] with mode the index of
nddr::ResizeMode (0 TF legacy bilinear, 1 half-pixel, 2 align corners, 3 TF legacy nearest).
Half-pixel and align-corners come from F.interpolate; the TF legacy modes from an independent
torch implementation of the formula in paper-spec Appendix A (index_select; autograd gives the
backward). Label cases "label<i>.*": int64 x, y, params (nearest on integer label maps).
"""
import math

import torch
import torch.nn.functional as F

from common import rng_tensor, save

gen = torch.Generator().manual_seed(20190617)
out = {}


def same_pads(size, k, s):
    o = -(-size // s)
    total = max((o - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pool_ref(x, kind, k, s, pad, same, include_pad):
    """Pooling in float64 torch with TF 'SAME' or explicit symmetric padding."""
    kh, kw = k
    if not same:
        ph, pw = pad
        if kind == "max":
            return F.max_pool2d(x, k, s, (ph, pw))
        return F.avg_pool2d(x, k, s, (ph, pw), count_include_pad=include_pad)
    top, bottom = same_pads(x.shape[2], kh, s[0])
    left, right = same_pads(x.shape[3], kw, s[1])
    spec = (left, right, top, bottom)
    if kind == "max":
        return F.max_pool2d(F.pad(x, spec, value=-math.inf), k, s)
    summed = F.avg_pool2d(F.pad(x, spec, value=0.0), k, s)
    if include_pad:
        return summed
    ones = torch.ones_like(x)
    return summed / F.avg_pool2d(F.pad(ones, spec, value=0.0), k, s)


POOL_CASES = [
    # kind, shape, kernel, stride, pad, same, count_include_pad
    ("max", (1, 2, 11, 11), (3, 3), (2, 2), (0, 0), True, False),
    ("max", (2, 3, 9, 8), (3, 3), (2, 2), (0, 0), True, False),
    ("avg", (1, 2, 11, 11), (3, 3), (2, 2), (0, 0), True, False),
    ("avg", (2, 3, 9, 8), (3, 3), (2, 2), (0, 0), True, False),
    ("max", (1, 2, 7, 6), (3, 3), (1, 1), (0, 0), True, False),
    ("avg", (1, 2, 7, 6), (3, 3), (1, 1), (0, 0), True, False),
    ("max", (1, 2, 7, 6), (3, 2), (2, 1), (1, 1), False, False),
    ("avg", (1, 2, 7, 6), (3, 2), (2, 1), (1, 1), False, False),
    ("avg", (1, 2, 7, 6), (3, 2), (2, 1), (1, 1), False, True),
    ("avg", (2, 3, 9, 8), (3, 3), (2, 2), (0, 0), True, True),
]

for i, (kind, shape, k, s, pad, same, incl) in enumerate(POOL_CASES):
    x = rng_tensor(gen, *shape).requires_grad_(True)
    y = pool_ref(x, kind, k, s, pad, same, incl)
    dy = rng_tensor(gen, *y.shape)
    (dx,) = torch.autograd.grad(y, x, dy)
    p = f"pool{i}."
    out[p + "x"], out[p + "dy"], out[p + "y"], out[p + "dx"] = x, dy, y, dx
    out[p + "params"] = torch.tensor(
        [0 if kind == "max" else 1, k[0], k[1], s[0], s[1], pad[0], pad[1], int(same), int(incl)],
        dtype=torch.float64)

x = rng_tensor(gen, 2, 3, 5, 4).requires_grad_(True)
y = F.adaptive_avg_pool2d(x, 1)
dy = rng_tensor(gen, *y.shape)
(dx,) = torch.autograd.grad(y, x, dy)
out["gap.x"], out["gap.dy"], out["gap.y"], out["gap.dx"] = x, dy, y, dx


def tf_legacy_taps(size_in, size_out, nearest, dtype=torch.float64):
    """TF 1.x legacy (align_corners=False, no half-pixel) source taps of one axis."""
    d = torch.arange(size_out, dtype=dtype)
    f = d * (torch.tensor(size_in, dtype=dtype) / torch.tensor(size_out, dtype=dtype))
    i0 = torch.floor(f).long().clamp(max=size_in - 1)
    if nearest:
        return i0, i0, torch.zeros(size_out, dtype=torch.float64)
    i1 = (i0 + 1).clamp(max=size_in - 1)
    return i0, i1, (f - i0.to(dtype)).to(torch.float64)


def tf_legacy_resize(x, size, nearest):
    (h0, h1, wh), (w0, w1, ww) = (tf_legacy_taps(x.shape[2], size[0], nearest),
                                  tf_legacy_taps(x.shape[3], size[1], nearest))
    if nearest:
        return x.index_select(2, h0).index_select(3, w0)
    rows = (x.index_select(2, h0) * (1 - wh)[:, None] + x.index_select(2, h1) * wh[:, None])
    return rows.index_select(3, w0) * (1 - ww) + rows.index_select(3, w1) * ww


MODES = {"tf_legacy": 0, "half_pixel": 1, "align_corners": 2, "nearest": 3}
RESIZE_CASES = [
    ("half_pixel", (1, 2, 7, 9), (13, 5)),
    ("align_corners", (1, 2, 7, 9), (13, 5)),
    ("half_pixel", (2, 1, 21, 16), (6, 5)),
    ("align_corners", (2, 1, 21, 16), (6, 5)),
    ("tf_legacy", (1, 2, 7, 9), (13, 5)),
    ("tf_legacy", (2, 1, 21, 16), (6, 5)),
    ("tf_legacy", (1, 1, 8, 8), (4, 4)),
    ("nearest", (1, 2, 7, 9), (13, 5)),
    ("nearest", (2, 1, 21, 16), (6, 5)),
    ("half_pixel", (1, 1, 3, 1), (1, 4)),
    ("align_corners", (1, 1, 5, 4), (1, 7)),
]

for i, (mode, shape, size) in enumerate(RESIZE_CASES):
    x = rng_tensor(gen, *shape).requires_grad_(True)
    if mode in ("half_pixel", "align_corners"):
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=(mode == "align_corners"))
    else:
        y = tf_legacy_resize(x, size, nearest=(mode == "nearest"))
    dy = rng_tensor(gen, *y.shape)
    (dx,) = torch.autograd.grad(y, x, dy)
    p = f"resize{i}."
    out[p + "x"], out[p + "dy"], out[p + "y"], out[p + "dx"] = x, dy, y, dx
    out[p + "params"] = torch.tensor([MODES[mode], size[0], size[1]], dtype=torch.float64)

# Label maps are resized with TF legacy nearest; TF computes the scale in float32, so check the
# float64 formula picks the same sources for these sizes.
LABEL_CASES = [((1, 1, 321, 5), (41, 3)), ((2, 1, 3, 4), (7, 9))]
for i, (shape, size) in enumerate(LABEL_CASES):
    for axis in (2, 3):
        a = tf_legacy_taps(shape[axis], size[axis - 2], True)[0]
        b = tf_legacy_taps(shape[axis], size[axis - 2], True, dtype=torch.float32)[0]
        assert torch.equal(a, b), f"float32 and float64 nearest sources differ for {shape}"
    x = torch.randint(0, 40, shape, generator=gen, dtype=torch.int64)
    x[x == 7] = 255  # the ignore label
    p = f"label{i}."
    out[p + "x"] = x
    out[p + "y"] = tf_legacy_resize(x, size, nearest=True)
    out[p + "params"] = torch.tensor([MODES["nearest"], size[0], size[1]], dtype=torch.float64)

save("pool_resize", out, {"generator": "tools/reference/pool_resize.py"})
