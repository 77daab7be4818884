"""jvid's solvers against diffusers' schedulers on full trajectories, and eq. 5 against its direct form."""

import inspect
import math

import diffusers.schedulers.scheduling_ddim as diffusers_ddim
import diffusers.schedulers.scheduling_ddpm as diffusers_ddpm
import pytest
import torch
from conftest import FunctionDenoiser, gaussian_eps, relative_error, smooth_eps
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

from jvid import MixtureSampler, NoiseSchedule, PatternSelector
from jvid.noise import IndependentNoise
from jvid.samplers import DDIMSolver, DDPMSolver, FixedSelector, SchedulerSolver
from jvid.samplers.solvers import leading_timesteps

SHAPE = (2, 3, 4, 5, 6)
CONFIGS = [
    dict(beta_schedule="linear"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
]


def tolerance(config):
    """float64 coefficients applied in float32 against diffusers' float32 ones. The cosine schedule's β_T = 0.999
    multiplies the first step's rounding by 1/√α_T ≈ 32, so its trajectories agree to fewer digits."""
    return 1e-3 if config["beta_schedule"] == "squaredcos_cap_v2" else 5e-5


class RecordingNoise:
    """Independent noise that keeps every draw, so a diffusers loop can replay it."""

    def __init__(self):
        self.inner, self.draws = IndependentNoise(), []

    def sample(self, shape, *, generator=None, device=None, dtype=torch.float32):
        z = self.inner.sample(shape, generator=generator, device=device, dtype=dtype)
        self.draws.append(z.clone())
        return z


def two_models(schedule):
    """Two different ε-functions; any t, so they also serve schedulers with fractional timesteps."""
    return [FunctionDenoiser(smooth_eps(0.5), schedule), FunctionDenoiser(smooth_eps(-0.3), schedule)]


def two_gaussian_models(schedule):
    """The exact ε of two different Gaussian data sets: trajectories stay bounded, as with trained models."""
    return [FunctionDenoiser(gaussian_eps(schedule, 0.5, 0.3), schedule),
            FunctionDenoiser(gaussian_eps(schedule, -0.2, 0.8), schedule)]


def diffusers_loop(scheduler, models, plan, x, **step_kwargs):
    for i, t in enumerate(scheduler.timesteps):
        eps = models[plan[i]](scheduler.scale_model_input(x, t), t.expand(len(x)), None)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("num_steps", [1, 7, 50, 1000])
@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_ddpm_equals_diffusers_given_the_same_noise(config, num_steps, gamma, monkeypatch):
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type="fixed_small", **config)
    schedule = NoiseSchedule(scheduler.betas)  # diffusers' own float32 betas: compare the solvers, not the schedules
    models, noise = two_gaussian_models(schedule), RecordingNoise()
    sampler = MixtureSampler(models, PatternSelector([0, 1, 1]), noise=noise, gamma=gamma)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(num_steps))
    ours = sampler.sample(x_T, num_steps=num_steps, generator=torch.Generator().manual_seed(1), progress=False)

    # γ = 1 replays our draws inside diffusers' step; γ = 0 must equal diffusers with the noise zeroed.
    replay = iter(noise.draws)
    monkeypatch.setattr(diffusers_ddpm, "randn_tensor",
                        lambda shape, **kw: next(replay) if gamma else torch.zeros(shape, dtype=kw["dtype"]))
    scheduler.set_timesteps(num_steps)
    assert ours.timesteps == scheduler.timesteps.tolist()
    theirs = diffusers_loop(scheduler, models, ours.plan, x_T)
    assert next(replay, None) is None  # every draw was used, in order
    assert len(noise.draws) == (num_steps - 1 if gamma else 0)  # no draw on the last step, none at all for γ = 0
    assert relative_error(ours.latents, theirs) < tolerance(config)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("num_steps", [1, 10, 50])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_equals_diffusers_given_the_same_noise(config, num_steps, eta, monkeypatch):
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True, **config)
    schedule = NoiseSchedule(scheduler.betas)
    models, noise = two_gaussian_models(schedule), RecordingNoise()
    sampler = MixtureSampler(models, PatternSelector([1, 0]), solver=DDIMSolver(eta), noise=noise)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    ours = sampler.sample(x_T, num_steps=num_steps, generator=torch.Generator().manual_seed(2), progress=False)
    # diffusers also draws on the last step, where its σ is 0: pad the replay with zeros.
    replay = iter(noise.draws + [torch.zeros(SHAPE)])
    monkeypatch.setattr(diffusers_ddim, "randn_tensor", lambda shape, **kw: next(replay))
    scheduler.set_timesteps(num_steps)
    theirs = diffusers_loop(scheduler, models, ours.plan, x_T, eta=eta)
    assert relative_error(ours.latents, theirs) < tolerance(config)
    assert len(noise.draws) == (num_steps - 1 if eta > 0 else 0)


