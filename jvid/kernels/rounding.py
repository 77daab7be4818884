"""Rounding float32 results to a kernel's output dtype, alike in compiled kernels and in Triton's interpreter."""

from __future__ import annotations

from typing import no_type_check

import triton
import triton.language as tl


@triton.jit
@no_type_check
def round_to(value, dtype: tl.constexpr):
    """float32 `value` in `dtype`, rounded to nearest even as compiled Triton and torch round.

    Triton's interpreter truncates float32 to bfloat16, so that case is rounded by hand; it gives the same bits as the
    compiled conversion for every finite value and infinity (a NaN whose payload sits in the low 16 bits only would
    become infinity, and arithmetic never makes one).
    """
    if dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits += 0x7FFF + ((bits >> 16) & 1)
        rounded = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        rounded = value.to(dtype)
    return rounded
