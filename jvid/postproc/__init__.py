"""Latent post-processing after the reverse chain: temporal smoothing (paper sec. 3.6, 4.2)."""

from jvid.postproc.smoothing import (
    GaussianTemporalSmoother,
    Smoother,
    TemporalLatentSmoother,
    UniformTemporalSmoother,
    temporal_latent_smoothing,
)

__all__ = [
    "Smoother",
    "TemporalLatentSmoother",
    "GaussianTemporalSmoother",
    "UniformTemporalSmoother",
    "temporal_latent_smoothing",
]
