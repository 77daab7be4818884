"""Tensor annotations for jvid's one latent layout, `(batch, frames, channels, height, width)`."""

from jaxtyping import Float, Int
from torch import Tensor

Latents = Float[Tensor, "b f c h w"]
"""Latent videos in jvid's canonical layout."""

Timesteps = Int[Tensor, " b"]
"""One training timestep per batch element."""

__all__ = ["Latents", "Timesteps"]
