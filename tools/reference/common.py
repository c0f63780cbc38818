"""Shared helpers for the reference-value generators (run with Debian's /usr/bin/python3,
which has python3-torch). Each generator writes tests/data/<name>.safetensors; the C++ tests
read them with nddr::io::SafetensorsFile. CI never runs these scripts.

Usage pattern:
    from common import save, rng_tensor
    tensors = {"case0.x": ..., "case0.y": ...}
    save("conv2d", tensors, {"generator": "tools/reference/conv2d.py"})
"""
import json
import os
import struct
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")

_DTYPES = {
    torch.float64: ("F64", "<d"),
    torch.float32: ("F32", "<f"),
    torch.int64: ("I64", "<q"),
    torch.int32: ("I32", "<i"),
    torch.uint8: ("U8", "<B"),
}


def rng_tensor(gen, *shape, lo=-1.0, hi=1.0, dtype=torch.float64):
    """Uniform(lo, hi) tensor from a seeded torch.Generator."""
    return (torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def save(name, tensors, metadata=None):
    """Writes a safetensors file (8-byte LE header length, JSON header, raw LE data)."""
    header = {}
    blobs = []
    offset = 0
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            raise TypeError(f"{key}: unsupported dtype {t.dtype}")
        code, _ = _DTYPES[t.dtype]
        data = t.numpy().tobytes()  # numpy is little-endian on x86
        header[key] = {"dtype": code, "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    meta = {"format": "pt", "torch": torch.__version__}
    meta.update(metadata or {})
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, name + ".safetensors")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    print(f"wrote {path} ({offset} data bytes, {len(tensors)} tensors)", file=sys.stderr)
