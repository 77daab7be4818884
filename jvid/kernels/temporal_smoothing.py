"""Temporal latent smoothing (paper sec. 3.6) as fused Triton kernels; `jvid.postproc.smoothing` holds the reference.

Notation of the reference: for each video b, μ[c, p] is the mean of x over frames at pixel p = (h, w),
σ_c = max(std_p μ[c, p], SIGMA_FLOOR) (population std), D[f, p] = Σ_c |x[f, c, p] − μ[c, p]| / σ_c, and the whole
c-vector at (f, p) becomes μ[:, p] where D < threshold.

σ_c needs every pixel of μ before any voxel can be decided. Three ways to cover the latents (`LaunchConfig`;
`default_config` picks one by the batch's size):

- Groups (`_group_kernel`, one launch), for a few small videos: a group of programs per video, each holding a pixel
  chunk of all frames and channels in registers. Each publishes its chunk's moments (Σ_p μ and Σ_p (μ − chunk
  mean)²), waits on an arrival counter until its whole group has, merges them into σ_c and decides its voxels: x is
  read from memory once. The programs of a group wait for each other, so the grid is sized to be resident at once.
- Whole videos per program (`_video_kernel`, one launch), when there are at least as many videos as
  multiprocessors: a program sums its video over frames tile by tile for μ and σ_c (Chan's pairwise merge of the
  tiles' moments), then sweeps the frames again to form D, choose μ or x and write. When a frame's (c, h, w) fits one
  tile, μ stays in registers. The second read comes partly from L2 (before the first pass's lines were marked to
  stay there: on an H100, 1.55 reads of a 256-video bf16 batch from memory, 2 in float32; Nsight Compute,
  benchmarks/NOTES.md).
- Pixel tiles, two launches, otherwise: `_moments_kernel` writes each (tile, video)'s μ (float32) and the moments of
  that μ, and `_smoothing_kernel`, one program per (row of pixels, run of frames, video), merges the moments into
  σ_c, reads its μ back and sweeps its frames. Its rows are its own, wider than the moments' tiles: each thread
  holds all channels of a 16-byte vector of pixels. It takes the videos in the reverse order, so that the last ones
  read are still in cache. x is read twice from memory at worst, plus μ (4·c·h·w bytes a video) and 8·c bytes of
  moments per tile.

Moments are merged by the law of total variance, which has no cancellation. The video and tile kernels' tiles are
(channels, pixels) and frames are walked in a loop, UNROLL at a time, so sums over frames stay in each thread's
registers and several loads are in flight. The arithmetic is the reference's, in float32 for float16/bfloat16/float32
input; the summation orders differ and |x − μ| / σ_c is a product with 1 / σ_c, so D can
differ from the reference's by a few float32 ulps and a voxel whose D lies that close to the threshold may be decided
the other way. float64 is not supported (the reference handles it). Strided input is read in place when (h, w)
flatten to one stride (any permutation of b, f, c is fine, expanded frames too); otherwise the launcher makes a
contiguous copy. The output is a new contiguous tensor.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from dataclasses import dataclass
from typing import no_type_check

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.compiler import CompiledKernel
from triton.runtime import JITFunction

from jvid._checks import int_at_least
from jvid.kernels.launch import on_device_of
from jvid.kernels.rounding import round_to
from jvid.shapes import Latents

SIGMA_FLOOR = 1e-6  # the reference's floor on σ_c (jvid.postproc.smoothing.SIGMA_FLOOR); a test keeps them equal
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MIN_PIXELS = 16  # pixels per row of a tile, so that loads stay coalesced however large f·c is
_MOMENT_ROWS = 1024  # moments loaded at once when merging tiles
# Pixels per row of the moments kernel's default tiles when there are fewer tiles than multiprocessors.
_TILE_PIXELS = 64
# Group launches `default_config` tries, in order: (elements of a video a program holds, warps, programs of it a
# multiprocessor holds at once on an H200 for 4-channel latents). More elements a thread cost registers, fewer make
# more programs; the last two are for long videos, whose chunks of 16 pixels exceed 4096 elements.
_GROUP_LAUNCHES = ((2048, 4, 4), (4096, 2, 4), (8192, 4, 2), (16384, 8, 1))
_ARRIVAL_STRIDE = 32  # int32s between two videos' arrival counters: one 128-byte cache line each
_MAX_GRID_YZ = 65535  # CUDA's bound on a launch grid's second and third dimensions
_REPLACEMENT_VALUES = 128  # latents each thread of the tile pair's replacement kernel holds in flight


# Triton must see the plain function, so `no_type_check` tells jaxtyping's import hook (used by the test run) to
# leave the kernels unwrapped. `frames` is not specialised: a constexpr 1 could not be cast to float. `pixels` is, so
# that Triton knows when rows of pixels are divisible by 16 and vectorises the loads and stores along them; it goes
# to float through `_to_float`.
@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _frame_mean(x_ptr, frames, stride_f, in_tile, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, UNROLL: tl.constexpr):
    """μ over all frames for a (c, pixel) tile, given the tile's pointers at frame 0; zero outside `in_tile`.

    The tile stays two-dimensional, so the sum over frames stays in each thread's registers; UNROLL frames are loaded
    per iteration, so that several loads are in flight at once. Every caller reads the tile again after this pass, so
    its lines are marked to stay in L2 (evict_last).
    """
    total = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    first = tl.zeros((1, 1), dtype=tl.int32)  # frame indices as tensors, also in the interpreter
    for f0 in range(0, frames, UNROLL):
        for u in tl.static_range(UNROLL):
            f = first + f0 + u
            x = tl.load(x_ptr + f * stride_f, mask=in_tile & (f < frames), other=0.0, eviction_policy="evict_last")
            total += x.to(tl.float32)
    return tl.div_rn(total, frames.to(tl.float32))


@triton.jit
@no_type_check
def _tile_moments(mu, in_tile, count):
    """(Σ_p μ, Σ_p (μ − tile mean)²) per channel of a (C, P) tile of μ, zero outside `in_tile`, over `count` pixels."""
    tile_sum = tl.sum(mu, axis=1)
    centred = tl.where(in_tile, mu - tl.div_rn(tile_sum, count)[:, None], 0.0)
    return tile_sum, tl.sum(centred * centred, axis=1)


@triton.jit
@no_type_check
def _store_moments(moments, tile_sum, tile_m2, channels, BLOCK_C: tl.constexpr):
    """A tile's moments at `moments`: [0, c] = Σ_p μ, [1, c] = Σ_p (μ − tile mean)²."""
    c = tl.arange(0, BLOCK_C)
    tl.store(moments + c, tile_sum, mask=c < channels)
    tl.store(moments + channels + c, tile_m2, mask=c < channels)


