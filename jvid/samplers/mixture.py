"""The mixture of denoising models (paper sec. 3.4): one reverse chain, one ε-model per step."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from jvid.models.denoiser import Denoiser
from jvid.noise import IndependentNoise, NoiseGenerator
from jvid.samplers.guidance import guided_eps
from jvid.samplers.selectors import Selector, StepInfo
from jvid.samplers.solvers import Solver, SolverRun, resolve_solver
from jvid.schedule import NoiseSchedule
from jvid.shapes import Latents

Generators = torch.Generator | list[torch.Generator] | None
StepCallback = Callable[[StepInfo, int, torch.Tensor], None]


@dataclass(frozen=True)
class SampleResult:
    """The denoised latents, with the denoiser index (`plan`) and training timestep of every step."""

    latents: Latents
    plan: list[int]
    timesteps: list[int | float]


@dataclass(frozen=True)
class PlannedChain:
    """A checked call of `sample`, with everything fixed before the first step: x_T as the chain starts it, the
    solver's run, the plan, and the conditioning of each denoiser."""

    x: Latents
    run: SolverRun
    plan: list[int]
    conds: list[Any]
    unconds: list[Any]

    def result(self, latents: Latents) -> SampleResult:
        return SampleResult(latents=latents, plan=self.plan, timesteps=list(self.run.timesteps))


