import math

import pytest
import torch
from conftest import FunctionDenoiser, gaussian_eps, smooth_eps
from hypothesis import given
from hypothesis import strategies as st

from jvid import MixtureSampler, NoiseSchedule, PatternSelector, PiecewiseSelector, StepInfo
from jvid.models import ImageDenoiser
from jvid.noise import CorrelatedNoise, IndependentNoise
from jvid.samplers import FixedSelector

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


class ListSelector:
    """A plain user class: the plan is given up front."""

    def __init__(self, plan):
        self.plan = plan

    def select(self, step: StepInfo, generator) -> int:
        return self.plan[step.index]


@st.composite
def runs(draw):
    count = draw(st.integers(min_value=1, max_value=4))
    num_steps = draw(st.integers(min_value=1, max_value=12))
    plan = draw(st.lists(st.integers(0, count - 1), min_size=num_steps, max_size=num_steps))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(5))
    return count, plan, shape, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(["ddpm", "ddim"]))


@given(runs())
def test_any_plan_preserves_shape_dtype_device_and_schedule(run):
    count, plan, shape, dtype, solver = run
    schedule = NoiseSchedule.linear(1000)
    models = [FunctionDenoiser(smooth_eps(0.1 * (k + 1)), schedule) for k in range(count)]
    sampler = MixtureSampler(models, ListSelector(plan), solver=solver)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    result = sampler.sample(x_T, num_steps=len(plan), generator=torch.Generator().manual_seed(1), progress=False)
    assert result.latents.shape == x_T.shape and result.latents.dtype == dtype
    assert result.latents.device == x_T.device and result.plan == plan
    assert sampler.schedule is models[0].schedule
    # Every model saw the latents in the canonical layout, with a (batch,) timestep on the planned schedule.
    seen = [t for k in range(count) for (_, t, _) in models[k].calls]
    assert sorted(int(t[0]) for t in seen) == sorted(result.timesteps)
    for k in range(count):
        assert all(s == x_T.shape and t.shape == (shape[0],) for s, t, _ in models[k].calls)


def propagate_gaussian(schedule, timesteps, mean, std, gamma):
    """Mean and variance of the DDPM chain with the exact posterior mean, in float64, from textbook formulas."""
    abar = schedule.alphas_cumprod.tolist()
    mu, var = 0.0, 1.0
    for i, t in enumerate(timesteps):
        a_t, a_p = abar[t], (abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0)
        alpha = a_t / a_p
        # E[s_0 | s_t] = mean + √ᾱ_t std² (s_t − √ᾱ_t mean) / (ᾱ_t std² + 1 − ᾱ_t), affine in s_t.
        gain = math.sqrt(a_t) * std**2 / (a_t * std**2 + 1 - a_t)
        w0 = math.sqrt(a_p) * (1 - alpha) / (1 - a_t)
        wt = math.sqrt(alpha) * (1 - a_p) / (1 - a_t)
        slope = w0 * gain + wt
        offset = w0 * (mean - gain * math.sqrt(a_t) * mean)
        noise_var = gamma**2 * (1 - a_p) / (1 - a_t) * (1 - alpha)
        mu, var = slope * mu + offset, slope**2 * var + noise_var
    return mu, var


