#!/usr/bin/env python3
"""Writes the hostile-input corpus of nddr's file readers: tests/data/hostile/.

Every file is malformed in one way (a lying header, a truncated or corrupt stream, overlapping
data, binary or UTF-16 text, ...). manifest.tsv lists, per file, the reader that must refuse it
and a substring its IoError message must contain; nddr_hostile_tests (tests/hostile) runs every
row under AddressSanitizer + UndefinedBehaviorSanitizer. Cases that cannot be committed (a FIFO,
/dev/zero, a directory, a sparse 2 TiB file) are made by the test itself. See docs/testing.md,
"What nddr refuses to read".

Python 3 standard library only; the output is deterministic (gzip mtime 0, no randomness).
Regenerate with:  python3 tools/hostile/make_corpus.py
"""

import gzip
import json
import math
import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "hostile")

rows = []  # (file, reader, expected substring, what)


def case(name, reader, expected, data, what):
    assert "\t" not in expected and "\n" not in expected
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    rows.append((name, reader, expected, what))


# ---- safetensors ---------------------------------------------------------------------------

def st_bytes(header, data=b"", pad=True):
    """A safetensors file: u64 header length, the header (a dict or raw bytes), the data."""
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_cases():
    r = "safetensors"
    w8 = entry("F32", [2], 0, 8)
    case("st_empty.safetensors", r, "0 bytes, expected at least 8", b"", "empty file")
    case("st_short.safetensors", r, "5 bytes, expected at least 8", b"\x10\0\0\0\0", "5 bytes")
    case("st_header_huge.safetensors", r, "exceeds the limit",
         struct.pack("<Q", 1 << 40) + b"{}", "header length 1 TiB")
    case("st_header_max.safetensors", r, "exceeds the limit",
         struct.pack("<Q", 2**64 - 1) + b"{}", "header length 2^64-1")
    case("st_header_past_end.safetensors", r, "is larger than the 2 bytes",
         struct.pack("<Q", 1000) + b"{}", "header longer than the file")
    case("st_header_zero.safetensors", r, "must start with '{'",
         struct.pack("<Q", 0), "header length 0")
    case("st_header_array.safetensors", r, "must start with '{'",
         st_bytes(b"[1,2]"), "header is a JSON array")
    case("st_header_space_first.safetensors", r, "must start with '{'",
         st_bytes(b" {}"), "header starts with a space")
    case("st_header_bad_utf8.safetensors", r, "not valid UTF-8",
         st_bytes(b'{"w\xff":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'),
         "invalid UTF-8 in a tensor name")
    case("st_header_bad_json.safetensors", r, "not valid JSON",
         st_bytes(b'{"a":{"dtype":"F32",,}}'), "two commas")
    case("st_header_cut_json.safetensors", r, "unterminated string",
         st_bytes(b'{"a":{"dtype":"F3', pad=False), "JSON cut inside a string")
    case("st_duplicate_key.safetensors", r, 'duplicate key "a"',
         st_bytes(b'{"a":' + json.dumps(w8).encode() + b',"a":' + json.dumps(w8).encode() + b"}",
                  f32(1, 2)), "a tensor named twice")
    case("st_deep_nesting.safetensors", r, "nesting deeper",
         st_bytes(b"{" + b'"a":' * 1 + b"[" * 200 + b"]" * 200 + b"}"), "200 nested arrays")
    case("st_overlap.safetensors", r, "overlap",
         st_bytes({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, f32(1, 2, 3)),
         "tensors a [0, 8) and b [4, 12) share bytes")
    case("st_same_range.safetensors", r, "overlap",
         st_bytes({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}, f32(1, 2)),
         "two tensors on the same bytes")
    case("st_gap.safetensors", r, "belong to no tensor (a gap",
         st_bytes({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 16, 24)},
                  f32(1, 2, 0, 0, 3, 4)), "8 bytes between two tensors")
    case("st_trailing.safetensors", r, "after the last tensor belong to no tensor",
         st_bytes({"a": w8}, f32(1, 2, 3, 4)), "8 bytes after the last tensor")
    case("st_past_end.safetensors", r, "past the data section of 4 bytes",
         st_bytes({"a": w8}, f32(1)), "tensor reaches past the file")
    good = st_bytes({"a": w8, "b": entry("F32", [2], 8, 16)}, f32(1, 2, 3, 4))
    case("st_truncated.safetensors", r, "past the data section of 13 bytes", good[:-3],
         "valid file with its last 3 bytes cut")
    case("st_lying_extent.safetensors", r, "past the data section of 8 bytes",
         st_bytes({"a": entry("F32", [2**38], 0, 2**40)}, f32(1, 2)),
         "a 1 TiB tensor in a 100-byte file")
    case("st_size_mismatch.safetensors", r, "spans 8 bytes, expected 12",
         st_bytes({"a": entry("F32", [3], 0, 8)}, f32(1, 2)), "offsets disagree with the shape")
    case("st_shape_overflow.safetensors", r, "overflows",
         st_bytes({"a": entry("F64", [2**32, 2**32], 0, 8)}, f32(1, 2)),
         "element count overflows int64")
    case("st_negative_extent.safetensors", r, "non-negative",
         st_bytes({"a": entry("F32", [2, -1], 0, 8)}, f32(1, 2)), "extent -1")
    case("st_negative_offset.safetensors", r, "field 'data_offsets' item 0",
         st_bytes({"a": entry("F32", [2], -8, 0)}, f32(1, 2)), "offset -8")
    case("st_float_offset.safetensors", r, "field 'data_offsets' item 0",
         st_bytes(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]}}', f32(1, 2)),
         "offset 0.0")
    case("st_reversed_offsets.safetensors", r, "begin > end",
         st_bytes({"a": entry("F32", [0], 8, 0)}, f32(1, 2)), "begin after end")
    case("st_unknown_dtype.safetensors", r, "unknown dtype 'F8_E4M3'",
         st_bytes({"a": entry("F8_E4M3", [2], 0, 2)}, b"\0\0"), "an FP8 dtype")
    case("st_missing_field.safetensors", r, "missing field 'data_offsets'",
         st_bytes({"a": {"dtype": "F32", "shape": [2]}}, f32(1, 2)), "no data_offsets")
    case("st_control_name.safetensors", r, "contains a control character",
         st_bytes({"a\u0001b": w8}, f32(1, 2)), "a tensor name with U+0001")
    case("st_empty_name.safetensors", r, "is empty or contains a control",
         st_bytes({"": w8}, f32(1, 2)), "an empty tensor name")
    case("st_long_name.safetensors", r, "... (5000 bytes)",
         st_bytes({"x" * 5000: entry("Q99", [2], 0, 8)}, f32(1, 2)),
         "a 5000-byte name in an error message is cut short")
    case("st_metadata_not_string.safetensors", r, "must map to a string",
         st_bytes({"__metadata__": {"k": 1}}), "metadata value 1")
    case("st_entry_not_object.safetensors", r, "must be an object",
         st_bytes({"a": [1, 2]}), "a tensor given as an array")


