"""jvid: compose diffusion models at sampling time (Joint Video-Image Diffusion)."""

# First, so that annotation checking (pyproject's --jaxtyping-packages) can resolve it while jvid loads.
from jvid import _typecheck  # noqa: F401  # isort: skip

from jvid.models.denoiser import Denoiser
from jvid.samplers import (
    FixedSelector,
    MixtureSampler,
    NoiseLevelSelector,
    PatternSelector,
    PiecewiseSelector,
    SampleResult,
    Selector,
    StepInfo,
)
from jvid.pipeline import JVIDPipeline
from jvid.schedule import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "FixedSelector",
    "JVIDPipeline",
    "MixtureSampler",
    "NoiseLevelSelector",
    "NoiseSchedule",
    "PatternSelector",
    "PiecewiseSelector",
    "SampleResult",
    "Selector",
    "StepInfo",
]
