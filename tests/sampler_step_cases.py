"""Cases of one reverse step for the fused step and its reference: inputs, the float64 formulas, the eager path, and
how far each may differ from the formulas.

Not a conftest.py: the test folders share the one `conftest` module name of tests/conftest.py.

Tolerances. Both the fused kernel and the reference compute in float32 and round once to the output dtype; the eager
path (guided_eps's combine, CorrelatedNoise.sample, AffineRun.step) also rounds ε̂'s intermediates and, for
0 < r < 1, z to the latents' dtype before the float32 update. With u the unit roundoff of the output dtype (2^-24
float32, 2^-11 float16, 2^-8 bfloat16) and S the sum of the magnitudes of every term of the step,

    |fused − float64 formulas| ≤ u·|exact| + 2δ,       δ = 8·2^-24·S   (a few float32 roundings, fused or not)
    |eager − float64 formulas| ≤ u·(|exact| + |b|·(2·|g|·|ε_y − ε_∅| + |ε̂|) + |σ|·|z|) + 2δ

per element (plus half a subnormal step of float16); the fused result may differ from the eager one by the sum. In
float32 that is a few 1e-7 of S; in half precision it is one unit in the last place of the output where the terms
are of its size, more only where they cancel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from jvid.noise import CorrelatedNoise
from jvid.samplers import AffineRun, DDIMSolver, DDPMSolver
from jvid.samplers.guidance import combine_guidance
from jvid.schedule import NoiseSchedule

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float64: 2.0**-53}
HALF_SUBNORMAL = {torch.float32: 2.0**-150, torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134, torch.float64: 0.0}
NUM_STEPS = 10

# Odd, non-power-of-two sizes down to a single element; guidance None or a scale; r = 0, 0.3, 1; no noise (last step).
shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7))
guidance_scales = st.sampled_from([None, 1.0, 2.0, 7.5])
ratios = st.sampled_from([0.0, 0.3, 1.0])
solvers = st.sampled_from(["ddpm", "ddim"])
step_indices = st.integers(0, NUM_STEPS - 1)
seeds = st.integers(0, 2**31 - 1)


def affine_run(solver: str) -> AffineRun:
    """A 10-step run with γ = 0.7 folded into σ (DDIM with η = 0.5, so that it adds noise too)."""
    chosen = DDPMSolver() if solver == "ddpm" else DDIMSolver(eta=0.5)
    return chosen.start(NoiseSchedule.linear(1000), NUM_STEPS, gamma=0.7)


def coefficient_table(run: AffineRun, device: torch.device | str) -> torch.Tensor:
    """Rows (a_i, b_i, σ_i) in float32: the values AffineRun.step's float32 arithmetic uses."""
    table = torch.tensor([run.x_coef, run.eps_coef, run.noise_std], dtype=torch.float64).T
    return table.to(device=device, dtype=torch.float32).contiguous()


@dataclass
class StepCase:
    """The inputs of one step, as the fused step takes them and as the eager path takes them."""

    run: AffineRun
    index: int
    x: torch.Tensor
    eps: torch.Tensor  # [ε_∅; ε_y] when guidance_scale is not None
    guidance_scale: float | None
    shared_ratio: float
    seed: int | None  # the noise generator's seed; None for a step without noise

    @property
    def coefficients(self) -> torch.Tensor:
        return coefficient_table(self.run, self.x.device)

    def step_tensor(self, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.tensor(self.index, dtype=dtype, device=self.x.device)

    def noise_kwargs(self) -> dict:
        """noise, shared_noise and shared_ratio from CorrelatedNoise(r).draw, the same generator calls as sample."""
        if self.seed is None:
            return dict(shared_ratio=self.shared_ratio)
        draw = CorrelatedNoise(self.shared_ratio).draw(
            self.x.shape, generator=torch.Generator().manual_seed(self.seed), device=self.x.device, dtype=self.x.dtype
        )
        return dict(noise=draw.independent, shared_noise=draw.shared, shared_ratio=draw.shared_ratio)

    def kwargs(self) -> dict:
        return dict(guidance_scale=self.guidance_scale, **self.noise_kwargs())

    def eager_z(self) -> torch.Tensor | None:
        if self.seed is None:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        return CorrelatedNoise(self.shared_ratio).sample(
            self.x.shape, generator=generator, device=self.x.device, dtype=self.x.dtype
        )

    def eager_eps(self) -> torch.Tensor:
        if self.guidance_scale is None:
            return self.eps
        return combine_guidance(*self.eps.chunk(2), self.guidance_scale)


def make_case(shape, dtype, *, guidance_scale=None, shared_ratio=0.0, noise=True, solver="ddpm", index=3, seed=0,
              device="cpu") -> StepCase:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).to(device, dtype)
    eps_batch = shape[0] * (1 if guidance_scale is None else 2)
    eps = torch.randn((eps_batch, *shape[1:]), generator=generator).to(device, dtype)
    return StepCase(affine_run(solver), index, x, eps, guidance_scale, shared_ratio, seed + 1 if noise else None)