# ---- IDX -----------------------------------------------------------------------------------

def idx_bytes(dims, data_len, type_byte=0x08, rank=None):
    b = bytes([0, 0, type_byte, len(dims) if rank is None else rank])
    for d in dims:
        b += struct.pack(">I", d)
    return b + bytes((i * 7) & 255 for i in range(data_len))


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def idx_cases():
    r = "idx"
    good = idx_bytes([10, 10], 100)
    case("idx_empty.idx", r, "truncated header: 0 of 4", b"", "empty file")
    case("idx_bad_magic.idx", r, "bad magic", b"\x1f\x00" + good[2:], "first byte 0x1F")
    case("idx_float_type.idx", r, "unsupported element type 0x0D",
         idx_bytes([2], 8, type_byte=0x0D), "float32 elements")
    case("idx_rank0.idx", r, "bad rank 0", idx_bytes([], 0), "rank 0")
    case("idx_rank5.idx", r, "bad rank 5", idx_bytes([1, 1, 1, 1, 1], 1), "rank 5")
    case("idx_dims_missing.idx", r, "extent 1 of 2 is missing", good[:10], "header cut")
    case("idx_overflow.idx", r, "exceed 17179869184 elements",
         idx_bytes([2**17, 2**17, 2**30], 16), "2^17 * 2^17 * 2^30 wraps to 0 in 64 bits")
    case("idx_dim_max.idx", r, "truncated data: 4 of 4294967295",
         idx_bytes([2**32 - 1], 4), "one extent of 2^32-1")
    case("idx_lying_4gib.idx", r, "truncated data: 24 of 4294967296",
         idx_bytes([65536, 65536], 24), "a 36-byte file declaring 4 GiB")
    case("idx_truncated.idx", r, "truncated data: 99 of 100", good[:-1], "one byte short")
    case("idx_long.idx", r, "dims mismatch", good + b"\0", "one byte too many")
    z = gz(good)
    case("idx_gz_cut_trailer.idx.gz", r, "truncated gzip stream", z[:-8],
         "gzip without its CRC-32 and length trailer")
    case("idx_gz_cut_trailer_partial.idx.gz", r, "truncated gzip stream", z[:-3],
         "gzip trailer cut after 5 of 8 bytes")
    case("idx_gz_cut_middle.idx.gz", r, "truncated gzip stream", gz(idx_bytes([100, 100], 10000))[:60],
         "deflate stream cut")
    bad_crc = bytearray(z)
    bad_crc[-8] ^= 0xFF
    case("idx_gz_bad_crc.idx.gz", r, "incorrect data check", bytes(bad_crc), "CRC-32 flipped")
    bad_len = bytearray(z)
    bad_len[-4] ^= 0x01
    case("idx_gz_bad_isize.idx.gz", r, "incorrect length check", bytes(bad_len),
         "ISIZE off by one")
    case("idx_gz_trailing_junk.idx.gz", r, "trailing data after the end of the gzip stream",
         z + b"junk", "4 bytes after the gzip member")
    case("idx_gz_garbage.idx.gz", r, "corrupt gzip data",
         z[:10] + bytes(range(200, 250)) + z[-8:], "deflate data replaced by junk")
    case("idx_gz_lying_4gib.idx.gz", r, "cannot hold more than 1032 times its size",
         gz(idx_bytes([65536, 65536], 0)), "a 32-byte gzip declaring 4 GiB")
    case("idx_gz_truncated_data.idx.gz", r, "truncated data: 99 of 100", gz(good[:-1]),
         "a complete gzip stream one data byte short")
    case("idx_gz_long.idx.gz", r, "dims mismatch", gz(good + b"\0"),
         "a complete gzip stream one data byte too long")
    case("idx_gz_magic_only.idx.gz", r, "truncated gzip stream", b"\x1f\x8b",
         "gzip magic and nothing else")


