"""Post-processing that removes flicker from finished latents: the paper's sec. 3.6 and its sec. 4.2 baselines."""

from __future__ import annotations

import importlib.util
import math
from typing import Protocol, runtime_checkable

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from jvid._checks import finite_real
from jvid.shapes import Latents

SIGMA_FLOOR = 1e-6
"""Lower bound on σ_c, so a channel whose frame mean μ is flat over (h, w) does not divide by zero."""


@runtime_checkable
class Smoother(Protocol):
    """Maps latents to latents of the same shape, dtype and device."""

    def __call__(self, latents: Latents) -> Latents: ...


def temporal_latent_smoothing(latents: Latents, threshold: float) -> Latents:
    """Sec. 3.6 with threshold c: every (b, f, h, w) whose Σ_c |x − μ| / σ_c is below c takes the frame mean μ.

    The plain PyTorch reference for fused kernels; computed in float32 (float64 for float64 input).
    """
    x = latents.to(_compute_dtype(latents.dtype))
    mu = x.mean(dim=1, keepdim=True)  # μ_{c,h,w}: (b, 1, c, h, w)
    sigma = mu.std(dim=(3, 4), correction=0, keepdim=True).clamp_min(SIGMA_FLOOR)  # σ_c: (b, 1, c, 1, 1)
    deviation = ((x - mu).abs() / sigma).sum(dim=2, keepdim=True)  # (b, f, 1, h, w)
    return torch.where(deviation < threshold, mu, x).to(latents.dtype)


class TemporalLatentSmoother:
    """The paper's temporal latent smoothing (sec. 3.6) with threshold c; c = 2 worked best in sec. 4.2."""

    def __init__(self, threshold: float = 2.0) -> None:
        self.threshold = finite_real("threshold", threshold)
        if threshold < 0.0:
            raise ValueError(f"threshold c must be non-negative, got {threshold!r}")

    def __call__(self, latents: Tensor) -> Latents:
        """Smooths `latents`: CUDA float32/16/bf16 latents take the fused Triton kernel, all others the reference."""
        _check_latents(latents)
        if latents.is_cuda and importlib.util.find_spec("triton") is not None:  # Triton: Linux builds of torch only
            from jvid.kernels import SUPPORTED_DTYPES, fused_temporal_smoothing

            if latents.dtype in SUPPORTED_DTYPES:
                return fused_temporal_smoothing(latents, self.threshold)
        return temporal_latent_smoothing(latents, self.threshold)

    def __repr__(self) -> str:
        return f"TemporalLatentSmoother(threshold={self.threshold!r})"


class _FrameKernelSmoother:
    """Convolves each (b, c, h, w) series over frames with the odd, centred kernel `self.weights`.

    The convolution is one batched matrix product of an (f, f) frame-mixing matrix with each video's (f, c·h·w)
    latents, which PyTorch runs as a single GEMM that reads the latents once and writes them once (besides the
    float32 casts of half-precision input), so these smoothers have no kernel of their own."""

    weights: Float[Tensor, " k"]

    def __call__(self, latents: Tensor) -> Latents:
        """Smooths `latents` along the frame axis only."""
        _check_latents(latents)
        return _smooth_frames(latents, self.weights)


class GaussianTemporalSmoother(_FrameKernelSmoother):
    """Sec. 4.2 baseline: along frames only, weights exp(−k²/(2σ²)) for offsets |k| ≤ ⌈3σ⌉."""

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = finite_real("sigma", sigma)
        if sigma <= 0.0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        radius = math.ceil(3.0 * self.sigma)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        self.weights = torch.exp(-(offsets**2) / (2.0 * self.sigma**2))

    def __repr__(self) -> str:
        return f"GaussianTemporalSmoother(sigma={self.sigma!r})"


class UniformTemporalSmoother(_FrameKernelSmoother):
    """Sec. 4.2 baseline: along frames only, a moving average over an odd `window` of frames."""

    def __init__(self, window: int = 3) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd int, got {window!r}")
        self.window = window
        self.weights = torch.ones(window, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"UniformTemporalSmoother(window={self.window})"


def _smooth_frames(latents: Latents, weights: Float[Tensor, " k"]) -> Latents:
    """1-D convolution over frames with the odd, centred kernel `weights`, cut at the video's ends and renormalised."""
    x = latents.to(_compute_dtype(latents.dtype))
    mixing = _frame_mixing(weights, latents.shape[1]).to(device=x.device, dtype=x.dtype)
    series = rearrange(x, "b f c h w -> b f (c h w)")  # a view of contiguous latents
    mixed = torch.matmul(mixing, series)  # the (f, f) matrix broadcast over videos: one batched GEMM
    return mixed.view(x.shape).to(latents.dtype)


def _frame_mixing(weights: Float[Tensor, " k"], frames: int) -> Float[Tensor, "f f"]:
    """Row t weighs frame s by weights[s − t + radius]; the row is zero beyond the kernel and sums to 1."""
    radius = (weights.numel() - 1) // 2
    frame = torch.arange(frames)
    offset = frame[None, :] - frame[:, None]  # s − t
    inside = offset.abs() <= radius
    # The clamp only keeps the gather in bounds; `inside` zeroes every entry it changed.
    mixing = torch.where(inside, weights[(offset + radius).clamp(0, 2 * radius)], 0.0)
    return mixing / mixing.sum(dim=1, keepdim=True)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_latents(latents: Tensor) -> None:
    if not isinstance(latents, Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim != 5 or not latents.is_floating_point():
        raise ValueError(
            f"latents must be a 5-D floating tensor (b, f, c, h, w), got shape {tuple(latents.shape)} "
            f"of dtype {latents.dtype}"
        )
