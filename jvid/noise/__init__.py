"""Noise generators for the z term of the reverse chain (paper sec. 3.5)."""

from jvid.noise.generators import CorrelatedNoise, IndependentNoise, NoiseDraw, NoiseGenerator, noise_draw

__all__ = ["NoiseGenerator", "IndependentNoise", "CorrelatedNoise", "NoiseDraw", "noise_draw"]
