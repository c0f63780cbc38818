"""ONNX Runtime reference outputs for the ONNX export test (tests/networks/onnx_export_test.cpp).

Runs ONNX Runtime (CPU) on the models that the test exports in its write mode, for the input
batches it writes with them, checks every model with onnx.checker (full_check, i.e. with strict
shape inference), and writes tests/data/onnx/inputs.safetensors (copied) and
tests/data/onnx/reference.safetensors: "<model>.<batch>.<output>" float32 tensors and, in the
metadata, "<model>.fnv1a64" (the model's FNV-1a 64 hash, which the C++ test compares with its
own re-export) plus the onnx / onnxruntime / numpy versions. CI never runs this script.

Environment (PyPI, not Debian): python3 -m venv /work/venv-onnx &&
    /work/venv-onnx/bin/pip install onnx onnxruntime numpy

Usage:
    NDDR_ONNX_WRITE_DIR=/tmp/onnx build/o/tests/nddr_network_tests '[onnx][write]'
    /work/venv-onnx/bin/python tools/reference/onnx_reference.py /tmp/onnx
Any other directory of .onnx files works too (outputs go to --out).
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "onnx")


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            raise ValueError(f"{path}: {name}: expected F32, got {e['dtype']}")
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + b:8 + n + end], dtype="<f4").reshape(e["shape"])
    return out


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        data = np.ascontiguousarray(tensors[key], dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(tensors[key].shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for c in data:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", help="directory with <name>.onnx files and inputs.safetensors")
    ap.add_argument("--out", default=DATA, help="where reference.safetensors goes")
    args = ap.parse_args()
    inputs = read_safetensors(os.path.join(args.models, "inputs.safetensors"))
    tensors = {}
    meta = {"generator": "tools/reference/onnx_reference.py", "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__}
    names = sorted(f[:-5] for f in os.listdir(args.models) if f.endswith(".onnx"))
    if not names:
        sys.exit(f"{args.models}: no .onnx files")
    for name in names:
        path = os.path.join(args.models, name + ".onnx")
        with open(path, "rb") as f:
            meta[name + ".fnv1a64"] = fnv1a64(f.read())
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        outs = [o.name for o in sess.get_outputs()]
        for batch, x in sorted(inputs.items()):
            for o, y in zip(outs, sess.run(None, {inp.name: x})):
                tensors[f"{name}.{batch}.{o}"] = y
                print(f"{name}.{batch}.{o}: {y.shape}, |y|max {np.abs(y).max():.4f}")
    os.makedirs(args.out, exist_ok=True)
    if os.path.abspath(args.models) != os.path.abspath(args.out):
        shutil.copyfile(os.path.join(args.models, "inputs.safetensors"),
                        os.path.join(args.out, "inputs.safetensors"))
    write_safetensors(os.path.join(args.out, "reference.safetensors"), tensors, meta)


if __name__ == "__main__":
    main()
