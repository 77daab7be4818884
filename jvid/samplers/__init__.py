"""Reverse chains over mixtures of ε-models: selection policies, solvers and the mixture sampler."""

from jvid.samplers.graphed import CUDAGraphSampler
from jvid.samplers.mixture import MixtureSampler, SampleResult
from jvid.samplers.selectors import (
    TABLE6,
    FixedSelector,
    NoiseLevelSelector,
    PatternSelector,
    PiecewiseSelector,
    Selector,
    StepInfo,
)
from jvid.samplers.solvers import AffineRun, DDIMSolver, DDPMSolver, SchedulerSolver, Solver, SolverRun

__all__ = [
    "TABLE6",
    "AffineRun",
    "CUDAGraphSampler",
    "DDIMSolver",
    "DDPMSolver",
    "FixedSelector",
    "MixtureSampler",
    "NoiseLevelSelector",
    "PatternSelector",
    "PiecewiseSelector",
    "SampleResult",
    "SchedulerSolver",
    "Selector",
    "Solver",
    "SolverRun",
    "StepInfo",
]
