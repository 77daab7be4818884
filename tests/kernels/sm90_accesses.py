"""Compiles the smoothing kernels for an sm_90 GPU without one, and counts their global memory instructions.

Run as a script (Triton compiles only outside its interpreter, so not in the test process itself). For each shape
in SHAPES it takes the launch that `default_config` picks for contiguous bfloat16 latents on a 132-multiprocessor
GPU, compiles that launch's kernels, and prints a JSON object {shape: {kernel: {"elements_per_thread": n,
"accesses": {PTX instruction: count}}}}: how many elements of a tile each thread holds, and the kernel's `ld.global`
and `st.global` instructions. Launch arguments are specialised as Triton does on a GPU: integers equal to
1 become constants, and pointers and integers divisible by 16 are marked so, except the kernel's `do_not_specialize`
ones.
"""

from __future__ import annotations

import collections
import json
import re

import torch
import triton
from triton.backends.compiler import GPUTarget

from jvid.kernels import temporal_smoothing as kernels

SHAPES = [
    (256, 16, 4, 32, 32),  # whole videos, one tile a frame
    (256, 16, 4, 64, 64),  # whole videos, several tiles a frame
    (256, 16, 4, 8, 8),  # whole videos, 16 frames in flight
    (4, 16, 4, 32, 32),  # groups of 2048 elements
    (8, 16, 4, 64, 64),  # groups of 4096 elements
    (16, 16, 1, 64, 64),  # groups, one channel
    (2, 128, 4, 16, 16),  # groups of 8192 elements: long videos
    (1, 256, 4, 16, 16),  # groups of 16384 elements
    (1, 512, 4, 16, 16),  # fewer tiles than multiprocessors
    (8, 16, 4, 128, 128),  # more tiles than multiprocessors
    (16, 16, 16, 32, 32),  # 16 channels
    (16, 16, 1, 128, 128),  # tiles, one channel
]
MULTIPROCESSORS = 132


def launches(shape: tuple[int, ...]) -> dict[str, tuple]:
    """{kernel name: (kernel, num_warps, its arguments by name)} of the default launch for bfloat16 `shape`."""
    b, f, c, h, w = shape
    pixels = h * w
    config = kernels.default_config(shape, torch.bfloat16, torch.device("cuda"))
    strides = {"stride_b": f * c * pixels, "stride_f": c * pixels, "stride_c": pixels, "stride_p": 1}
    common = {"videos": b, "frames": f, "channels": c, "pixels": pixels, **strides,
              **{f"out_{name}": value for name, value in strides.items() if name != "stride_p"},
              "SIGMA_FLOOR": kernels.SIGMA_FLOOR}
    if config.kind == "groups":
        block_f, block_c, block_p, n_chunks = kernels._group_blocks(f, c, pixels, config.tile_elements)
        values = {"n_chunks": n_chunks, "BLOCK_F": block_f, "BLOCK_C": block_c, "BLOCK_P": block_p,
                  "BLOCK_T": kernels._merge_rows(n_chunks, block_c), "ARRIVAL_STRIDE": kernels._ARRIVAL_STRIDE}
        return {"groups": (kernels._group_kernel, config.num_warps, {**common, **values})}
    block_c, block_p = kernels._blocks(c, pixels, config.tile_elements)
    blocks = {"BLOCK_C": block_c, "BLOCK_P": block_p, "UNROLL": config.frames_per_iteration}
    if config.kind == "videos":
        values = {**common, **blocks, "ONE_TILE": block_p >= pixels}
        return {"videos": (kernels._video_kernel, config.num_warps, values)}
    n_tiles = triton.cdiv(pixels, block_p)
    row, warps, frames = kernels._replacement_blocks(c, pixels, torch.bfloat16.itemsize)
    replacement = {**common, "n_tiles": n_tiles, "BLOCK_C": block_c, "BLOCK_P": row, "MOMENT_P": block_p,
                   "BLOCK_T": kernels._merge_rows(n_tiles, block_c), "UNROLL": frames}
    return {"tiles, moments": (kernels._moments_kernel, config.num_warps, {**common, **blocks, "n_tiles": n_tiles}),
            "tiles, replacement": (kernels._smoothing_kernel, warps, replacement)}


def compiled(kernel, num_warps: int, values: dict) -> dict:
    """The launch's elements of a tile per thread (frames, channels and pixels for groups; channels and pixels
    otherwise) and its global memory instructions."""
    tile = values.get("BLOCK_F", 1) * values["BLOCK_C"] * values["BLOCK_P"]
    return {"elements_per_thread": tile / (32 * num_warps), "accesses": global_accesses(kernel, num_warps, values)}


def global_accesses(kernel, num_warps: int, values: dict) -> dict[str, int]:
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
    kernels._multiprocessors = lambda device: MULTIPROCESSORS
    print(json.dumps({
        "x".join(map(str, shape)): {name: compiled(*launch) for name, launch in launches(shape).items()}
        for shape in SHAPES
    }))
