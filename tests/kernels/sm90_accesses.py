"""Compiles the smoothing kernels for an sm_90 GPU without one, and counts their global memory instructions.

Run as a script (Triton compiles only outside its interpreter, so not in the test process itself): prints, for each
kernel launch of a 2x16x4x32x32 bfloat16 batch, a JSON object {PTX instruction: count} of its `ld.global` and
`st.global` instructions. Launch arguments are specialised as Triton does on a GPU: integers equal to 1 become
constants, and pointers and integers divisible by 16 are marked so, except the kernel's `do_not_specialize` ones.
"""

from __future__ import annotations

import collections
import json
import re

import triton
from triton.backends.compiler import GPUTarget

from jvid.kernels import temporal_smoothing as kernels

# A contiguous 2x16x4x32x32 batch (b, f, c, h·w), the output alike.
INTEGERS = {"videos": 2, "frames": 16, "channels": 4, "pixels": 1024, "stride_b": 65536, "stride_f": 4096,
            "stride_c": 1024, "stride_p": 1, "out_stride_b": 65536, "out_stride_f": 4096, "out_stride_c": 1024}
LAUNCHES = {
    "videos, one tile": (kernels._video_kernel, 4, {"BLOCK_C": 4, "BLOCK_P": 1024, "ONE_TILE": True, "UNROLL": 2}),
    "videos, tiles": (kernels._video_kernel, 4, {"BLOCK_C": 4, "BLOCK_P": 256, "ONE_TILE": False, "UNROLL": 4}),
    "tiles, moments": (kernels._moments_kernel, 2, {"n_tiles": 16, "BLOCK_C": 4, "BLOCK_P": 64, "UNROLL": 8}),
    "tiles, replacement": (kernels._smoothing_kernel, 2,
                           {"n_tiles": 16, "BLOCK_C": 4, "BLOCK_P": 64, "BLOCK_T": 16, "UNROLL": 8}),
    "groups": (kernels._group_kernel, 1, {"n_chunks": 32, "BLOCK_F": 16, "BLOCK_C": 4, "BLOCK_P": 32, "BLOCK_T": 32,
                                          "ARRIVAL_STRIDE": 32}),
}


def global_accesses(kernel, num_warps: int, values: dict) -> dict[str, int]:
    values = {**INTEGERS, "SIGMA_FLOOR": kernels.SIGMA_FLOOR, **values}
    signature, constants, attributes = {}, {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in ("x_ptr", "out_ptr"):
            signature[name] = "*bf16"
        elif name.endswith("_ptr"):
            signature[name] = "*i32" if name == "arrivals_ptr" else "*fp32"
        elif name == "threshold":
            signature[name] = "fp32"
        elif name.isupper() or values[name] == 1:
            signature[name] = "constexpr"
            constants[(index,)] = values[name]
            continue
        else:
            signature[name] = "i32"
        pointer = name.endswith("_ptr")
        if name not in kernel.do_not_specialize and (pointer or (name != "threshold" and values[name] % 16 == 0)):
            attributes[(index,)] = [["tt.divisibility", 16]]
    source = triton.compiler.ASTSource(kernel, signature, constants, attributes)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    return dict(collections.Counter(re.findall(r"\b(?:ld|st)\.global[\w.:]*", compiled.asm["ptx"])))


if __name__ == "__main__":
    print(json.dumps({name: global_accesses(*launch) for name, launch in LAUNCHES.items()}))