@pytest.mark.parametrize("num_steps, gamma", [(1000, 1.0), (50, 1.0), (50, 0.3)])
def test_exact_gaussian_eps_recovers_the_data_distribution_whatever_the_switches(num_steps, gamma):
    mean, std = 0.5, 0.3
    schedule = NoiseSchedule.linear(1000)
    exact = gaussian_eps(schedule, mean, std)
    # The same exact ε behind two different adapters: a video-layout function and a per-frame 2-D network.
    video = FunctionDenoiser(exact, schedule)
    image = ImageDenoiser(lambda x, t, encoder_hidden_states=None: exact(x[:, None], t)[:, 0], schedule)
    sampler = MixtureSampler([video, image], PiecewiseSelector.table6(64), gamma=gamma)
    x_T = torch.randn(512, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = sampler.sample(x_T, num_steps=num_steps, generator=torch.Generator().manual_seed(1), progress=False)
    assert 0 < result.plan.count(1) < num_steps  # the chain really switched models
    mu, var = propagate_gaussian(schedule, result.timesteps, mean, std, gamma)
    n = result.latents.numel()
    # Monte Carlo against the exact moments of this chain (5 standard errors)...
    assert abs(result.latents.mean() - mu) < 5 * math.sqrt(var / n)
    assert abs(result.latents.var() - var) < 5 * var * math.sqrt(2 / n)
    # ...and over the full 1000-step chain with γ = 1 they are the data's. (With 50 strided steps the posterior
    # variance β̃ of "fixed_small" is a lower bound and the spread comes out narrower, as theory says.)
    if num_steps == 1000 and gamma == 1.0:
        assert mu == pytest.approx(mean, abs=2e-3) and math.sqrt(var) == pytest.approx(std, rel=0.05)


def test_same_seed_same_plan_and_bit_identical_latents(schedule):
    models = [FunctionDenoiser(smooth_eps(0.5), schedule), FunctionDenoiser(smooth_eps(-0.2), schedule)]
    sampler = MixtureSampler(models, PiecewiseSelector.table6(128), noise=[IndependentNoise(), CorrelatedNoise(0.4)])
    x_T = torch.randn(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    results = [
        sampler.sample(x_T, num_steps=30, generator=torch.Generator().manual_seed(seed), progress=False)
        for seed in (3, 3, 4)
    ]
    assert results[0].plan == results[1].plan == sampler.plan(30, torch.Generator().manual_seed(3))
    assert torch.equal(results[0].latents, results[1].latents)
    assert not torch.equal(results[0].latents, results[2].latents)


def test_per_sample_generators_make_samples_independent_of_their_batch(schedule):
    models = [FunctionDenoiser(smooth_eps(0.5), schedule), FunctionDenoiser(smooth_eps(-0.2), schedule)]
    sampler = MixtureSampler(models, PiecewiseSelector.table6(64))
    plan = sampler.plan(20, torch.Generator().manual_seed(0))
    x_T = torch.randn(4, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    whole = sampler.sample(x_T, num_steps=20, generator=gens([10, 11, 12, 13]), plan=plan, progress=False)
    shard = sampler.sample(x_T[2:], num_steps=20, generator=gens([12, 13]), plan=plan, progress=False)
    assert torch.allclose(whole.latents[2:], shard.latents, atol=1e-6)
    with pytest.raises(ValueError, match="pass plan="):
        sampler.sample(x_T, num_steps=20, generator=gens([1, 2, 3, 4]), progress=False)
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        sampler.sample(x_T, num_steps=20, generator=gens([1, 2, 3]), plan=plan, progress=False)


def test_classifier_free_guidance_is_equation_4_in_one_forward(schedule):
    def eps(x, t, cond):
        return torch.tanh(x) * cond.view(-1, 1, 1, 1, 1)

    model = FunctionDenoiser(eps, schedule)
    cond, uncond = torch.tensor([2.0, 3.0]), torch.tensor([0.5])
    x_T = torch.randn(2, 2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sampler = MixtureSampler([model], FixedSelector(), solver="ddim")
    seen = []
    out = sampler.sample(x_T, num_steps=1, cond=cond, uncond=uncond, guidance_scale=4.0, progress=False,
                         callback=lambda step, k, x: seen.append(k))
    assert len(model.calls) == 1 and model.calls[0][0] == (4, 2, 1, 2, 2)  # cond and uncond batched
    assert torch.equal(model.calls[0][2], torch.tensor([0.5, 0.5, 2.0, 3.0]))
    guided = torch.tanh(x_T) * (0.5 + 4.0 * (cond - 0.5)).view(-1, 1, 1, 1, 1)
    run = sampler.solver.start(schedule, 1, gamma=1.0)
    expected = run.x_coef[0] * x_T + run.eps_coef[0] * guided
    assert torch.allclose(out.latents, expected, atol=1e-6) and seen == [0]


def test_each_denoiser_gets_its_own_conditioning(schedule):
    video = FunctionDenoiser(lambda x, t, c: x * 0 + c.mean(), schedule)
    image = FunctionDenoiser(lambda x, t, c: x * 0 - c.mean(), schedule)
    conds = [torch.ones(1, 7, 16), torch.full((1, 5, 32), 2.0)]
    unconds = [torch.zeros(1, 7, 16), torch.zeros(1, 5, 32)]
    sampler = MixtureSampler([video, image], PatternSelector([0, 1]))
    sampler.sample(torch.randn(2, 2, 1, 2, 2), num_steps=4, cond=conds, uncond=unconds, guidance_scale=2.0,
                   progress=False)
    assert {c.shape[-1] for _, _, c in video.calls} == {16} and {c.shape[-1] for _, _, c in image.calls} == {32}
    assert all(c.shape[0] == 4 for _, _, c in video.calls + image.calls)


def test_noise_generator_per_denoiser(schedule):
    # ε = 0 everywhere: frames that start equal stay equal only if every draw is shared across frames (r = 1).
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    models = [FunctionDenoiser(zero, schedule), FunctionDenoiser(zero, schedule)]
    x_T = torch.randn(1, 1, 2, 3, 3).expand(1, 4, 2, 3, 3).clone()
    same = lambda r: MixtureSampler(models, PatternSelector([0, 1]), noise=[CorrelatedNoise(1.0), CorrelatedNoise(r)])  # noqa: E731
    shared = same(1.0).sample(x_T, num_steps=6, generator=torch.Generator().manual_seed(0), progress=False).latents
    assert torch.equal(shared[:, 0], shared[:, 3])
    mixed = same(0.0).sample(x_T, num_steps=6, generator=torch.Generator().manual_seed(0), progress=False).latents
    assert not torch.allclose(mixed[:, 0], mixed[:, 3])


def test_gamma_zero_is_deterministic(schedule):
    models = [FunctionDenoiser(smooth_eps(), schedule)]
    sampler = MixtureSampler(models, FixedSelector(), gamma=0.0)
    x_T = torch.randn(1, 2, 2, 3, 3)
    a = sampler.sample(x_T, num_steps=10, generator=torch.Generator().manual_seed(0), progress=False).latents
    b = sampler.sample(x_T, num_steps=10, generator=torch.Generator().manual_seed(1), progress=False).latents
    assert torch.equal(a, b)


def test_callback_sees_every_step(schedule):
    models = [FunctionDenoiser(smooth_eps(), schedule)] * 2
    seen = []
    result = MixtureSampler(models, PatternSelector([1, 0])).sample(
        torch.randn(1, 1, 1, 2, 2), num_steps=5, progress=False,
        callback=lambda step, k, x: seen.append((step.index, step.timestep, k, x.shape)))
    assert seen == [(i, t, k, (1, 1, 1, 2, 2)) for i, (t, k) in enumerate(zip(result.timesteps, result.plan))]


# Bad input: each gets a clear error.


def test_mismatched_schedules_name_both_denoisers():
    a = FunctionDenoiser(smooth_eps(), NoiseSchedule.linear(1000))
    b = FunctionDenoiser(smooth_eps(), NoiseSchedule.scaled_linear(1000))
    with pytest.raises(ValueError, match=r"denoiser 0 \(FunctionDenoiser\) and denoiser 2 \(FunctionDenoiser\).*alphas_cumprod"):
        MixtureSampler([a, a, b], FixedSelector())
    c = FunctionDenoiser(smooth_eps(), NoiseSchedule.linear(500))
    with pytest.raises(ValueError, match="num_train_timesteps 1000 vs 500"):
        MixtureSampler([a, c], FixedSelector())


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 3, 4, 4, 1), ()])
def test_wrong_rank(shape, schedule, unchecked):
    sampler = MixtureSampler([FunctionDenoiser(smooth_eps(), schedule)], FixedSelector())
    with pytest.raises(ValueError, match=r"\(batch, frames, channels, height, width\)"):
        sampler.sample(torch.zeros(shape), num_steps=3, progress=False)


def test_integer_latents_rejected(schedule, unchecked):
    sampler = MixtureSampler([FunctionDenoiser(smooth_eps(), schedule)], FixedSelector())
    with pytest.raises(ValueError, match="floating"):
        sampler.sample(torch.zeros(1, 1, 1, 2, 2, dtype=torch.int64), num_steps=3, progress=False)


@pytest.mark.parametrize("num_steps", [0, 1001])
def test_num_steps_out_of_range_in_sampler(num_steps, schedule):
    sampler = MixtureSampler([FunctionDenoiser(smooth_eps(), schedule)], FixedSelector())
    with pytest.raises(ValueError, match="num_steps"):
        sampler.sample(torch.zeros(1, 1, 1, 2, 2), num_steps=num_steps, progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        sampler.plan(num_steps)


@pytest.mark.parametrize("choice, message", [(2, "chose denoiser 2.*only 2"), (-1, "chose denoiser -1"),
                                             ("video", "not an int index")])
def test_selector_index_outside_the_list(choice, message, schedule):
    models = [FunctionDenoiser(smooth_eps(), schedule)] * 2
    sampler = MixtureSampler(models, ListSelector([0, choice, 0]))
    with pytest.raises(ValueError, match=message):
        sampler.sample(torch.zeros(1, 1, 1, 2, 2), num_steps=3, progress=False)
    with pytest.raises(ValueError, match=message):
        sampler.plan(3)


def test_nan_names_the_step_and_the_denoiser(schedule):
    def breaks_late(x, t, c):
        return torch.where(t.view(-1, 1, 1, 1, 1) < 400, torch.nan, 0.1 * x)

    models = [FunctionDenoiser(smooth_eps(), schedule), FunctionDenoiser(breaks_late, schedule)]
    sampler = MixtureSampler(models, PatternSelector([0, 1]))
    with pytest.raises(FloatingPointError, match=r"step 31 \(timestep 360\).*denoiser 1 \(FunctionDenoiser\)"):
        sampler.sample(torch.randn(1, 2, 1, 2, 2), num_steps=50, progress=False)
    inf = FunctionDenoiser(lambda x, t, c: torch.full_like(x, torch.inf), schedule)
    with pytest.raises(FloatingPointError, match=r"step 0 .*denoiser 0"):
        MixtureSampler([inf], FixedSelector()).sample(torch.randn(1, 1, 1, 2, 2), num_steps=3, progress=False)


def test_wrong_eps_shape_or_dtype(schedule, unchecked):
    squeeze = FunctionDenoiser(lambda x, t, c: x.mean(1, keepdim=True), schedule)
    with pytest.raises(ValueError, match=r"denoiser 0 \(FunctionDenoiser\) returned ε of shape \(1, 1, 1, 2, 2\)"):
        MixtureSampler([squeeze], FixedSelector()).sample(torch.randn(1, 3, 1, 2, 2), num_steps=2, progress=False)
    double = FunctionDenoiser(lambda x, t, c: x.double(), schedule)
    with pytest.raises(ValueError, match="float64"):
        MixtureSampler([double], FixedSelector()).sample(torch.randn(1, 3, 1, 2, 2), num_steps=2, progress=False)


def test_constructor_errors(schedule, unchecked):
    model = FunctionDenoiser(smooth_eps(), schedule)
    with pytest.raises(TypeError, match="non-empty"):
        MixtureSampler([], FixedSelector())
    with pytest.raises(TypeError, match="denoiser 1 .* is not a Denoiser"):
        MixtureSampler([model, lambda x, t, c: x], FixedSelector())
    with pytest.raises(TypeError, match="select"):
        MixtureSampler([model], lambda step, g: 0)
    for gamma in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            MixtureSampler([model], FixedSelector(), gamma=gamma)
    with pytest.raises(ValueError, match="noise is a list of 1 entries"):
        MixtureSampler([model, model], FixedSelector(), noise=[IndependentNoise()])
    with pytest.raises(ValueError, match="unknown solver 'euler'"):
        MixtureSampler([model], FixedSelector(), solver="euler")


def test_sample_argument_errors(schedule, unchecked):
    model = FunctionDenoiser(smooth_eps(), schedule)
    sampler = MixtureSampler([model, model], FixedSelector())
    x = torch.zeros(2, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="needs an unconditional input"):
        sampler.sample(x, num_steps=2, cond=torch.ones(2, 3), guidance_scale=3.0, progress=False)
    with pytest.raises(ValueError, match="cond is a list of 3 entries"):
        sampler.sample(x, num_steps=2, cond=[None] * 3, progress=False)
    with pytest.raises(ValueError, match="plan has 2 entries for a run of 3 steps"):
        sampler.sample(x, num_steps=3, plan=[0, 1], progress=False)
    with pytest.raises(ValueError, match="leading batch axis of 1 or 2"):
        sampler.sample(x, num_steps=2, cond=torch.ones(3, 4), uncond=torch.ones(1, 4), guidance_scale=2.0,
                       progress=False)
    with pytest.raises(TypeError, match="must be tensors"):
        sampler.sample(x, num_steps=2, cond="a cat", uncond="", guidance_scale=2.0, progress=False)