class MixtureSampler:
    """Runs a reverse chain over any number of ε-models that share a schedule, one model per step.

    `selector` picks the model of each step; `solver` is "ddpm" (eq. 5), "ddim", a `Solver`, or a diffusers
    scheduler; `noise` is one `NoiseGenerator` for all models or one per model (the paper's r_v and r_i);
    `gamma` scales the stochastic term, σ_t·z → γ·σ_t·z (sec. 3.5).
    """

    def __init__(
        self,
        denoisers: Sequence[Denoiser],
        selector: Selector,
        *,
        solver: str | Solver | Any = "ddpm",
        noise: NoiseGenerator | Sequence[NoiseGenerator] | None = None,
        gamma: float = 1.0,
        check_finite: bool = True,
    ) -> None:
        if isinstance(denoisers, Denoiser) or not isinstance(denoisers, Sequence) or len(denoisers) == 0:
            raise TypeError("denoisers must be a non-empty list of Denoisers")
        for i, denoiser in enumerate(denoisers):
            if not isinstance(denoiser, Denoiser):
                raise TypeError(f"denoiser {i} ({type(denoiser).__name__}) is not a Denoiser: it needs a "
                                f".schedule and a __call__(x, t, cond)")
            if not isinstance(denoiser.schedule, NoiseSchedule):
                raise TypeError(f"{_name(i, denoiser)} has a .schedule of type {type(denoiser.schedule).__name__}, "
                                f"not NoiseSchedule")
        if not isinstance(selector, Selector):
            raise TypeError(f"selector ({type(selector).__name__}) needs a select(step, generator) method")
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma scales the noise term and must be a finite number >= 0, got {gamma!r}")
        self.denoisers = list(denoisers)
        self.selector = selector
        self.solver = resolve_solver(solver)
        self.noise = _per_denoiser("noise", IndependentNoise() if noise is None else noise, len(self.denoisers))
        for i, generator in enumerate(self.noise):
            if not isinstance(generator, NoiseGenerator):
                raise TypeError(f"noise for denoiser {i} ({type(generator).__name__}) needs a sample(shape, ...) method")
        self.gamma = float(gamma)
        self.check_finite = check_finite
        self.schedule = self._shared_schedule()

    def _shared_schedule(self) -> NoiseSchedule:
        """The one schedule of all denoisers; any disagreement is an error naming the two models."""
        first = self.denoisers[0]
        for i, other in enumerate(self.denoisers[1:], start=1):
            difference = first.schedule.difference(other.schedule)
            if difference is not None:
                raise ValueError(f"{_name(0, first)} and {_name(i, other)} do not share a noise schedule "
                                 f"({difference}); a mixture needs models trained on the same perturbation process")
        return first.schedule

    def _start(self, num_steps: int, generator: Generators) -> SolverRun:
        return self.solver.start(self.schedule, num_steps, gamma=self.gamma, generator=generator)

    def plan(self, num_steps: int, generator: torch.Generator | None = None) -> list[int]:
        """The denoiser index of every step of a `num_steps` run, drawn ahead from `generator`."""
        return self._draw_plan(self._start(num_steps, None).timesteps, generator)

    def _draw_plan(self, timesteps: Sequence[int | float], generator: torch.Generator | None) -> list[int]:
        plan = []
        for index, timestep in enumerate(timesteps):
            step = StepInfo(index=index, num_steps=len(timesteps), timestep=timestep)
            plan.append(self._checked_index(self.selector.select(step, generator), f"step {index}"))
        return plan

    def _checked_index(self, choice: Any, where: str) -> int:
        try:
            index = operator.index(choice)
        except TypeError:
            raise ValueError(f"{self.selector!r} returned {choice!r} at {where}, not an int index") from None
        if not 0 <= index < len(self.denoisers):
            raise ValueError(f"{self.selector!r} chose denoiser {index} at {where}, but there are only "
                             f"{len(self.denoisers)} (indices 0..{len(self.denoisers) - 1})")
        return index

    @torch.no_grad()
    def sample(
        self,
        x_T: Latents,
        *,
        num_steps: int,
        cond: Any = None,
        uncond: Any = None,
        guidance_scale: float = 1.0,
        generator: Generators = None,
        plan: Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = True,
    ) -> SampleResult:
        """Denoise `x_T` (b, f, c, h, w) in `num_steps` steps.

        `cond`/`uncond` go to every denoiser, or give a list with one entry per denoiser (models with different
        text encoders). `generator` is one torch.Generator or one per sample; with per-sample generators pass a
        `plan` drawn once with `plan()`, so that every shard of a batch uses the same plan. `callback(step,
        denoiser_index, latents)` runs after each step.
        """
        chain = self._prepare(x_T, num_steps, cond, uncond, guidance_scale, generator, plan)
        x, run, n = chain.x, chain.run, len(chain.plan)
        timesteps = torch.tensor(run.timesteps, device=x.device)
        finite = torch.ones(n, dtype=torch.bool, device=x.device) if self.check_finite else None
        for i in tqdm(range(n), desc="jvid", disable=not progress):
            k = chain.plan[i]
            denoiser = self.denoisers[k]
            t = timesteps[i].expand(len(x))
            eps = guided_eps(denoiser, run.model_input(i, x), t, chain.conds[k], chain.unconds[k], guidance_scale)
            self._check_eps(k, i, eps, x)
            noise = self._noise(k, x, generator) if run.adds_noise(i) else None
            x = run.step(i, x, eps, noise)
            if finite is not None:
                finite[i] = torch.isfinite(x).all()  # no host sync here; read once after the loop
            if callback is not None:
                callback(StepInfo(index=i, num_steps=n, timestep=run.timesteps[i]), k, x)
        if finite is not None:
            self._raise_if_not_finite(chain, ~finite)
        return chain.result(x)

    def _prepare(
        self,
        x_T: Latents,
        num_steps: int,
        cond: Any,
        uncond: Any,
        guidance_scale: float,
        generator: Generators,
        plan: Sequence[int] | None,
    ) -> PlannedChain:
        """Checks the inputs of `sample` and draws what is fixed before the first step: solver run and plan."""
        if not isinstance(x_T, torch.Tensor) or x_T.ndim != 5 or not x_T.is_floating_point():
            raise ValueError(f"x_T must be a floating tensor (batch, frames, channels, height, width), got "
                             f"{_describe(x_T)}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        conds = _per_denoiser("cond", cond, len(self.denoisers))
        unconds = _per_denoiser("uncond", uncond, len(self.denoisers))
        if guidance_scale != 1.0 and any(u is None for u in unconds):
            raise ValueError(f"guidance_scale={guidance_scale} needs an unconditional input (uncond) for every "
                             f"denoiser (eq. 4)")
        if isinstance(generator, list):
            if len(generator) != len(x_T):
                raise ValueError(f"{len(generator)} generators for a batch of {len(x_T)}")
            if plan is None:
                raise ValueError("with one generator per sample, pass plan=sampler.plan(num_steps, generator) "
                                 "so that every shard of the batch follows the same plan")
        run = self._start(num_steps, generator)
        n = len(run.timesteps)
        if plan is None:
            plan = self._draw_plan(run.timesteps, generator)
        elif len(plan) != n:
            raise ValueError(f"plan has {len(plan)} entries for a run of {n} steps")
        else:
            plan = [self._checked_index(k, f"plan entry {i}") for i, k in enumerate(plan)]
        x = x_T * run.init_noise_sigma if run.init_noise_sigma != 1.0 else x_T
        return PlannedChain(x=x, run=run, plan=list(plan), conds=conds, unconds=unconds)

    def _check_eps(self, k: int, step: int, eps: torch.Tensor, x: Latents) -> None:
        """ε must come back in the latents' shape and dtype."""
        if eps.shape != x.shape or eps.dtype != x.dtype:
            raise ValueError(f"{_name(k, self.denoisers[k])} returned ε of {_describe(eps)} at step {step} for "
                             f"latents of {_describe(x)}")

    def _raise_if_not_finite(self, chain: PlannedChain, not_finite: torch.Tensor) -> None:
        """FloatingPointError naming the first step whose flag in `not_finite` (one per step, on device) is set."""
        if bool(not_finite.any()):
            i = int(not_finite.nonzero()[0])
            k = chain.plan[i]
            raise FloatingPointError(f"latents became NaN or Inf at step {i} (timestep {chain.run.timesteps[i]}), "
                                     f"denoised by {_name(k, self.denoisers[k])}")

    def _noise(self, k: int, x: Latents, generator: Generators) -> Latents:
        """z for a step of denoiser k: one draw per sample from its generator when generators are per sample."""
        draw = self.noise[k].sample
        if isinstance(generator, list):
            one = (1, *x.shape[1:])
            return torch.cat([draw(one, generator=g, device=x.device, dtype=x.dtype) for g in generator])
        return draw(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)

    def __repr__(self) -> str:
        names = ", ".join(type(d).__name__ for d in self.denoisers)
        return f"MixtureSampler([{names}], {self.selector!r}, solver={self.solver!r}, gamma={self.gamma})"


def _per_denoiser(name: str, value: Any, count: int) -> list[Any]:
    """One value per denoiser: a list or tuple gives them one by one, anything else is shared."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} is a list of {len(value)} entries, one per denoiser, but there are {count} "
                             f"denoisers")
        return list(value)
    return [value] * count


def _name(index: int, denoiser: Any) -> str:
    return f"denoiser {index} ({type(denoiser).__name__})"


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"type {type(x).__name__}"