@triton.jit
@no_type_check
def _to_float(n):
    """An integer as float32, also where it is a launch argument that Triton specialised to the constant 1."""
    return n * 1.0


@triton.jit
@no_type_check
def _sigma(m2, pixels, SIGMA_FLOOR: tl.constexpr):
    """σ_c = max(√(M2 / P), SIGMA_FLOOR); a NaN in the video stays NaN, as in torch's clamp_min, so that D is NaN and
    the video is kept."""
    sigma = tl.sqrt_rn(tl.div_rn(m2, _to_float(pixels)))
    return tl.maximum(sigma, SIGMA_FLOOR, propagate_nan=tl.PropagateNan.ALL)


@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _moments_kernel(
    x_ptr,
    mu_ptr,
    moments_ptr,
    frames,
    channels,
    pixels,
    n_tiles,
    stride_b,
    stride_f,
    stride_c,
    stride_p,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """μ of a (pixel tile, video) into `mu_ptr` ((b, c, pixels), float32), and the tile's moments of μ."""
    tile = tl.program_id(0)
    video = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, BLOCK_C)[:, None]
    p = tile * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    in_tile = (c < channels) & (p < pixels)
    x_tile = x_ptr + video * stride_b + c * stride_c + p * stride_p
    mu = _frame_mean(x_tile, frames, stride_f, in_tile, BLOCK_C, BLOCK_P, UNROLL)
    tl.store(mu_ptr + video * channels * pixels + c * pixels + p, mu, mask=in_tile)
    tile_sum, tile_m2 = _tile_moments(mu, in_tile, tl.minimum(pixels - tile * BLOCK_P, BLOCK_P).to(tl.float32))
    _store_moments(moments_ptr + (video * n_tiles + tile) * 2 * channels, tile_sum, tile_m2, channels, BLOCK_C)