def test_ddpm_with_unit_stride_is_equation_5(schedule):
    # Eq. 5: s_{t−1} = (s_t − β_t/√(1−ᾱ_t)·ε)/√α_t + σ_t z with σ_t² = β̃_t, from the betas in float64.
    run = DDPMSolver().start(schedule, schedule.num_train_timesteps, gamma=0.7)
    betas = schedule.betas.tolist()
    abar = schedule.alphas_cumprod.tolist()
    for i, t in enumerate(run.timesteps):
        alpha = 1 - betas[t]
        abar_prev = abar[t - 1] if t > 0 else 1.0
        assert run.x_coef[i] == pytest.approx(1 / math.sqrt(alpha), rel=1e-12)
        assert run.eps_coef[i] == pytest.approx(-betas[t] / math.sqrt(1 - abar[t]) / math.sqrt(alpha), rel=1e-12)
        posterior = betas[t] * (1 - abar_prev) / (1 - abar[t])
        assert run.noise_std[i] == pytest.approx(0.7 * math.sqrt(posterior), rel=1e-12, abs=1e-300)
    assert run.noise_std[-1] == 0.0 and not run.adds_noise(len(run.timesteps) - 1)


def test_leading_timesteps_match_diffusers():
    for n in (1, 3, 7, 50, 999, 1000):
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(n)
        assert leading_timesteps(1000, n) == scheduler.timesteps.tolist()


@pytest.mark.parametrize("solver", [DDPMSolver(), DDIMSolver(0.3)])
@pytest.mark.parametrize("num_steps", [0, 1001, -3])
def test_num_steps_out_of_range(solver, num_steps, schedule):
    with pytest.raises(ValueError, match=r"num_steps must lie in \[1, 1000\]"):
        solver.start(schedule, num_steps, gamma=1.0)


def test_solvers_reject_non_epsilon_models():
    with pytest.raises(ValueError, match="prediction_type is 'v_prediction'"):
        DDPMSolver().start(NoiseSchedule.linear(1000, prediction_type="v_prediction"), 10, gamma=1.0)


def test_ddim_rejects_bad_eta():
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            DDIMSolver(eta)


SCHEDULERS = [
    lambda: PNDMScheduler(skip_prk_steps=False),
    lambda: PNDMScheduler(skip_prk_steps=True),
    lambda: DPMSolverMultistepScheduler(),
    lambda: EulerDiscreteScheduler(),
]


@pytest.mark.parametrize("make", SCHEDULERS)
def test_any_diffusers_scheduler_drives_the_mixture(make):
    # The scheduler keeps its multistep history across switches: the mixture equals a hand-written diffusers loop
    # that calls the planned model at each step.
    schedule = NoiseSchedule.from_diffusers(make())
    models = two_models(schedule)
    sampler = MixtureSampler(models, PatternSelector([0, 0, 1]), solver=make())
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    ours = sampler.sample(x_T, num_steps=12, generator=torch.Generator().manual_seed(4), progress=False)
    reference = make()
    reference.set_timesteps(12)
    takes_generator = "generator" in inspect.signature(reference.step).parameters
    theirs = diffusers_loop(reference, models, ours.plan, x_T * reference.init_noise_sigma,
                            **({"generator": torch.Generator().manual_seed(4)} if takes_generator else {}))
    assert torch.equal(ours.latents, theirs)
    assert len(ours.plan) == len(reference.timesteps)
    # Two runs of one sampler are independent: the copied scheduler starts each run with no history.
    again = sampler.sample(x_T, num_steps=12, generator=torch.Generator().manual_seed(4), progress=False)
    assert torch.equal(again.latents, ours.latents)


def test_scheduler_solver_errors(schedule):
    with pytest.raises(TypeError, match="diffusers scheduler"):
        SchedulerSolver(object())
    solver = SchedulerSolver(PNDMScheduler())
    with pytest.raises(ValueError, match="gamma=0.5"):
        solver.start(schedule, 10, gamma=0.5)
    with pytest.raises(ValueError, match="does not match"):
        solver.start(NoiseSchedule.scaled_linear(1000), 10, gamma=1.0)
    models = [FunctionDenoiser(smooth_eps(), schedule)]
    with pytest.raises(ValueError, match="gamma"):
        MixtureSampler(models, FixedSelector(), solver=PNDMScheduler(), gamma=0.1).sample(
            torch.zeros(SHAPE), num_steps=5, progress=False)
