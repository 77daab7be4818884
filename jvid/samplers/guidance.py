"""Classifier-free guidance (paper eq. 4), with the conditional and unconditional passes in one forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from jvid.models.denoiser import Denoiser
from jvid.shapes import Latents, Timesteps


def guided_eps(
    denoiser: Denoiser, x: Latents, t: Timesteps, cond: Any, uncond: Any, guidance_scale: float
) -> Latents:
    """ε̂ = ε(s, t, ∅) + g·(ε(s, t, y) − ε(s, t, ∅)); a plain conditional call when g = 1."""
    if guidance_scale == 1.0:
        return denoiser(x, t, cond)
    eps_uncond, eps_cond = paired_eps(denoiser, x, t, guidance_context(cond, uncond, len(x))).chunk(2)
    return combine_guidance(eps_uncond, eps_cond, guidance_scale)


def combine_guidance(eps_uncond: Latents, eps_cond: Latents, guidance_scale: float) -> Latents:
    """Eq. 4 on the two predictions: ε̂ = ε_∅ + g·(ε_y − ε_∅), in their dtype."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def paired_eps(
    denoiser: Callable[[Latents, Timesteps, Any], Latents], x: Latents, t: Timesteps, context: Tensor
) -> Float[Tensor, "2*b f c h w"]:
    """[ε(s, t, ∅); ε(s, t, y)] from one call over the doubled batch, `context` from `guidance_context`; `denoiser`
    is a Denoiser or its compiled call."""
    return denoiser(torch.cat([x, x]), torch.cat([t, t]), context)


def guidance_context(cond: Any, uncond: Any, batch: int) -> Tensor:
    """[∅; y]: the unconditional rows over the conditional ones, `batch` of each."""
    return torch.cat([batched(uncond, batch), batched(cond, batch)])


def batched(cond: Any, batch: int) -> Tensor:
    """A conditioning tensor with `batch` rows; a single row is broadcast to all of them."""
    if not isinstance(cond, Tensor):
        raise TypeError(f"classifier-free guidance batches cond and uncond with torch.cat, so both must be "
                        f"tensors; got {type(cond).__name__}")
    if cond.ndim == 0 or cond.shape[0] not in (1, batch):
        raise ValueError(f"a conditioning tensor needs a leading batch axis of 1 or {batch}, got shape {tuple(cond.shape)}")
    return cond.expand(batch, *cond.shape[1:])
