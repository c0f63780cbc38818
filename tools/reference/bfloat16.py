"""Reference values for nddr::bfloat16 rounding (torch's float32 -> bfloat16 conversion).

  bits      float32 inputs as their int32 bit patterns: edge cases (signed zeros, infinities,
            NaNs with payloads, the largest finite floats, subnormals, exact ties with odd and
            even kept parts, one ulp either side of a tie), then random bit patterns over the
            whole float32 range and random normal values
  rounded   the bfloat16 bit pattern torch produces for each (int32, upper 16 bits zero)
Run: /usr/bin/python3 tools/reference/bfloat16.py
"""
import torch

from common import save

EDGE = [
    0x00000000, 0x80000000,                  # +0, -0
    0x7F800000, 0xFF800000,                  # +inf, -inf
    0x7FC00000, 0xFFC00000, 0x7F800001,      # NaNs: quiet, negative quiet, signalling
    0x7FBFFFFF, 0xFFFFFFFF, 0x7FFF8000,
    0x7F7FFFFF, 0xFF7FFFFF,                  # largest finite floats: round up to infinity
    0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001,      # just below / at / above the last tie
    0x7F7E8000,                              # tie with even kept part: stays
    0x00000001, 0x80000001,                  # smallest subnormals
    0x00008000, 0x00018000, 0x00017FFF,      # subnormal ties (even, odd) and below a tie
    0x007FFFFF, 0x00800000,                  # largest subnormal, smallest normal
    0x3F800000, 0x3F808000, 0x3F818000,      # 1.0, tie to even (down), tie to odd (up)
    0x3F807FFF, 0x3F808001, 0xBF808001,      # either side of a tie, negative
    0x3FFFFFFF, 0x40490FDB,                  # just below 2, pi
]


def main():
    gen = torch.Generator().manual_seed(20191125)
    edge = torch.tensor(EDGE, dtype=torch.int64).to(torch.int32)
    random_bits = torch.randint(-(2 ** 31), 2 ** 31, (4000,), generator=gen,
                                dtype=torch.int64).to(torch.int32)
    # Low halves forced to 0x8000 on a quarter of them: exact ties, the case that needs care.
    ties = random_bits[:1000] & ~0xFFFF | 0x8000
    normal = (torch.randn(3000, generator=gen, dtype=torch.float32) * 100).view(torch.int32)
    bits = torch.cat([edge, random_bits, ties, normal])
    rounded = bits.view(torch.float32).to(torch.bfloat16).view(torch.int16)
    rounded = rounded.to(torch.int32) & 0xFFFF
    save("bfloat16", {"bits": bits, "rounded": rounded},
         {"generator": "tools/reference/bfloat16.py"})


if __name__ == "__main__":
    main()
