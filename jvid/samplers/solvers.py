"""Reverse-process solvers: how one ε estimate moves the latents from timestep t to the next one.

jvid's own DDPM (eq. 5) and DDIM steps are affine in (x, ε, z): s_prev = a_i·s + b_i·ε + σ_i·z. Their coefficients
are computed once per run in float64, so the loop does no schedule arithmetic and a fused kernel can apply them.
Any diffusers scheduler can drive a mixture too, through `SchedulerSolver`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from jvid.schedule import NoiseSchedule
from jvid.shapes import Latents


@runtime_checkable
class SolverRun(Protocol):
    """One planned chain: the timesteps it visits and the update at each of them."""

    timesteps: Sequence[int | float]
    init_noise_sigma: float

    def adds_noise(self, index: int) -> bool:
        """Whether step `index` wants a noise draw z from the sampler's noise generator."""
        ...

    def model_input(self, index: int, x: Latents) -> Latents:
        """The latents as the denoiser must see them at step `index`."""
        ...

    def step(self, index: int, x: Latents, eps: Latents, noise: Latents | None) -> Latents:
        """The latents after step `index`, given the (guided) ε and, when `adds_noise`, the draw z."""
        ...


@runtime_checkable
class Solver(Protocol):
    """Plans a run of `num_steps` model evaluations over a schedule."""

    def start(
        self, schedule: NoiseSchedule, num_steps: int, *, gamma: float, generator: Any = None
    ) -> SolverRun: ...


def leading_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """diffusers' default "leading" spacing: t = k·⌊T/n⌋ for k = n−1, …, 0."""
    ratio = num_train_timesteps // num_steps
    return [k * ratio for k in reversed(range(num_steps))]


@dataclass(frozen=True)
class AffineRun:
    """A run whose step i is s ← a[i]·s + b[i]·ε + σ[i]·z, computed in float32 or wider."""

    timesteps: list[int]
    x_coef: list[float]
    eps_coef: list[float]
    noise_std: list[float]
    init_noise_sigma: float = 1.0

    def adds_noise(self, index: int) -> bool:
        return self.noise_std[index] > 0.0

    def model_input(self, index: int, x: Latents) -> Latents:
        return x

    def step(self, index: int, x: Latents, eps: Latents, noise: Latents | None) -> Latents:
        return affine_step(x, eps, noise, self.x_coef[index], self.eps_coef[index], self.noise_std[index])


Coefficient = float | Float[Tensor, ""]


def affine_step(
    x: Latents, eps: Latents, noise: Latents | None, x_coef: Coefficient, eps_coef: Coefficient, noise_std: Coefficient
) -> Latents:
    """s ← a·s + b·ε + σ·z in float32 or wider, rounded to s's dtype once; coefficients as floats or 0-d tensors."""
    wide = torch.promote_types(x.dtype, torch.float32)
    out = x.to(wide) * x_coef + eps.to(wide) * eps_coef
    if noise is not None:
        out = out + noise.to(wide) * noise_std
    return out.to(x.dtype)


def _alpha_pairs(schedule: NoiseSchedule, timesteps: list[int]) -> list[tuple[float, float]]:
    """(ᾱ_t, ᾱ_prev) for each step; the step after the last lands on ᾱ = 1 (clean data)."""
    abar = schedule.alphas_cumprod.tolist()
    prev = [abar[t] for t in timesteps[1:]] + [1.0]
    return [(abar[t], p) for t, p in zip(timesteps, prev)]


