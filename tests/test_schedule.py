import math

import pytest
import torch
from diffusers import DDPMScheduler, PNDMScheduler
from hypothesis import given
from hypothesis import strategies as st

from jvid.schedule import NoiseSchedule

counts = st.integers(min_value=2, max_value=2000)
starts = st.floats(min_value=1e-5, max_value=1e-2)


@st.composite
def schedules(draw):
    family = draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]))
    count = draw(counts)
    if family == "squaredcos_cap_v2":
        return NoiseSchedule.squaredcos_cap_v2(count)
    start = draw(starts)
    end = draw(st.floats(min_value=start * 1.01, max_value=0.05))
    return getattr(NoiseSchedule, family)(count, start, end)


@given(schedules())
def test_alphas_cumprod_strictly_decreasing_inside_unit_interval(schedule):
    abar = schedule.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (schedule.num_train_timesteps,)
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()


@given(schedules())
def test_posterior_variance_between_zero_and_beta(schedule):
    var = schedule.posterior_variance()
    assert var[0] == 0  # ᾱ_0 = 1: the last reverse step adds no noise
    assert (var >= 0).all() and (var <= schedule.betas).all()


@pytest.mark.parametrize("family", ["linear", "squaredcos_cap_v2"])
def test_forward_chain_marginals_match_closed_form(family):
    # Run eq. 1 step by step and compare with q(s_t | s_0) = N(√ᾱ_t s_0, (1 − ᾱ_t) I).
    schedule = getattr(NoiseSchedule, family)(40)
    gen = torch.Generator().manual_seed(0)
    s0 = torch.full((200_000,), 0.8, dtype=torch.float64)
    s = s0.clone()
    for t in range(schedule.num_train_timesteps):
        beta = schedule.betas[t]
        s = (1 - beta).sqrt() * s + beta.sqrt() * torch.randn(s.shape, generator=gen, dtype=torch.float64)
        abar = schedule.alphas_cumprod[t]
        n = s.numel()
        # 5 standard errors of the mean and of the variance estimate.
        assert abs(s.mean() - abar.sqrt() * 0.8) < 5 * math.sqrt((1 - abar) / n)
        assert abs(s.var() - (1 - abar)) < 5 * (1 - abar) * math.sqrt(2 / n)


@pytest.mark.parametrize(
    "config, rtol",
    [
        (dict(beta_schedule="linear"), 1e-6),
        (dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 2e-6),
        # diffusers builds this one in float32 from a float64 formula; the tail where ᾱ ~ 1e-8 loses digits.
        (dict(beta_schedule="squaredcos_cap_v2"), 5e-5),
    ],
)
def test_from_diffusers_matches_diffusers_alphas_cumprod(config, rtol):
    scheduler = DDPMScheduler(num_train_timesteps=1000, **config)
    ours = NoiseSchedule.from_diffusers(scheduler)
    theirs = scheduler.alphas_cumprod.double()
    assert ours.num_train_timesteps == 1000
    assert ((ours.alphas_cumprod - theirs).abs() / theirs).max() < rtol
    assert NoiseSchedule.from_diffusers(dict(scheduler.config)).is_compatible(ours)


def test_from_diffusers_reads_prediction_type_and_trained_betas():
    betas = torch.linspace(1e-3, 0.03, 50).tolist()
    ours = NoiseSchedule.from_diffusers(PNDMScheduler(num_train_timesteps=50, trained_betas=betas,
                                                      prediction_type="v_prediction"))
    assert ours.prediction_type == "v_prediction"
    assert torch.allclose(ours.betas, torch.tensor(betas, dtype=torch.float64))


def test_from_diffusers_errors():
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        NoiseSchedule.from_diffusers(DDPMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="unsupported beta_schedule 'sigmoid'"):
        NoiseSchedule.from_diffusers({"beta_schedule": "sigmoid"})
    with pytest.raises(TypeError, match="diffusers scheduler"):
        NoiseSchedule.from_diffusers(42)


def test_compatibility_names_what_differs():
    base = NoiseSchedule.linear(1000)
    assert base.is_compatible(NoiseSchedule.linear(1000)) and base.difference(base) is None
    assert "num_train_timesteps 1000 vs 500" in base.difference(NoiseSchedule.linear(500))
    assert "prediction_type" in base.difference(NoiseSchedule.linear(1000, prediction_type="v_prediction"))
    assert "alphas_cumprod differ" in base.difference(NoiseSchedule.scaled_linear(1000))
    # 1e-6 relative is the boundary: a perturbation well under it is compatible, well over it is not.
    assert base.is_compatible(NoiseSchedule(base.betas * (1 + 1e-10)))
    assert not base.is_compatible(NoiseSchedule(base.betas * (1 + 1e-4)))


@pytest.mark.parametrize(
    "betas, message",
    [([], "non-empty"), ([0.1, 1.0], "open interval"), ([0.0, 0.1], "open interval"), ([float("nan")], "open")],
)
def test_invalid_betas(betas, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(torch.tensor(betas, dtype=torch.float64))


def test_invalid_prediction_type_and_count():
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule.linear(10, prediction_type="x0")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        NoiseSchedule.linear(0)
