"""Tensor annotations for jvid's one latent layout, `(batch, frames, channels, height, width)`."""

from jaxtyping import Float, Real
from torch import Tensor

Latents = Float[Tensor, "b f c h w"]
"""Latent videos in jvid's canonical layout."""

Timesteps = Real[Tensor, " b"]
"""One training timestep per batch element: integers from jvid's solvers, fractional from some diffusers schedulers."""

__all__ = ["Latents", "Timesteps"]