@triton.jit
@no_type_check
def _sigma_from_moments(moments, n_tiles, channels, pixels, SIGMA_FLOOR: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr):
    """σ_c of one video, (BLOCK_C,), from its tiles' moments [tile, 0, c] = Σ_p μ and [tile, 1, c] = Σ_p (μ − tile
    mean)², tiles of BLOCK_P pixels: mean = Σ_t sum_t / P, then P·σ² = Σ_t (M2_t + n_t·(mean_t − mean)²), the law of
    total variance, which has no cancellation. Loads bypass L1, so moments written by other programs are seen."""
    t_idx = tl.arange(0, BLOCK_T)[:, None]
    c_row = tl.arange(0, BLOCK_C)[None, :]
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t0 in range(0, n_tiles, BLOCK_T):
        t = t0 + t_idx
        ok = (t < n_tiles) & (c_row < channels)
        total += tl.sum(tl.load(moments + t * 2 * channels + c_row, mask=ok, other=0.0, cache_modifier=".cg"), axis=0)
    mean = tl.div_rn(total, _to_float(pixels))[None, :]
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t0 in range(0, n_tiles, BLOCK_T):
        t = t0 + t_idx
        ok = (t < n_tiles) & (c_row < channels)
        count = tl.maximum(tl.minimum(pixels - t * BLOCK_P, BLOCK_P), 1).to(tl.float32)
        tile_sum = tl.load(moments + t * 2 * channels + c_row, mask=ok, other=0.0, cache_modifier=".cg")
        tile_m2 = tl.load(moments + t * 2 * channels + channels + c_row, mask=ok, other=0.0, cache_modifier=".cg")
        spread = tl.div_rn(tile_sum, count) - mean
        m2 += tl.sum(tl.where(ok, tile_m2 + count * spread * spread, 0.0), axis=0)
    return _sigma(m2, pixels, SIGMA_FLOOR)