# ---- PNG -----------------------------------------------------------------------------------

def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


SIG = b"\x89PNG\r\n\x1a\n"


def png(width, height, depth=8, color=2, rows=None, idat=None, extra=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    if idat is None:
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
        row = bytes(math.ceil(width * channels * depth / 8))
        idat = zlib.compress(b"".join(b"\0" + row for _ in range(height)), 9)
    return SIG + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_cases():
    r = "png"
    good = png(16, 16)
    case("png_empty.png", r, "not a PNG", b"", "empty file")
    case("png_text.png", r, "not a PNG", b"hello world, not an image\n", "text")
    case("png_jpeg.png", r, "not a PNG", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32),
         "a JPEG header")
    case("png_truncated.png", r, "truncated", good[:len(good) // 2], "cut in the middle")
    case("png_signature_only.png", r, "truncated", SIG, "the signature alone")
    bad_crc = bytearray(good)
    bad_crc[len(good) - 12 - 4] ^= 0xFF  # the IDAT CRC, just before the 12-byte IEND chunk
    case("png_bad_crc.png", r, "IDAT: CRC error", bytes(bad_crc), "IDAT CRC flipped")
    bad_adler = bytearray(good)
    bad_adler[45] ^= 0xFF
    case("png_bad_zlib.png", r, "incorrect data check", bytes(bad_adler),
         "IDAT data byte flipped (zlib checksum)")
    case("png_huge_declared.png", r, "more than a file of",
         png(30000, 30000, idat=zlib.compress(b"\0" * 100)), "30000x30000 RGB in ~100 bytes")
    case("png_too_wide.png", r, "exceeds user limit",
         png(100000, 1, idat=zlib.compress(b"\0" * 10)), "a 100000-pixel-wide row")
    case("png_zero_width.png", r, "zero", png(0, 1, idat=zlib.compress(b"\0")), "width 0")
    case("png_bad_depth.png", r, "corrupt", png(4, 4, depth=7, idat=zlib.compress(b"\0" * 5)),
         "bit depth 7")
    case("png_idat_garbage.png", r, "corrupt", png(4, 4, idat=bytes(range(60))),
         "IDAT that is not zlib data")
    case("png_no_idat.png", r, "corrupt",
         SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""),
         "no image data")
    huge_chunk = struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"k\0v"
    case("png_huge_chunk.png", r, "corrupt",
         SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) + huge_chunk,
         "a chunk declaring 2 GiB of data")


