"""Classifier-free guidance (paper eq. 4), with the conditional and unconditional passes in one forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from jvid.models.denoiser import Denoiser
from jvid.shapes import Latents, Timesteps


def guided_eps(
    denoiser: Denoiser, x: Latents, t: Timesteps, cond: Any, uncond: Any, guidance_scale: float
) -> Latents:
    """ε̂ = ε(s, t, ∅) + g·(ε(s, t, y) − ε(s, t, ∅)); a plain conditional call when g = 1."""
    if guidance_scale == 1.0:
        return denoiser(x, t, cond)
    both = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([batched(uncond, len(x)), batched(cond, len(x))]))
    eps_uncond, eps_cond = both.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def batched(cond: Any, batch: int) -> Tensor:
    """A conditioning tensor with `batch` rows; a single row is broadcast to all of them."""
    if not isinstance(cond, Tensor):
        raise TypeError(f"classifier-free guidance batches cond and uncond with torch.cat, so both must be "
                        f"tensors; got {type(cond).__name__}")
    if cond.ndim == 0 or cond.shape[0] not in (1, batch):
        raise ValueError(f"a conditioning tensor needs a leading batch axis of 1 or {batch}, got shape {tuple(cond.shape)}")
    return cond.expand(batch, *cond.shape[1:])
