"""Softmax attention over short sequences as one Triton kernel: the temporal layers of a video network.

A temporal attention layer attends over the f frames of each pixel: at 32x32 latents the top-level layer of a
Table-1 LVDM sees 8,192 sequences of 16 tokens, with 8 heads of 64 channels. `scaled_dot_product_attention`'s fused
kernels tile queries and keys by 64 to 128 rows and run a program per (sequence, head), so most of each tile is
padding and each program does little work. Here one program takes BLOCK_H heads of one sequence, holds their whole
query, key and value tiles (BLOCK_L ≥ 16 tokens, BLOCK_D ≥ 16 channels, zero-padded) in registers, and computes

    o = softmax(q kᵀ · scale) v

with both products as batched matrix multiplies over the heads: q, k and v are read once and o written once.

Arithmetic: the scores and the softmax in float32, the softmax weights rounded to the input's dtype before the
second product (as the fused attention kernels do), and that product accumulated in float32. float32 input keeps
float32 products (no TF32). The tests check it against float64 softmax attention and `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import no_type_check

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from jvid._checks import int_at_least
from jvid.kernels.launch import on_device_of
from jvid.kernels.rounding import round_to
from jvid.kernels.temporal_smoothing import SUPPORTED_DTYPES, is_interpreted

MAX_LENGTH = 32  # tokens a sequence may have: each head's whole (BLOCK_L, BLOCK_L) score tile is in registers; on an
# H100 the kernel is 4-6x faster than scaled_dot_product_attention at 16 tokens, 2.7x at 32, and slower than its
# memory-efficient kernel at 64 (benchmarks/bench_attention.py)
MAX_HEAD_DIM = 128
_LOG2_E = 1.4426950408889634


@triton.jit
@no_type_check
def _matmul(a, b, IEEE: tl.constexpr, WIDEN: tl.constexpr):
    """a @ b over the last two axes, accumulated in float32; IEEE keeps float32 products exact (no TF32).

    WIDEN multiplies float32 copies: Triton's interpreter multiplies bfloat16 matrices wrongly, and a product of two
    bfloat16 values is exact in float32, so the result is the compiled one up to summation order."""
    if WIDEN:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision="ieee" if IEEE else "tf32")
    return out


@triton.jit
@no_type_check
def _short_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    scale_log2,
    length,
    heads,
    head_dim,
    stride_qb,
    stride_qh,
    stride_ql,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_ob,
    stride_oh,
    stride_ol,
    BLOCK_H: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    WIDEN: tl.constexpr,
):
    """One program: heads [BLOCK_H·j, BLOCK_H·(j+1)) of sequence i, for program ids (i, j). Channels are unit-stride."""
    sequence = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None, None]
    token = tl.arange(0, BLOCK_L)[None, :, None]
    d = tl.arange(0, BLOCK_D)[None, None, :]
    inside = (h < heads) & (token < length) & (d < head_dim)
    q = tl.load(q_ptr + sequence * stride_qb + h * stride_qh + token * stride_ql + d, mask=inside, other=0.0)
    k = tl.load(k_ptr + sequence * stride_kb + h * stride_kh + token * stride_kl + d, mask=inside, other=0.0)
    v = tl.load(v_ptr + sequence * stride_vb + h * stride_vh + token * stride_vl + d, mask=inside, other=0.0)
    # scores in log2 units, so that exp2 gives the softmax's exponentials; padded keys get -inf, weight 0
    scores = _matmul(q, tl.trans(k, 0, 2, 1), IEEE, WIDEN) * scale_log2  # (H, L, L)
    key_inside = tl.arange(0, BLOCK_L)[None, None, :] < length
    scores = tl.where(key_inside, scores, float("-inf"))
    weights = tl.exp2(scores - tl.max(scores, axis=2)[:, :, None])
    total = tl.sum(weights, axis=2)
    out = _matmul(round_to(weights, v.dtype), v, IEEE, WIDEN)  # (H, L, D), float32
    out = tl.div_rn(out, total[:, :, None])
    o = o_ptr + sequence * stride_ob + h * stride_oh + token * stride_ol + d
    tl.store(o, round_to(out, o_ptr.dtype.element_ty), mask=inside)


@dataclass(frozen=True)
class AttentionLaunch:
    """How `short_attention` covers (sequences, heads): `heads_per_program` heads of one sequence a program (a power
    of two), with `num_warps` warps. The default is within 5% of the fastest launch at every 16-token shape of the
    Table-1 LVDM on an H100 (`python benchmarks/bench_attention.py --sweep`)."""

    heads_per_program: int = 4
    num_warps: int = 4

    def __post_init__(self) -> None:
        int_at_least("heads_per_program", self.heads_per_program, 1)
        if self.heads_per_program & (self.heads_per_program - 1):
            raise ValueError(f"heads_per_program must be a power of two, got {self.heads_per_program}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be a power of two from 1 to 16, got {self.num_warps!r}")


def short_attention(
    query: Float[Tensor, "batch heads length head_dim"],
    key: Float[Tensor, "batch heads length head_dim"],
    value: Float[Tensor, "batch heads length head_dim"],
    scale: float | None = None,
    launch: AttentionLaunch | None = None,
) -> Float[Tensor, "batch heads length head_dim"]:
    """`F.scaled_dot_product_attention(query, key, value, scale=scale)` (no mask, no dropout) for self-attention
    over sequences of at most MAX_LENGTH tokens, in one kernel launch.

    Inputs may be strided views (diffusers' `(b, l, h·d).view(b, l, h, d).transpose(1, 2)` is read in place) but their
    channels must be unit-stride. The result is a `(batch, heads, length, head_dim)` view of memory laid out as
    `(batch, length, heads, head_dim)`, so that merging the heads back into channels costs no copy. CPU tensors are
    accepted only when Triton runs in its interpreter. The launch is a custom operator (`torch.ops.jvid.
    short_attention`), which torch.compile keeps as one opaque call.
    """
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    problem = unfit(query, key, value)
    if problem is None and not (query.is_cuda or (query.device.type == "cpu" and is_interpreted())):
        problem = (f"tensors are on {query.device}, where Triton cannot run them: use CUDA tensors, or set "
                   "TRITON_INTERPRET=1 before Triton is imported to run CPU tensors in its interpreter")
    if problem is not None:
        raise ValueError(problem)
    launch = launch or AttentionLaunch()
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    return _short_attention_op(query, key, value, scale, launch.heads_per_program, launch.num_warps)


def unfit(query: Tensor, key: Tensor, value: Tensor) -> str | None:
    """Why `short_attention` does not take these tensors (their device aside), or None if it does."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if tensor.ndim != 4:
            return f"{name} must be 4-D (batch, heads, length, head_dim), got shape {tuple(tensor.shape)}"
        if tensor.shape[-1] > 1 and tensor.stride(-1) != 1:
            return f"{name} must have unit-stride channels, got strides {tensor.stride()}"
    if not query.shape == key.shape == value.shape:
        return (f"short attention is self-attention: query, key and value must have one shape, got "
                f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    if not query.dtype == key.dtype == value.dtype or query.dtype not in SUPPORTED_DTYPES:
        return f"query, key and value must share one of {SUPPORTED_DTYPES}, got {query.dtype}, {key.dtype} and " \
               f"{value.dtype}"
    if not query.device == key.device == value.device:
        return f"query, key and value must be on one device, got {query.device}, {key.device} and {value.device}"
    _, _, length, head_dim = query.shape
    if length > MAX_LENGTH or head_dim > MAX_HEAD_DIM:
        return (f"short attention takes at most {MAX_LENGTH} tokens of at most {MAX_HEAD_DIM} channels a head, got "
                f"{length} tokens of {head_dim}: use F.scaled_dot_product_attention")
    return None


@torch.library.custom_op("jvid::short_attention", mutates_args=())
@no_type_check
def _short_attention_op(query: Tensor, key: Tensor, value: Tensor, scale: float, heads_per_program: int,
                        num_warps: int) -> Tensor:
    batch, heads, length, head_dim = query.shape
    out = torch.empty((batch, length, heads, head_dim), dtype=query.dtype, device=query.device).transpose(1, 2)
    if out.numel() == 0:
        return out
    block_h = min(heads_per_program, triton.next_power_of_2(heads))
    grid = (batch, triton.cdiv(heads, block_h))
    strides = [s for tensor in (query, key, value, out) for s in tensor.stride()[:3]]
    with on_device_of(query):
        _short_attention_kernel[grid](
            query, key, value, out, scale * _LOG2_E, length, heads, head_dim, *strides,
            BLOCK_H=block_h, BLOCK_L=max(16, triton.next_power_of_2(length)),
            BLOCK_D=max(16, triton.next_power_of_2(head_dim)), IEEE=query.dtype == torch.float32,
            WIDEN=query.dtype == torch.bfloat16 and is_interpreted(), num_warps=num_warps,
        )
    return out


@_short_attention_op.register_fake
@no_type_check
def _(query: Tensor, key: Tensor, value: Tensor, scale: float, heads_per_program: int, num_warps: int) -> Tensor:
    batch, heads, length, head_dim = query.shape
    return query.new_empty((batch, length, heads, head_dim)).transpose(1, 2)
