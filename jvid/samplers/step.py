"""One reverse step read from device memory: guidance (eq. 4), correlated noise (eq. 8-9) and the affine update.

The step index and the per-step coefficients are tensors, so a loop captured once as a CUDA graph replays every step
by advancing the index in place. `sampler_step_reference` is the plain PyTorch statement of that step, the spec of
the fused Triton kernel `jvid.kernels.fused_sampler_step` and the fallback where Triton cannot run;
`check_step_inputs` holds the checks both make.
"""

from __future__ import annotations

import math
import numbers

import torch
from jaxtyping import Float, Int32, Integer
from torch import Tensor

from jvid.noise import NoiseDraw
from jvid.samplers.guidance import combine_guidance
from jvid.samplers.solvers import affine_step
from jvid.shapes import Latents


def sampler_step_reference(
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
    """x ← a_i·x + b_i·ε̂ + σ_i·z with i = `step` and (a_i, b_i, σ_i) = `coefficients[i]` (γ folded into σ_i).

    ε̂ = ε_∅ + g·(ε_y − ε_∅) when `guidance_scale` g is given and `eps` holds [ε_∅; ε_y] on the batch axis (batch
    2b), else ε̂ = `eps` (batch b). z = √r·z_shared + √(1−r)·z_ind from `shared_noise` (b, 1, c, h, w) and `noise`
    (b, f, c, h, w), r = `shared_ratio`; a part whose weight is 0 is None, and both are None for a step without
    noise. All arithmetic in float32 (float64 for float64 x), rounded once to x's dtype. The result goes to `out`
    when given (`out=x` updates x in place); `nonfinite[i]` is set to 1 when it holds NaN or Inf, and never reset.
    """
    check_step_inputs(x, eps, coefficients, step, guidance_scale, noise, shared_noise, shared_ratio, out, nonfinite)
    wide = torch.promote_types(x.dtype, torch.float32)
    index = step.reshape(1).long()
    x_coef, eps_coef, noise_std = coefficients.index_select(0, index)[0]  # 0-d tensors: no host sync
    eps = eps.to(wide)
    if guidance_scale is not None:
        eps = combine_guidance(*eps.chunk(2), guidance_scale)
    z = None
    if noise is not None or shared_noise is not None:
        parts = NoiseDraw(_to(noise, wide), _to(shared_noise, wide), shared_ratio, frames=x.shape[1])
        z = parts.combined(wide)
    result = affine_step(x, eps, z, x_coef, eps_coef, noise_std)
    if nonfinite is not None:
        flagged = nonfinite.index_select(0, index) | (~torch.isfinite(result)).any().to(nonfinite.dtype)
        nonfinite.index_copy_(0, index, flagged)
    return result if out is None else out.copy_(result)


def check_step_inputs(
    x: Tensor,
    eps: Tensor,
    coefficients: Tensor,
    step: Tensor,
    guidance_scale: float | None,
    noise: Tensor | None,
    shared_noise: Tensor | None,
    shared_ratio: float,
    out: Tensor | None,
    nonfinite: Tensor | None,
) -> None:
    """Raises ValueError or TypeError naming the first argument that does not fit one sampler step over x."""
    _check_floating("x", x)
    if x.ndim != 5:
        raise ValueError(f"x must be 5-D latents (b, f, c, h, w), got shape {tuple(x.shape)}")
    b, f, c, h, w = x.shape
    if guidance_scale is None:
        _check_like("eps", eps, x, (b, f, c, h, w), "one ε per sample, as guidance_scale is None")
    else:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
            raise TypeError(f"guidance_scale must be None or a real number, got {type(guidance_scale).__name__}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")
        _check_like("eps", eps, x, (2 * b, f, c, h, w), "[ε_∅; ε_y] stacked on the batch axis, for guidance")
    _check_floating("coefficients", coefficients)
    if coefficients.dtype != torch.float32 or coefficients.ndim != 2 or coefficients.shape[1] != 3:
        raise ValueError(f"coefficients must be a float32 (steps, 3) table of rows (a_i, b_i, σ_i), got "
                         f"{coefficients.dtype} of shape {tuple(coefficients.shape)}")
    _check_device("coefficients", coefficients, x)
    _check_tensor("step", step)
    if step.dtype not in (torch.int32, torch.int64) or step.numel() != 1 or step.ndim > 1:
        raise ValueError(f"step must be an int32 or int64 tensor holding one index (0-d or 1 element), got "
                         f"{step.dtype} of shape {tuple(step.shape)}")
    _check_device("step", step, x)
    if noise is not None or shared_noise is not None:
        _check_like("noise", noise, x, (b, f, c, h, w), "z_ind has x's shape", optional=True)
        _check_like("shared_noise", shared_noise, x, (b, 1, c, h, w), "z_shared is one frame for all", optional=True)
        NoiseDraw(noise, shared_noise, shared_ratio, frames=f)  # which parts r weighs, so which must be given
    if out is not None:
        _check_like("out", out, x, (b, f, c, h, w), "the result has x's shape")
        if out.dtype != x.dtype:
            raise ValueError(f"out must have x's dtype {x.dtype}, got {out.dtype}")
    if nonfinite is not None:
        _check_tensor("nonfinite", nonfinite)
        if nonfinite.dtype != torch.int32 or nonfinite.shape != coefficients.shape[:1]:
            raise ValueError(f"nonfinite must be an int32 tensor of shape ({coefficients.shape[0]},), one flag per "
                             f"row of coefficients, got {nonfinite.dtype} of shape {tuple(nonfinite.shape)}")
        _check_device("nonfinite", nonfinite, x)


def _check_tensor(name: str, value: object) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _check_floating(name: str, value: object) -> None:
    _check_tensor(name, value)
    if not value.is_floating_point():  # type: ignore[union-attr]
        raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")  # type: ignore[union-attr]


def _check_like(name: str, value: object, x: Tensor, shape: tuple[int, ...], why: str, optional: bool = False) -> None:
    """`value` is a floating tensor of `shape` on x's device (or None, when `optional`)."""
    if value is None and optional:
        return
    _check_floating(name, value)
    if tuple(value.shape) != shape:  # type: ignore[union-attr]
        raise ValueError(f"{name} must have shape {shape} ({why}), got {tuple(value.shape)}")  # type: ignore[union-attr]
    _check_device(name, value, x)  # type: ignore[arg-type]


def _check_device(name: str, value: Tensor, x: Tensor) -> None:
    if value.device != x.device:
        raise ValueError(f"{name} is on {value.device} but x is on {x.device}: a step's inputs share x's device")


def _to(part: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if part is None else part.to(dtype)