@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _smoothing_kernel(
    x_ptr,
    out_ptr,
    mu_ptr,
    moments_ptr,
    threshold,
    frames,
    channels,
    pixels,
    n_tiles,
    stride_b,
    stride_f,
    stride_c,
    stride_p,
    out_stride_b,
    out_stride_f,
    out_stride_c,
    SIGMA_FLOOR: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    MOMENT_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """The replacement of UNROLL frames of a (pixel tile, video), given the moments kernel's μ and the moments of its
    tiles of MOMENT_P pixels; this kernel's own tiles are BLOCK_P pixels wide."""
    tile = tl.program_id(0)
    first_frame = tl.program_id(1) * UNROLL
    # Videos in the reverse of the moments kernel's order: the last videos it read are the likeliest still in cache.
    video = (tl.num_programs(2) - 1 - tl.program_id(2)).to(tl.int64)

    sigma = _sigma_from_moments(moments_ptr + video * n_tiles * 2 * channels, n_tiles, channels, pixels, SIGMA_FLOOR,
                                BLOCK_C, MOMENT_P, BLOCK_T)[:, None]

    c = tl.arange(0, BLOCK_C)[:, None]
    p = tile * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    in_tile = (c < channels) & (p < pixels)
    mu = tl.load(mu_ptr + video * channels * pixels + c * pixels + p, mask=in_tile, other=0.0)
    x_tile = x_ptr + video * stride_b + first_frame * stride_f + c * stride_c + p * stride_p
    out_tile = out_ptr + video * out_stride_b + first_frame * out_stride_f + c * out_stride_c + p  # contiguous pixels
    _replace_near_mean(x_tile, out_tile, mu, sigma, threshold, tl.minimum(frames - first_frame, UNROLL), stride_f,
                       out_stride_f, in_tile, UNROLL)


@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _replace_near_mean(x_tile, out_tile, mu, sigma, threshold, frames, stride_f, out_stride_f, in_tile,
                       UNROLL: tl.constexpr):
    """Writes, frame by frame, μ where D = Σ_c |x − μ| / σ_c < threshold and x elsewhere, over a (c, pixel) tile.

    `mu` is (C, P) in float32, `sigma` (C, 1); pointers are the tile's at frame 0. Each term |x − μ| / σ_c is a
    product with the rounded 1 / σ_c, within an ulp of the quotient and far cheaper than an IEEE division. This is
    the last read of x and the only write of the output, so both are marked to leave L2 first (evict_first) and not
    push out the tiles still to be read again.
    """
    inverse_sigma = tl.div_rn(1.0, sigma)
    mu_out = round_to(mu, x_tile.dtype.element_ty)
    first = tl.zeros((1, 1), dtype=tl.int32)
    for f0 in range(0, frames, UNROLL):
        for u in tl.static_range(UNROLL):
            f = first + f0 + u
            mask = in_tile & (f < frames)
            x = tl.load(x_tile + f * stride_f, mask=mask, other=0.0, eviction_policy="evict_first")
            # Masked channels hold x = μ = 0 and add nothing to D.
            deviation = tl.sum(tl.abs(x.to(tl.float32) - mu) * inverse_sigma, axis=0)  # D: (BLOCK_P,)
            smoothed = tl.where(deviation[None, :] < threshold, mu_out, x)
            tl.store(out_tile + f * out_stride_f, smoothed, mask=mask, eviction_policy="evict_first")


@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _video_kernel(
    x_ptr,
    out_ptr,
    threshold,
    videos,
    frames,
    channels,
    pixels,
    stride_b,
    stride_f,
    stride_c,
    stride_p,
    out_stride_b,
    out_stride_f,
    out_stride_c,
    SIGMA_FLOOR: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ONE_TILE: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """Whole videos per program, in one launch: σ_c from μ tile by tile (Chan's merge), then the sweep per tile.

    The sweep reads the video again right after the first pass, from cache while the video fits there; with
    ONE_TILE (all pixels in one tile) μ stays in registers between the passes.
    """
    c = tl.arange(0, BLOCK_C)[:, None]
    p_idx = tl.arange(0, BLOCK_P)[None, :]
    for video in range(tl.program_id(0), videos, tl.num_programs(0)):
        index = tl.cast(video, tl.int64)  # a plain int in the interpreter
        x_video = x_ptr + index * stride_b + c * stride_c
        out_video = out_ptr + index * out_stride_b + c * out_stride_c
        if ONE_TILE:
            in_tile = (c < channels) & (p_idx < pixels)
            mu = _frame_mean(x_video + p_idx * stride_p, frames, stride_f, in_tile, BLOCK_C, BLOCK_P, UNROLL)
            _, m2 = _tile_moments(mu, in_tile, _to_float(pixels))
            sigma = _sigma(m2, pixels, SIGMA_FLOOR)[:, None]
            _replace_near_mean(x_video + p_idx * stride_p, out_video + p_idx, mu, sigma, threshold, frames, stride_f,
                               out_stride_f, in_tile, UNROLL)
        else:
            count = 0.0
            mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
            m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
            for p0 in range(0, pixels, BLOCK_P):
                p = p0 + p_idx
                in_tile = (c < channels) & (p < pixels)
                mu = _frame_mean(x_video + p * stride_p, frames, stride_f, in_tile, BLOCK_C, BLOCK_P, UNROLL)
                n = tl.minimum(pixels - p0, BLOCK_P).to(tl.float32)
                tile_sum, tile_m2 = _tile_moments(mu, in_tile, n)
                # Chan et al.'s pairwise update of (count, mean, M2) by the tile's (n, mean, M2).
                delta = tl.div_rn(tile_sum, n) - mean
                total = count + n
                mean += delta * tl.div_rn(n, total)
                m2 += tile_m2 + delta * delta * tl.div_rn(count * n, total)
                count = total
            sigma = _sigma(m2, pixels, SIGMA_FLOOR)[:, None]
            for p0 in range(0, pixels, BLOCK_P):
                p = p0 + p_idx
                in_tile = (c < channels) & (p < pixels)
                mu = _frame_mean(x_video + p * stride_p, frames, stride_f, in_tile, BLOCK_C, BLOCK_P, UNROLL)
                _replace_near_mean(x_video + p * stride_p, out_video + p, mu, sigma, threshold, frames, stride_f,
                                   out_stride_f, in_tile, UNROLL)


@triton.jit(do_not_specialize=["frames"])
@no_type_check
def _group_kernel(
    x_ptr,
    out_ptr,
    moments_ptr,
    arrivals_ptr,
    threshold,
    videos,
    frames,
    channels,
    pixels,
    n_chunks,
    stride_b,
    stride_f,
    stride_c,
    stride_p,
    out_stride_b,
    out_stride_f,
    out_stride_c,
    SIGMA_FLOOR: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
    ARRIVAL_STRIDE: tl.constexpr,
):
    """A group of n_chunks programs per video, one pixel chunk each, all frames and channels of it held in registers:
    x is read from memory once. Each program publishes its chunk's moments and waits until the whole group has, then
    merges them into σ_c and decides its voxels. Groups loop over videos; every program of the launch must be
    resident at once (the launcher sizes the grid so), since the programs of a group wait for each other.
    `arrivals_ptr` counts each video's published chunks, at every ARRIVAL_STRIDE-th int32, and must be zero at
    launch."""
    group = tl.program_id(0) // n_chunks
    chunk = tl.program_id(0) % n_chunks
    groups = tl.num_programs(0) // n_chunks
    f = tl.arange(0, BLOCK_F)[:, None, None]
    c = tl.arange(0, BLOCK_C)[None, :, None]
    p_row = chunk * BLOCK_P + tl.arange(0, BLOCK_P)
    p = p_row[None, None, :]
    in_chunk = (f < frames) & (c < channels) & (p < pixels)
    offsets = f * stride_f + c * stride_c + p * stride_p
    out_offsets = f * out_stride_f + c * out_stride_c + p  # the output is contiguous over pixels
    in_mu = (tl.arange(0, BLOCK_C)[:, None] < channels) & (p_row[None, :] < pixels)
    n = tl.minimum(pixels - chunk * BLOCK_P, BLOCK_P).to(tl.float32)
    for video in range(group, videos, groups):
        index = tl.cast(video, tl.int64)  # a plain int in the interpreter
        x = tl.load(x_ptr + index * stride_b + offsets, mask=in_chunk, other=0.0)
        mu = tl.div_rn(tl.sum(x.to(tl.float32), axis=0), frames.to(tl.float32))  # (C, P); 0 outside the chunk
        chunk_sum, chunk_m2 = _tile_moments(mu, in_mu, n)
        moments = moments_ptr + index * n_chunks * 2 * channels
        _store_moments(moments + chunk * 2 * channels, chunk_sum, chunk_m2, channels, BLOCK_C)
        # Every thread's moments are stored before one thread releases them with its arrival; the acquire that sees
        # the whole group orders the moments' loads after their stores, and the barrier after it lets every thread
        # read them. Counters lie ARRIVAL_STRIDE apart, in cache lines of their own.
        tl.debug_barrier()
        counter = arrivals_ptr + index * ARRIVAL_STRIDE
        arrived = tl.atomic_add(counter, 1, sem="acq_rel") + 1
        while arrived < n_chunks:
            arrived = tl.atomic_add(counter, 0, sem="acquire")
        tl.debug_barrier()
        sigma = _sigma_from_moments(moments, n_chunks, channels, pixels, SIGMA_FLOOR, BLOCK_C, BLOCK_P, BLOCK_T)
        # Masked voxels hold x = μ = 0 and add nothing to D.
        deviation = tl.sum(tl.abs(x.to(tl.float32) - mu[None, :, :]) * tl.div_rn(1.0, sigma)[None, :, None], axis=1)
        smoothed = tl.where(deviation[:, None, :] < threshold, round_to(mu, x.dtype)[None, :, :], x)
        tl.store(out_ptr + index * out_stride_b + out_offsets, smoothed, mask=in_chunk)


@dataclass(frozen=True)
class LaunchConfig:
    """How the kernels cover the latents (every way gives the same result):

    - "groups" (`_group_kernel`, one launch, x read once): a group of programs per video, each holding a pixel chunk
      of all frames and channels, at most `tile_elements` elements (padded to powers of two; at least 16 pixels), in
      registers. The grid never exceeds `programs_per_sm` programs per multiprocessor (None: as many as fit there
      at once, by CUDA's occupancy calculator), so that all are resident together.
    - "videos" (`_video_kernel`, one launch): whole videos per program, walked in tiles of `tile_elements`;
      `programs_per_sm` caps the grid (None: one program per video).
    - "tiles" (`_moments_kernel` then `_smoothing_kernel`): a program per (pixel tile, video) for μ and its tile's
      moments, then one per (row of pixels, run of frames, video) for the replacement. The replacement's rows,
      warps and runs do not depend on the config: each thread holds all channels of a 16-byte vector of pixels,
      so that the sum over channels stays in its registers (`_replacement_blocks`).

    `num_warps` is the warps of each program (of the moments kernel for "tiles"); `frames_per_iteration` the frames
    whose loads the "videos" and moments kernels issue together in their frame loops (more loads in flight, more
    registers)."""

    kind: str
    tile_elements: int = 4096
    num_warps: int = 4
    programs_per_sm: int | None = None
    frames_per_iteration: int = 4

    def __post_init__(self) -> None:
        if self.kind not in _LAUNCHERS:
            raise ValueError(f"kind must be one of {sorted(_LAUNCHERS)}, got {self.kind!r}")
        int_at_least("tile_elements", self.tile_elements, 1)
        if self.num_warps not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"num_warps must be a power of two from 1 to 32, got {self.num_warps!r}")
        if self.programs_per_sm is not None:
            int_at_least("programs_per_sm", self.programs_per_sm, 1)
        if self.frames_per_iteration not in (1, 2, 4, 8, 16):
            raise ValueError(f"frames_per_iteration must be 1, 2, 4, 8 or 16, got {self.frames_per_iteration!r}")


def default_config(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> LaunchConfig:
    """The fastest launch of an H200 sweep for each regime (benchmarks/bench_smoothing.py --sweep, figures in
    benchmarks/NOTES.md): whole videos per program when there are enough videos to fill the chip, with 8 warps
    loading frames until each thread has about 128 values in flight (4 warps and 2 frames for half-precision frames
    that fill a tile); groups of programs holding 2048 elements (4 warps), else 4096 (2 warps), else for long videos
    8192 (4 warps) or 16384 (8 warps), when one round of them covers the batch; otherwise the tile pair, whose
    moments kernel takes tiles 64 pixels wide (wider for 1-2 channels) with two frames and 4 warps when there are
    fewer tiles than multiprocessors, else tiles of 512 elements with eight frames and 4 warps."""
    b, f, c, h, w = shape
    multiprocessors = _multiprocessors(device)
    if b >= multiprocessors:
        if dtype.itemsize == 2 and c * h * w >= 4096:  # a frame fills the tile: fewer registers, more programs
            return LaunchConfig("videos", 4096, num_warps=4, frames_per_iteration=2)
        per_thread = max(1, math.prod(_blocks(c, h * w, 4096)) // 256)  # tile elements each thread of 8 warps holds
        return LaunchConfig("videos", 4096, num_warps=8, frames_per_iteration=min(16, 128 // per_thread))
    # One round of groups, and chunks no larger than asked for. The interpreter runs one program at a time. On a GPU
    # one program a multiprocessor always fits, so a group never outgrows the chip, wherever fewer fit than assumed.
    for elements, warps, per_sm in _GROUP_LAUNCHES:
        block_f, block_c, block_p, n_chunks = _group_blocks(f, c, h * w, elements)
        resident = (per_sm if device.type == "cuda" else 1) * multiprocessors
        if block_f * block_c * block_p <= elements and n_chunks <= multiprocessors and b * n_chunks <= resident:
            return LaunchConfig("groups", elements, num_warps=warps)
    # Rows of 64 pixels, so fewer with many channels, but at least 256 elements (the 4-channel tile) in all.
    tile = min(max(_TILE_PIXELS * triton.next_power_of_2(c), 256), 4096)
    if b * triton.cdiv(h * w, _blocks(c, h * w, tile)[1]) < multiprocessors:
        return LaunchConfig("tiles", tile, num_warps=4, frames_per_iteration=2)
    return LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)


def fused_temporal_smoothing(latents: Tensor, threshold: float, config: LaunchConfig | None = None) -> Latents:
    """Sec. 3.6 with threshold c, fused: the reference's result for float32/float16/bfloat16 CUDA latents.

    CPU tensors are accepted only when Triton runs in its interpreter (TRITON_INTERPRET=1 set before Triton's import).
    `config` overrides the launch chosen by `default_config`; every config gives the same result.
    """
    _check_inputs(latents, threshold)
    out = torch.empty(latents.shape, dtype=latents.dtype, device=latents.device)
    if out.numel() == 0:
        return out
    x, stride_p = _with_flat_pixels(latents)
    config = config or default_config(tuple(latents.shape), latents.dtype, latents.device)
    with on_device_of(x):
        _LAUNCHERS[config.kind](x, stride_p, out, float(threshold), config)
    return out


def _blocks(c: int, pixels: int, tile_elements: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): all channels, and as many pixels as fit in `tile_elements` (at least _MIN_PIXELS)."""
    block_c = triton.next_power_of_2(c)
    block_p = min(triton.next_power_of_2(pixels), max(_MIN_PIXELS, tile_elements // block_c))
    return block_c, block_p


def _merge_rows(parts: int, block_c: int) -> int:
    """BLOCK_T of `_sigma_from_moments`: rows of moments loaded at once when merging a video's `parts` tiles or
    chunks, at most _MOMENT_ROWS moments in all."""
    return min(triton.next_power_of_2(parts), max(1, _MOMENT_ROWS // block_c))


def _launch_tiled(x: Tensor, stride_p: int, out: Tensor, threshold: float, config: LaunchConfig) -> None:
    b, f, c, h, w = x.shape
    pixels = h * w
    block_c, block_p = _blocks(c, pixels, config.tile_elements)
    n_tiles = triton.cdiv(pixels, block_p)
    row, warps, frames = _replacement_blocks(c, pixels, x.element_size())
    runs = triton.cdiv(f, frames)
    if runs > _MAX_GRID_YZ:
        raise ValueError(
            f"the replacement kernel splits {f} frames into {runs} runs of {frames}, more than the {_MAX_GRID_YZ} a "
            "launch grid's dimension holds: use another kind"
        )
    for first in range(0, b, _MAX_GRID_YZ):  # videos lie along the grids' last dimension
        x_part, out_part = x[first:first + _MAX_GRID_YZ], out[first:first + _MAX_GRID_YZ]
        videos = x_part.shape[0]
        strides = (x_part.stride(0), x_part.stride(1), x_part.stride(2), stride_p)
        mu = torch.empty((videos, c, pixels), dtype=torch.float32, device=x.device)
        moments = torch.empty((videos, n_tiles, 2, c), dtype=torch.float32, device=x.device)
        _moments_kernel[(n_tiles, videos)](x_part, mu, moments, f, c, pixels, n_tiles, *strides, BLOCK_C=block_c,
                                           BLOCK_P=block_p, UNROLL=config.frames_per_iteration,
                                           num_warps=config.num_warps)
        _smoothing_kernel[(triton.cdiv(pixels, row), runs, videos)](
            x_part, out_part, mu, moments, threshold, f, c, pixels, n_tiles, *strides, *out_part.stride()[:3],
            SIGMA_FLOOR=SIGMA_FLOOR, BLOCK_C=block_c, BLOCK_P=row, MOMENT_P=block_p,
            BLOCK_T=_merge_rows(n_tiles, block_c), UNROLL=frames, num_warps=warps,
        )


def _replacement_blocks(c: int, pixels: int, itemsize: int) -> tuple[int, int, int]:
    """(BLOCK_P, num_warps, UNROLL) of the tile pair's replacement kernel: every thread holds all channels of one
    16-byte vector of pixels (fewer pixels where that would pass _REPLACEMENT_VALUES), so that D's sum over channels
    stays in its registers; rows of up to 4 warps, and frames in flight until each thread has about
    _REPLACEMENT_VALUES values."""
    block_c, row_max = triton.next_power_of_2(c), triton.next_power_of_2(pixels)
    vector = max(1, min(16 // itemsize, _REPLACEMENT_VALUES // block_c))
    warps = max(1, min(4, row_max // (32 * vector)))
    frames = max(1, min(16, _REPLACEMENT_VALUES // (block_c * vector)))
    return min(32 * warps * vector, row_max), warps, frames


def _launch_per_video(x: Tensor, stride_p: int, out: Tensor, threshold: float, config: LaunchConfig) -> None:
    b, f, c, h, w = x.shape
    pixels = h * w
    block_c, block_p = _blocks(c, pixels, config.tile_elements)
    programs = b if config.programs_per_sm is None else min(b, config.programs_per_sm * _multiprocessors(x.device))
    _video_kernel[(programs,)](x, out, threshold, b, f, c, pixels, x.stride(0), x.stride(1), x.stride(2), stride_p,
                               *out.stride()[:3], SIGMA_FLOOR=SIGMA_FLOOR, BLOCK_C=block_c,
                               BLOCK_P=block_p, ONE_TILE=block_p >= pixels, UNROLL=config.frames_per_iteration,
                               num_warps=config.num_warps)


def _group_blocks(f: int, c: int, pixels: int, tile_elements: int) -> tuple[int, int, int, int]:
    """(BLOCK_F, BLOCK_C, BLOCK_P, chunks per video) of the group kernel: all frames and channels, and as many pixels
    as fit in `tile_elements` (at least _MIN_PIXELS)."""
    block_f, block_c = triton.next_power_of_2(f), triton.next_power_of_2(c)
    block_p = min(triton.next_power_of_2(pixels), max(_MIN_PIXELS, tile_elements // (block_f * block_c)))
    return block_f, block_c, block_p, triton.cdiv(pixels, block_p)


def _launch_groups(x: Tensor, stride_p: int, out: Tensor, threshold: float, config: LaunchConfig) -> None:
    b, f, c, h, w = x.shape
    pixels = h * w
    block_f, block_c, block_p, n_chunks = _group_blocks(f, c, pixels, config.tile_elements)
    moments = torch.empty((b, n_chunks, 2, c), dtype=torch.float32, device=x.device)
    arrivals = torch.zeros(b * _ARRIVAL_STRIDE, dtype=torch.int32, device=x.device)
    args = (x, out, moments, arrivals, threshold, b, f, c, pixels, n_chunks, *x.stride()[:3], stride_p,
            *out.stride()[:3])
    meta = {"SIGMA_FLOOR": SIGMA_FLOOR, "BLOCK_F": block_f, "BLOCK_C": block_c, "BLOCK_P": block_p,
            "BLOCK_T": _merge_rows(n_chunks, block_c), "ARRIVAL_STRIDE": _ARRIVAL_STRIDE,
            "num_warps": config.num_warps}
    if x.is_cuda:
        fit = _resident_per_multiprocessor(_group_kernel.warmup(*args, grid=(1,), **meta))
        if config.programs_per_sm is not None and config.programs_per_sm > fit:
            raise ValueError(
                f"{config} asks for {config.programs_per_sm} programs per multiprocessor, but only {fit} of this "
                f"launch's programs fit on one at once: lower programs_per_sm or leave it None"
            )
        resident = (config.programs_per_sm or fit) * _multiprocessors(x.device)
    else:
        resident = 1
    if n_chunks > resident:
        where = f"{resident} can be resident" if x.is_cuda else "the interpreter runs one program at a time"
        raise ValueError(
            f"{config} splits each video of shape {tuple(x.shape[1:])} into {n_chunks} chunks, which must all run at "
            f"once, but {where}: raise tile_elements or use another kind"
        )
    _group_kernel[(min(b, resident // n_chunks) * n_chunks,)](*args, **meta)


_LAUNCHERS = {"groups": _launch_groups, "videos": _launch_per_video, "tiles": _launch_tiled}


@functools.lru_cache
def _resident_per_multiprocessor(kernel: CompiledKernel) -> int:
    """How many programs of a compiled kernel one multiprocessor holds at once, as CUDA's occupancy calculator
    counts their warps, registers and shared memory."""
    kernel._init_handles()  # loads the kernel's module, if no launch has yet
    count = ctypes.c_int()
    status = _driver().cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(count), ctypes.c_void_p(kernel.function), ctypes.c_int(32 * kernel.metadata.num_warps),
        ctypes.c_size_t(kernel.metadata.shared),
    )
    if status != 0:
        raise RuntimeError(f"cuOccupancyMaxActiveBlocksPerMultiprocessor failed with CUDA error {status}")
    return count.value


@functools.lru_cache
def _driver() -> ctypes.CDLL:
    """The CUDA driver library, which every process that runs CUDA kernels has loaded."""
    return ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")


@functools.lru_cache
def _multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 for the CPU interpreter."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _check_inputs(latents: Tensor, threshold: float) -> None:
    if not isinstance(latents, Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim != 5:
        raise ValueError(f"latents must be 5-D (b, f, c, h, w), got shape {tuple(latents.shape)}")
    if latents.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"the fused kernel takes float32, float16 or bfloat16 latents, got {latents.dtype} "
            "(use jvid.postproc.temporal_latent_smoothing for float64)"
        )
    if not (latents.is_cuda or (latents.device.type == "cpu" and is_interpreted())):
        raise ValueError(
            f"latents are on {latents.device}, where Triton cannot run them: use a CUDA tensor, "
            "or set TRITON_INTERPRET=1 before Triton is imported to run CPU tensors in its interpreter"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0.0:
        raise ValueError(f"threshold must be a non-negative real number, got {threshold!r}")
    # Offsets inside one video, of the input and of the contiguous output, are int32 in the kernels.
    reach = sum((n - 1) * abs(s) for n, s in zip(latents.shape[1:], latents.stride()[1:]) if n > 0)
    if max(reach + 1, latents.shape[1:].numel()) > 2**31:
        raise ValueError(f"one video of shape {tuple(latents.shape[1:])} spans 2^31 elements or more")


def _with_flat_pixels(latents: Tensor) -> tuple[Tensor, int]:
    """`latents` and one stride that walks its h·w pixels in order, copying only if (h, w) do not flatten."""
    _, _, _, h, w = latents.shape
    stride_h, stride_w = latents.stride()[3:]
    if w == 1:
        return latents, stride_h
    if h == 1 or stride_h == w * stride_w:
        return latents, stride_w
    contiguous = latents.contiguous()
    return contiguous, 1


def is_interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 when Triton was imported)."""
    return not isinstance(_smoothing_kernel, JITFunction)
