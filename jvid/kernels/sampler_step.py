"""One reverse step of an affine chain as one Triton kernel: guidance (eq. 4), correlated noise (eq. 8-9) and the
DDPM/DDIM update (eq. 5) with γ folded into σ_i. `jvid.samplers.step.sampler_step_reference` is the PyTorch spec.

Each element is read once from every input and written once: for N elements of x in s-byte latents, N·s of x, N·s
(2·N·s under guidance) of ε, N·s' of z_ind and N·s'/f of z_shared (s' the noise parts' element size; float32 where
0 < r < 1), then N·s written. The step index i and the row (a_i, b_i, σ_i) are loaded from device memory by every
program (a few cached bytes), so a CUDA graph that captured the launch replays any step once `step` is updated in
place; the nonfinite flag is written by the programs that find a NaN or Inf, with no host synchronisation.

The grid is (b·f, tiles of (c, pixels)): each program handles one frame's tile of BLOCK_C channels × BLOCK_P pixels,
so every index is a scalar of the program plus two aranges, and the pixel axis gives 16-byte accesses. Any tensor may
be strided over (b, f, c) (an ε from a network in "b c f h w" layout is read in place); its (h, w) must flatten to one
unit-stride pixel axis, and `out` must be contiguous.
"""

from __future__ import annotations

import math
from typing import no_type_check

import torch
import triton
import triton.language as tl
from jaxtyping import Float, Int32, Integer
from torch import Tensor

from jvid.kernels.launch import on_device_of
from jvid.kernels.rounding import round_to
from jvid.kernels.temporal_smoothing import SUPPORTED_DTYPES, is_interpreted
from jvid.samplers.step import check_step_inputs
from jvid.shapes import Latents

# Each thread handles 8 consecutive pixels of a tile: one 16-byte access per bfloat16 or float16 tensor, two per
# float32 one. Measured on an H100 (benchmarks/NOTES.md): under 2^20 elements a step is launch-bound (about 2 µs
# replayed from a graph) and 2-warp programs spread it over more SMs; above, 8-warp programs of 2048 elements run at
# the copy-bandwidth floor.
_ELEMENTS_PER_THREAD = 8
_SMALL_NUMEL = 2**20
_MAX_TILES = 65535  # CUDA's limit on the grid's second axis


@triton.jit
@no_type_check
def _correlated_noise(noise_ptr, shared_ptr, noise_offsets, shared_offsets, mask, independent_weight, shared_weight):
    """z = √r·z_shared + √(1−r)·z_ind (eq. 9) in float32, from whichever parts are given."""
    if noise_ptr is None:
        z = shared_weight * tl.load(shared_ptr + shared_offsets, mask=mask).to(tl.float32)
    else:
        z = independent_weight * tl.load(noise_ptr + noise_offsets, mask=mask).to(tl.float32)
        if shared_ptr is not None:
            z += shared_weight * tl.load(shared_ptr + shared_offsets, mask=mask).to(tl.float32)
    return z