# ---- list files ----------------------------------------------------------------------------

def list_cases():
    r = "list"
    case("list_nul.txt", r, "NUL byte at byte 15",
         b"/data/img0.png\0evil /data/lbl0.png\n", "a NUL byte inside a path")
    case("list_binary.txt", r, "invalid UTF-8", png(2, 2), "a PNG file given as a list")
    case("list_utf16le.txt", r, "UTF-16",
         "img0.png lbl0.png\n".encode("utf-16"), "UTF-16 with a byte order mark")
    case("list_utf16be.txt", r, "UTF-16", b"\xfe\xff" + "a.png b.png\n".encode("utf-16-be"),
         "UTF-16 big-endian with a byte order mark")
    case("list_utf16_nobom.txt", r, "NUL byte", "a.png b.png\n".encode("utf-16-le"),
         "UTF-16 without a byte order mark")
    case("list_long_line.txt", r, "longer than 4096 bytes",
         b"a.png b.png\n" + b"x" * 5000 + b" y.png\n", "a 5006-byte line")
    case("list_control.txt", r, "control character \\x1B",
         b"img\x1b[31m.png lbl.png\n", "a terminal escape sequence")
    case("list_cr_inside.txt", r, "control character \\x0D",
         b"a.png b.png\rc.png d.png\r", "old Mac line breaks")
    case("list_bad_utf8.txt", r, "invalid UTF-8 at byte 4", b"caf\xe9.png lbl.png\n",
         "Latin-1 text")
    case("list_overlong_utf8.txt", r, "invalid UTF-8", b"a\xc0\xafb.png c.png\n",
         "an overlong encoding of '/'")
    case("list_surrogate_utf8.txt", r, "invalid UTF-8", b"a\xed\xa0\x80.png c.png\n",
         "an encoded UTF-16 surrogate")
    case("list_three_fields.txt", r, "expected '<image path> <label path>'",
         b"a.png b.png c.png\n", "three fields")
    case("list_empty_field.txt", r, "line 2: expected '<image path> <label path>'",
         b"a.png b.png\n c.png\n", "a line starting with a space")
    case("list_empty.txt", r, "has no entries", b"", "empty file")
    case("list_blank.txt", r, "has no entries", b"\n\n\r\n", "blank lines only")


def imdb_cases():
    r = "imdb"
    case("imdb_nul.txt", r, "NUL byte", b"a.png 30 1\nb.png\x0031 0\n", "a NUL byte on line 2")
    case("imdb_utf16.txt", r, "UTF-16", "a.png 30 1\n".encode("utf-16"), "UTF-16")
    case("imdb_binary.txt", r, "control character \\x1F at byte 1", gz(b"a.png 30 1\n"),
         "a gzip file")
    case("imdb_age.txt", r, "age 100 is not in 0..99", b"a.png 3 1\nb.png 100 0\n", "age 100")
    case("imdb_gender.txt", r, "gender 2 is not 0 or 1", b"a.png 3 2\n", "gender 2")
    case("imdb_fields.txt", r, "expected '<image path> <age> <gender>'", b"a.png 3\n",
         "two fields")
    case("imdb_age_overflow.txt", r, "expected '<image path> <age> <gender>'",
         b"a.png 99999999999999999999999 1\n", "an age beyond long long")
    case("imdb_long_line.txt", r, "longer than 4096 bytes", b"a" * 4097 + b" 3 1\n",
         "a 4103-byte line")
    case("imdb_empty.txt", r, "has no entries", b" \t\n", "whitespace only")