def _check_count(schedule: NoiseSchedule, num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    if not 1 <= num_steps <= schedule.num_train_timesteps:
        raise ValueError(f"num_steps must lie in [1, {schedule.num_train_timesteps}] (the schedule's T), "
                         f"got {num_steps}")


def _check_steps(schedule: NoiseSchedule, num_steps: int) -> None:
    """A step count jvid's affine solvers can run, on a schedule of ε-models."""
    _check_count(schedule, num_steps)
    if schedule.prediction_type != "epsilon":
        raise ValueError(f"jvid's ddpm/ddim solvers take ε-models; this schedule's prediction_type is "
                         f"{schedule.prediction_type!r} (drive it with a diffusers scheduler via SchedulerSolver)")


class DDPMSolver:
    """Ancestral DDPM (Ho et al., paper eq. 5) over strided timesteps, with σ_t² = β̃_t and γ scaling σ_t·z.

    Over leading-spaced timesteps this is exactly diffusers' DDPMScheduler with variance_type="fixed_small" and
    clip_sample=False. With stride 1 it reduces to eq. 5: s_{t−1} = (s_t − β_t/√(1−ᾱ_t)·ε)/√α_t + γ·σ_t·z.
    """

    def start(self, schedule: NoiseSchedule, num_steps: int, *, gamma: float, generator: Any = None) -> AffineRun:
        _check_steps(schedule, num_steps)
        timesteps = leading_timesteps(schedule.num_train_timesteps, num_steps)
        a, b, s = [], [], []
        for abar_t, abar_prev in _alpha_pairs(schedule, timesteps):
            alpha = abar_t / abar_prev  # α over the stride, ᾱ_t / ᾱ_prev
            beta = 1.0 - alpha
            # Posterior mean of q(s_prev | s_t, ŝ_0) with ŝ_0 = (s_t − √(1−ᾱ_t)·ε)/√ᾱ_t, written as a·s_t + b·ε.
            x0_weight = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
            xt_weight = math.sqrt(alpha) * (1.0 - abar_prev) / (1.0 - abar_t)
            a.append(x0_weight / math.sqrt(abar_t) + xt_weight)
            b.append(-x0_weight * math.sqrt(1.0 - abar_t) / math.sqrt(abar_t))
            variance = (1.0 - abar_prev) / (1.0 - abar_t) * beta  # β̃ over the stride; 0 on the last step
            s.append(gamma * math.sqrt(max(variance, 0.0)))
        return AffineRun(timesteps, a, b, s)

    def __repr__(self) -> str:
        return "DDPMSolver()"


class DDIMSolver:
    """DDIM (Song et al.) with stochasticity η over leading-spaced timesteps; γ scales the η-noise term.

    Equal to diffusers' DDIMScheduler with set_alpha_to_one=True and clip_sample=False.
    """

    def __init__(self, eta: float = 0.0) -> None:
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a real number in [0, 1], got {eta!r}")
        self.eta = float(eta)

    def start(self, schedule: NoiseSchedule, num_steps: int, *, gamma: float, generator: Any = None) -> AffineRun:
        _check_steps(schedule, num_steps)
        timesteps = leading_timesteps(schedule.num_train_timesteps, num_steps)
        a, b, s = [], [], []
        for abar_t, abar_prev in _alpha_pairs(schedule, timesteps):
            std = self.eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
            # s_prev = √ᾱ_prev·ŝ_0 + √(1 − ᾱ_prev − std²)·ε + std·z
            a.append(math.sqrt(abar_prev / abar_t))
            b.append(math.sqrt(1.0 - abar_prev - std**2) - math.sqrt(abar_prev * (1.0 - abar_t) / abar_t))
            s.append(gamma * std)
        return AffineRun(timesteps, a, b, s)

    def __repr__(self) -> str:
        return f"DDIMSolver(eta={self.eta})"


class SchedulerSolver:
    """Drives a mixture with any diffusers scheduler (PNDM, DPM-Solver, Euler, ...).

    A fresh copy of the scheduler serves each run, so multistep histories (PNDM's past ε) carry across model
    switches within a run and never leak between runs. The scheduler draws its own noise: jvid's noise
    generators and γ apply to DDPMSolver and DDIMSolver only.
    """

    def __init__(self, scheduler: Any) -> None:
        for method in ("set_timesteps", "step", "from_config"):
            if not callable(getattr(scheduler, method, None)):
                raise TypeError(f"expected a diffusers scheduler (with .{method}), got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def start(self, schedule: NoiseSchedule, num_steps: int, *, gamma: float, generator: Any = None) -> SolverRun:
        if gamma != 1.0:
            raise ValueError(f"gamma={gamma} needs jvid's ddpm or ddim solver: a diffusers scheduler adds its own noise")
        _check_count(schedule, num_steps)
        difference = NoiseSchedule.from_diffusers(self.scheduler).difference(schedule)
        if difference is not None:
            raise ValueError(f"the scheduler's schedule does not match the denoisers': {difference}")
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(num_steps)
        return _SchedulerRun(scheduler, generator)

    def __repr__(self) -> str:
        return f"SchedulerSolver({type(self.scheduler).__name__})"


class _SchedulerRun:
    def __init__(self, scheduler: Any, generator: Any) -> None:
        self.scheduler = scheduler
        self._timesteps = scheduler.timesteps
        self.timesteps = [t.item() for t in scheduler.timesteps]
        self.init_noise_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))
        takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        self._step_kwargs = {"generator": generator} if takes_generator else {}

    def adds_noise(self, index: int) -> bool:
        return False

    def model_input(self, index: int, x: Latents) -> Latents:
        return self.scheduler.scale_model_input(x, self._timesteps[index])

    def step(self, index: int, x: Latents, eps: Latents, noise: Latents | None) -> Latents:
        out: Tensor = self.scheduler.step(eps, self._timesteps[index], x, **self._step_kwargs).prev_sample
        return out.to(x.dtype)


def resolve_solver(solver: str | Solver | Any) -> Solver:
    """A Solver from a name ("ddpm", "ddim"), a Solver, or a diffusers scheduler."""
    if isinstance(solver, str):
        names = {"ddpm": DDPMSolver, "ddim": DDIMSolver}
        if solver not in names:
            raise ValueError(f"unknown solver {solver!r}; use one of {sorted(names)}, a Solver or a diffusers scheduler")
        return names[solver]()
    if isinstance(solver, Solver):
        return solver
    return SchedulerSolver(solver)