@triton.jit
@no_type_check
def _sampler_step_kernel(
    x_ptr,
    eps_ptr,
    noise_ptr,
    shared_ptr,
    out_ptr,
    coefficients_ptr,
    step_ptr,
    nonfinite_ptr,
    guidance_scale,
    independent_weight,
    shared_weight,
    batch,
    frames,
    channels,
    pixels,
    pixel_tiles,
    x_sb,
    x_sf,
    x_sc,
    eps_sb,
    eps_sf,
    eps_sc,
    noise_sb,
    noise_sf,
    noise_sc,
    shared_sb,
    shared_sc,
    out_sb,
    out_sf,
    out_sc,
    GUIDED: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)  # video b, frame f: b·frames + f
    b = frame // frames
    f = frame % frames
    tile = tl.program_id(1)
    c = ((tile // pixel_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]).to(tl.int64)
    p = (tile % pixel_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    mask = (c < channels) & (p < pixels)

    step = tl.load(step_ptr)
    x_coef = tl.load(coefficients_ptr + 3 * step)
    eps_coef = tl.load(coefficients_ptr + 3 * step + 1)

    eps_in_frame = f * eps_sf + c * eps_sc + p
    eps = tl.load(eps_ptr + b * eps_sb + eps_in_frame, mask=mask).to(tl.float32)
    if GUIDED:  # eps holds [ε_∅; ε_y]: ε_y of sample b is batch entry b + batch
        eps_cond = tl.load(eps_ptr + (b + batch) * eps_sb + eps_in_frame, mask=mask).to(tl.float32)
        eps = eps + guidance_scale * (eps_cond - eps)
    x = tl.load(x_ptr + b * x_sb + f * x_sf + c * x_sc + p, mask=mask).to(tl.float32)
    result = x_coef * x + eps_coef * eps
    if noise_ptr is not None or shared_ptr is not None:
        noise_std = tl.load(coefficients_ptr + 3 * step + 2)
        noise_offsets = b * noise_sb + f * noise_sf + c * noise_sc + p
        shared_offsets = b * shared_sb + c * shared_sc + p
        z = _correlated_noise(noise_ptr, shared_ptr, noise_offsets, shared_offsets, mask, independent_weight,
                              shared_weight)
        result += noise_std * z

    rounded = round_to(result, out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * out_sb + f * out_sf + c * out_sc + p, rounded, mask=mask)
    if nonfinite_ptr is not None:
        value = rounded.to(tl.float32)
        # Only lanes holding a NaN or Inf store, so a finite step writes nothing; nothing ever writes 0.
        bad = mask & ((value != value) | (tl.abs(value) == float("inf")))
        tl.store(nonfinite_ptr + step + tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.int32), 1, mask=bad)


def fused_sampler_step(
    x: Latents,
    eps: Float[Tensor, "eps_batch f c h w"],
    coefficients: Float[Tensor, "steps 3"],
    step: Integer[Tensor, "..."],
    *,
    guidance_scale: float | None = None,
    noise: Float[Tensor, "b f c h w"] | None = None,
    shared_noise: Float[Tensor, "b 1 c h w"] | None = None,
    shared_ratio: float = 0.0,
    out: Float[Tensor, "b f c h w"] | None = None,
    nonfinite: Int32[Tensor, " steps"] | None = None,
) -> Latents:
    """`jvid.samplers.step.sampler_step_reference` in one kernel launch, for float32/float16/bfloat16 CUDA tensors.

    x ← a_i·x + b_i·ε̂ + σ_i·z with i = `step`, ε̂ from `eps` ([ε_∅; ε_y] under `guidance_scale`), z from `noise`
    (z_ind) and `shared_noise` (z_shared, one frame for all) with ratio r; float32 arithmetic, written in x's dtype to
    `out` (`out=x` updates in place) or a new contiguous tensor. `step` (int32/int64, one element) and `coefficients`
    (float32 rows (a_i, b_i, σ_i)) are read on the device; i must index a row of `coefficients` (it is not checked:
    that would take a host synchronisation). `nonfinite[i]` is set to 1 when an output element is NaN or Inf.

    Inputs may be strided over (b, f, c) but need unit-stride (h, w); `out` must be contiguous. CPU tensors are
    accepted only when Triton runs in its interpreter (TRITON_INTERPRET=1 set before Triton's import).
    """
    check_step_inputs(x, eps, coefficients, step, guidance_scale, noise, shared_noise, shared_ratio, out, nonfinite)
    _check_kernel_inputs(x, eps, noise, shared_noise, out, coefficients, nonfinite)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    batch, frames, channels, h, w = x.shape
    if out.numel() == 0:
        return out
    num_warps = 2 if x.numel() < _SMALL_NUMEL else 8
    block_c, block_p = _blocks(channels, h * w, 32 * num_warps * _ELEMENTS_PER_THREAD)
    pixel_tiles = triton.cdiv(h * w, block_p)
    grid = (batch * frames, triton.cdiv(channels, block_c) * pixel_tiles)
    if grid[1] > _MAX_TILES:
        raise ValueError(f"a frame of shape {tuple(x.shape[2:])} needs {grid[1]} tiles, over the grid's {_MAX_TILES}")
    with on_device_of(x):
        _sampler_step_kernel[grid](
            x,
            eps,
            noise,
            shared_noise,
            out,
            coefficients,
            step,
            nonfinite,
            float(guidance_scale) if guidance_scale is not None else 0.0,
            math.sqrt(1.0 - shared_ratio),
            math.sqrt(shared_ratio),
            batch,
            frames,
            channels,
            h * w,
            pixel_tiles,
            *x.stride()[:3],
            *eps.stride()[:3],
            *(noise.stride()[:3] if noise is not None else (0, 0, 0)),
            *((shared_noise.stride(0), shared_noise.stride(2)) if shared_noise is not None else (0, 0)),
            *out.stride()[:3],
            GUIDED=guidance_scale is not None,
            BLOCK_C=block_c,
            BLOCK_P=block_p,
            num_warps=num_warps,
        )
    return out


def _blocks(channels: int, pixels: int, tile: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): a tile of one frame of about `tile` elements, pixels first so that accesses stay wide."""
    block_p = min(triton.next_power_of_2(pixels), tile)
    block_c = min(triton.next_power_of_2(channels), max(1, tile // block_p))
    return block_c, block_p


def _check_kernel_inputs(
    x: Tensor,
    eps: Tensor,
    noise: Tensor | None,
    shared_noise: Tensor | None,
    out: Tensor | None,
    coefficients: Tensor,
    nonfinite: Tensor | None,
) -> None:
    """What the kernel needs beyond `check_step_inputs`: a device Triton runs on, its dtypes and memory layouts."""
    if not (x.is_cuda or (x.device.type == "cpu" and is_interpreted())):
        raise ValueError(
            f"x is on {x.device}, where Triton cannot run the fused step: use CUDA tensors, set TRITON_INTERPRET=1 "
            "before Triton is imported to run CPU tensors in its interpreter, or use "
            "jvid.samplers.step.sampler_step_reference"
        )
    latents = {"x": x, "eps": eps, "noise": noise, "shared_noise": shared_noise, "out": out}
    for name, tensor in latents.items():
        if tensor is None:
            continue
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"the fused step takes float32, float16 or bfloat16 tensors, got {name} of "
                             f"{tensor.dtype} (jvid.samplers.step.sampler_step_reference takes any float)")
        if not _flat_pixels(tensor):
            raise ValueError(f"{name} must have unit-stride (h, w) (strides {tensor.stride()} for shape "
                             f"{tuple(tensor.shape)}): pass {name}.contiguous()")
    for name, tensor in {"out": out, "coefficients": coefficients, "nonfinite": nonfinite}.items():
        if tensor is not None and not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {tensor.stride()}: pass {name}.contiguous()")


def _flat_pixels(tensor: Tensor) -> bool:
    """Whether (h, w) flatten to one axis of stride 1."""
    _, _, _, h, w = tensor.shape
    stride_h, stride_w = tensor.stride()[3:]
    return (w == 1 or stride_w == 1) and (h == 1 or stride_h == w)