def eager_step(case: StepCase) -> torch.Tensor:
    """The eager chain's step: guided_eps's combine, CorrelatedNoise.sample and AffineRun.step."""
    return case.run.step(case.index, case.x, case.eager_eps(), case.eager_z())


@dataclass
class Terms:
    """The float64 result of the formulas, and per element the magnitudes that bound rounding errors."""

    exact: torch.Tensor
    total: torch.Tensor  # S: the sum of the magnitudes of every term
    eager_extra: torch.Tensor  # |b|·(2·|g|·|ε_y − ε_∅| + |ε̂|) + |σ|·|z|: what the eager path rounds in its dtype


def formulas64(case: StepCase) -> Terms:
    """Eq. 4, eq. 8-9 and the affine update, written out in float64 from the inputs and the float32 table."""
    a, b, sigma = case.coefficients[case.index].double().tolist()
    x, eps = case.x.double(), case.eps.double()
    g = case.guidance_scale
    if g is None:
        eps_hat, eps_terms, guided_terms = eps, eps.abs(), torch.zeros_like(eps)
    else:
        uncond, cond = eps.chunk(2)
        eps_hat = uncond + g * (cond - uncond)
        eps_terms = uncond.abs() + abs(g) * (cond.abs() + uncond.abs())
        guided_terms = 2 * abs(g) * (cond - uncond).abs()
    exact = a * x + b * eps_hat
    total = (a * x).abs() + abs(b) * eps_terms
    eager_extra = abs(b) * (guided_terms + eps_hat.abs())
    parts = case.noise_kwargs()
    if case.seed is not None:
        r = case.shared_ratio
        independent, shared = parts["noise"], parts["shared_noise"]
        z = torch.zeros_like(x)
        z_terms = torch.zeros_like(x)
        if independent is not None:
            z = z + math.sqrt(1 - r) * independent.double()
            z_terms = z_terms + math.sqrt(1 - r) * independent.double().abs()
        if shared is not None:
            z = z + math.sqrt(r) * shared.double()
            z_terms = z_terms + math.sqrt(r) * shared.double().abs()
        exact = exact + sigma * z
        total = total + abs(sigma) * z_terms
        eager_extra = eager_extra + abs(sigma) * z.abs()
    return Terms(exact, total, eager_extra)


def fused_bound(terms: Terms, dtype: torch.dtype) -> torch.Tensor:
    """How far a float32 computation rounded once to `dtype` may lie from the float64 formulas."""
    delta = 8 * 2.0**-24 * terms.total
    return UNIT_ROUNDOFF[dtype] * terms.exact.abs() + 2 * delta + HALF_SUBNORMAL[dtype]


def eager_bound(terms: Terms, dtype: torch.dtype) -> torch.Tensor:
    """How far the eager path, which also rounds ε̂'s intermediates and z to `dtype`, may lie from the formulas."""
    return fused_bound(terms, dtype) + UNIT_ROUNDOFF[dtype] * terms.eager_extra


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    error = (actual.double().cpu() - expected.double().cpu()).abs()
    bound = bound.cpu()
    worst = int((error - bound).flatten().argmax())
    assert bool((error <= bound).all()), (
        f"{what}: error {error.flatten()[worst].item():.3e} over its bound {bound.flatten()[worst].item():.3e} at "
        f"flat index {worst}"
    )
