"""Selection policies: which denoiser runs at each step of the reverse chain (paper sec. 3.4, 4.3)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class StepInfo:
    """Where a step sits in the chain: `index` 0 is the first, noisiest step; `timestep` is the training t."""

    index: int
    num_steps: int
    timestep: int | float

    @property
    def progress(self) -> float:
        """index / (num_steps − 1): 0 at the first step, 1 at the last (0 for a one-step chain)."""
        return self.index / (self.num_steps - 1) if self.num_steps > 1 else 0.0


@runtime_checkable
class Selector(Protocol):
    """Chooses the index of the denoiser for one step; randomness only through `generator`."""

    def select(self, step: StepInfo, generator: torch.Generator | None) -> int: ...


def uniform(generator: torch.Generator | None) -> float:
    """One U[0, 1) draw from `generator` (the global RNG when None), on the generator's device."""
    device = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, device=device, dtype=torch.float64))


TABLE6 = {64: (0.2, 0.7, 0.3, 0.3), 128: (0.4, 0.7, 0.4, 0.1), 256: (0.1, 0.6, 0.2, 0.1)}
"""Paper Table 6: (t_v, t_e, p_e, p_f) that worked best at each resolution."""


class PiecewiseSelector:
    """The paper's P_V (sec. 4.3): video only until t_v, then linear 1 → p_e until t_e, then p_e → p_f."""

    def __init__(self, t_v: float, t_e: float, p_e: float, p_f: float, video: int = 0, image: int = 1) -> None:
        for name, value in (("t_v", t_v), ("t_e", t_e), ("p_e", p_e), ("p_f", p_f)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite real number, got {value!r}")
        if not 0.0 <= t_v <= t_e < 1.0:
            raise ValueError(f"need 0 <= t_v <= t_e < 1, got t_v={t_v}, t_e={t_e}")
        for name, value in (("p_e", p_e), ("p_f", p_f)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}")
        video, image = _index("video", video), _index("image", image)
        if video == image:
            raise ValueError(f"video and image must name different denoisers, both are {video}")
        self.t_v, self.t_e, self.p_e, self.p_f = float(t_v), float(t_e), float(p_e), float(p_f)
        self.video, self.image = video, image

    @classmethod
    def table6(cls, resolution: int, video: int = 0, image: int = 1) -> PiecewiseSelector:
        """The paper's best setting for a 64, 128 or 256 pixel model (Table 6)."""
        if resolution not in TABLE6:
            raise ValueError(f"Table 6 has presets for resolutions {sorted(TABLE6)}, not {resolution!r}")
        return cls(*TABLE6[resolution], video=video, image=image)

    def video_probability(self, progress: float) -> float:
        """P_V at `progress` in [0, 1]; the continuous reading of the paper's piecewise-affine function."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must lie in [0, 1], got {progress}")
        if progress < self.t_v:
            return 1.0
        if progress < self.t_e:
            return 1.0 + (progress - self.t_v) / (self.t_e - self.t_v) * (self.p_e - 1.0)
        return self.p_e + (progress - self.t_e) / (1.0 - self.t_e) * (self.p_f - self.p_e)

    def select(self, step: StepInfo, generator: torch.Generator | None) -> int:
        # One draw every step, whatever P_V is, so one seed couples the plans of a whole parameter sweep.
        return self.video if uniform(generator) < self.video_probability(step.progress) else self.image

    def __repr__(self) -> str:
        return (
            f"PiecewiseSelector(t_v={self.t_v}, t_e={self.t_e}, p_e={self.p_e}, p_f={self.p_f}, "
            f"video={self.video}, image={self.image})"
        )


class FixedSelector:
    """Always the same denoiser: a plain single-model chain."""

    def __init__(self, index: int = 0) -> None:
        self.index = _index("index", index)

    def select(self, step: StepInfo, generator: torch.Generator | None) -> int:
        return self.index

    def __repr__(self) -> str:
        return f"FixedSelector({self.index})"


class PatternSelector:
    """A repeating pattern of denoisers, e.g. `[0, 1]` alternates video and image."""

    def __init__(self, pattern: Sequence[int]) -> None:
        if isinstance(pattern, (str, bytes)) or not isinstance(pattern, Sequence) or len(pattern) == 0:
            raise ValueError(f"pattern must be a non-empty sequence of denoiser indices, got {pattern!r}")
        self.pattern = tuple(_index("pattern entry", k) for k in pattern)

    def select(self, step: StepInfo, generator: torch.Generator | None) -> int:
        return self.pattern[step.index % len(self.pattern)]

    def __repr__(self) -> str:
        return f"PatternSelector({list(self.pattern)})"


class NoiseLevelSelector:
    """Experts by noise level (as in eDiff-I): model k runs while boundaries[k-1] > t >= boundaries[k].

    `boundaries` are strictly decreasing training timesteps; steps at t >= boundaries[0] use `models[0]`, steps
    below the last boundary use `models[-1]`. `models` defaults to 0, 1, ..., len(boundaries).
    """

    def __init__(self, boundaries: Sequence[int | float], models: Sequence[int] | None = None) -> None:
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence) or len(boundaries) == 0:
            raise ValueError(f"boundaries must be a non-empty sequence of timesteps, got {boundaries!r}")
        if any(not math.isfinite(b) for b in boundaries) or any(
            later >= earlier for earlier, later in zip(boundaries, boundaries[1:])
        ):
            raise ValueError(f"boundaries must be finite and strictly decreasing, got {list(boundaries)}")
        models = range(len(boundaries) + 1) if models is None else models
        if len(models) != len(boundaries) + 1:
            raise ValueError(f"{len(boundaries)} boundaries split the chain into {len(boundaries) + 1} ranges, "
                             f"but {len(models)} models were given")
        self.boundaries = tuple(float(b) for b in boundaries)
        self.models = tuple(_index("models entry", k) for k in models)

    def select(self, step: StepInfo, generator: torch.Generator | None) -> int:
        below = sum(step.timestep < b for b in self.boundaries)
        return self.models[below]

    def __repr__(self) -> str:
        return f"NoiseLevelSelector(boundaries={list(self.boundaries)}, models={list(self.models)})"


def _index(name: str, value: object) -> int:
    try:
        index = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a denoiser index (a non-negative int), got {value!r}") from None
    if isinstance(value, bool) or index < 0:
        raise ValueError(f"{name} must be a denoiser index (a non-negative int), got {value!r}")
    return index