# ---- load_parameters -------------------------------------------------------------------------
# The test's store (tests/hostile/hostile_test.cpp): float parameters conv.weight (2, 3) and
# conv.bias (2), buffer bn.running_mean (2); loaded non-strict like `--init-format nddr`.

def weights_file(tensors):
    header, data = {}, b""
    for name in sorted(tensors):
        dtype, shape, payload = tensors[name]
        header[name] = entry(dtype, shape, len(data), len(data) + len(payload))
        data += payload
    return st_bytes(header, data)


def store_tensors(**override):
    t = {"conv.weight": ("F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
         "conv.bias": ("F32", [2], f32(0.5, -0.5)),
         "bn.running_mean": ("F32", [2], f32(0, 0))}
    t.update(override)
    return t


def weights_cases():
    r = "weights"
    case("weights_nan.safetensors", r, "tensor 'conv.weight' element 4 is nan",
         weights_file(store_tensors(**{"conv.weight": ("F32", [2, 3],
                                                       f32(1, 2, 3, 4, float("nan"), 6))})),
         "a NaN weight")
    case("weights_inf.safetensors", r, "tensor 'conv.bias' element 1 is -inf",
         weights_file(store_tensors(**{"conv.bias": ("F32", [2], f32(0, float("-inf")))})),
         "an infinite bias")
    case("weights_f64_overflow.safetensors", r, "is inf in the store's type",
         weights_file(store_tensors(**{"bn.running_mean": ("F64", [2],
                                                           struct.pack("<2d", 1e300, 0))})),
         "1e300 does not fit a float")
    case("weights_unrelated.safetensors", r, "no tensor of the file fits the parameter store",
         weights_file({"encoder.layer0.weight": ("F32", [4], f32(1, 2, 3, 4)),
                       "encoder.layer0.bias": ("F32", [1], f32(1))}),
         "a file for another network")
    case("weights_no_tensors.safetensors", r, "no tensor of the file fits the parameter store",
         st_bytes({}), "a file without tensors")
    mostly = {"conv.bias": ("F32", [2], f32(1, 2))}
    for k in range(5):
        mostly["decoder.block%d.weight" % k] = ("F32", [1], f32(k))
    case("weights_mostly_unknown.safetensors", r,
         "the file and the parameter store share only a few tensors", weights_file(mostly),
         "1 tensor fits, 5 have no place, 2 store entries are left out")
    case("weights_shape_mismatch.safetensors", r,
         "'conv.weight' has shape (3, 2) in the file, expected (2, 3)",
         weights_file(store_tensors(**{"conv.weight": ("F32", [3, 2], f32(1, 2, 3, 4, 5, 6))})),
         "a transposed kernel")
    case("weights_int_dtype.safetensors", r, "has dtype I32, expected a floating dtype",
         weights_file(store_tensors(**{"conv.bias": ("I32", [2], struct.pack("<2i", 1, 2))})),
         "integer weights")
    case("weights_overlap.safetensors", r, "overlap",
         st_bytes({"conv.bias": entry("F32", [2], 0, 8),
                   "bn.running_mean": entry("F32", [2], 4, 12)}, f32(1, 2, 3)),
         "the reader's checks apply to load_parameters")


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    safetensors_cases()
    idx_cases()
    png_cases()
    list_cases()
    imdb_cases()
    weights_cases()
    with open(os.path.join(OUT, "manifest.tsv"), "w", encoding="utf-8") as f:
        f.write("# Written by tools/hostile/make_corpus.py; do not edit.\n")
        f.write("# file\treader\texpected substring of the IoError message\twhat is wrong\n")
        for row in rows:
            f.write("\t".join(row) + "\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("%s: %d cases, %d bytes" % (os.path.relpath(OUT, ROOT), len(rows), total))
    if total > 256 * 1024:
        sys.exit("the corpus is larger than 256 KiB; keep its files small")


if __name__ == "__main__":
    main()
