"""Writes tests/data/io_sample.safetensors for tests/io/safetensors_test.cpp.

Every tensor holds values the C++ test knows exactly, in each dtype nddr reads (F16 and BF16
included, which tools/reference/common.py's `save` does not support). The file is written by a
small writer here rather than `save`, on purpose differently from nddr's own writer: header keys
unsorted, data stored in the reverse order, default json.dumps spacing and \\u escapes
(including a surrogate pair) in the metadata.

Run with /usr/bin/python3 (torch 1.13).
"""
import json
import os
import struct
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PATH = os.path.join(ROOT, "tests", "data", "io_sample.safetensors")

CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def raw_bytes(t):
    """Little-endian bytes of t; 16-bit floats are reinterpreted as int16 (numpy lacks bf16)."""
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def tensors():
    inf = float("inf")
    return {
        # F64 (2, 3, 4): (i - 12) / 8 + pi * [i == 5]
        "f64": ((torch.arange(24, dtype=torch.float64) - 12) / 8
                + torch.pi * (torch.arange(24) == 5).to(torch.float64)).reshape(2, 3, 4),
        "f32": torch.tensor([[1.5, -2.25, 3.0], [0.1, 1e-3, -7.0]], dtype=torch.float32),
        # 0.1 rounds to 0.0999755859375 in binary16; 2**-24 is the smallest subnormal.
        "f16": torch.tensor([1.0, -2.5, 0.1, 65504.0, 2.0 ** -24, inf, -inf],
                            dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -2.5], [3.140625, 2.0 ** 100], [0.5, -0.0]],
                             dtype=torch.bfloat16),
        "i64": torch.tensor([-(2 ** 62), -1, 0, 7, 2 ** 40 + 3], dtype=torch.int64),
        "i32": torch.tensor([-(2 ** 31), 2 ** 31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-32768, 12345], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, -1], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True, True]),
        "scalar": torch.tensor(3.25, dtype=torch.float64),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "rank5": torch.arange(6, dtype=torch.float32).reshape(1, 1, 3, 2, 1),
        "nchw": (torch.arange(2 * 3 * 2 * 2, dtype=torch.float64) * 0.5).reshape(2, 3, 2, 2),
    }


def main():
    ts = tensors()
    names = list(ts)
    blobs = {n: raw_bytes(ts[n]) for n in names}
    header = {"__metadata__": {"generator": "tools/reference/io_sample.py",
                               "note": "\u00f1 \"quoted\" \U0001F600 \\ end",
                               "torch": torch.__version__}}
    offset = 0
    for n in reversed(names):  # data order differs from header order
        header[n] = {"dtype": CODES[ts[n].dtype], "shape": list(ts[n].shape),
                     "data_offsets": [offset, offset + len(blobs[n])]}
        offset += len(blobs[n])
    hbytes = json.dumps(header).encode("ascii")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    tmp = PATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for n in reversed(names):
            f.write(blobs[n])
    os.replace(tmp, PATH)
    print(f"wrote {PATH} ({offset} data bytes, {len(names)} tensors)", file=sys.stderr)


if __name__ == "__main__":
    main()
