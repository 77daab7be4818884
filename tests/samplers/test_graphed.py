"""The static-buffer chain of CUDAGraphSampler against the eager MixtureSampler: same plan, same draws, same latents.

On the CPU the step programs run uncaptured, with the fused step in Triton's interpreter (TRITON_INTERPRET=1) or its
PyTorch reference; the capture itself runs where CUDA is (the last tests).
"""

import pytest
import torch
from conftest import FunctionDenoiser, smooth_eps

from jvid import MixtureSampler, PatternSelector, PiecewiseSelector
from jvid.noise import CorrelatedNoise, IndependentNoise
from jvid.samplers import DDIMSolver, SchedulerSolver
from jvid.samplers.graphed import CUDAGraphSampler

CUDA = torch.cuda.is_available()


def conditioned_eps(scale: float):
    """ε(x, t, y): smooth in x and t, shifted by a per-sample summary of y so that cond and uncond differ."""

    def fn(x, t, cond):
        eps = smooth_eps(scale)(x, t)
        if cond is None:
            return eps
        return eps + (0.05 * cond.float().mean(dim=(1, 2))).view(-1, 1, 1, 1, 1).to(x.dtype)

    return fn


def denoisers(schedule, count=2):
    return [FunctionDenoiser(conditioned_eps(0.5 - 0.1 * k), schedule) for k in range(count)]


def inputs(batch=2, shape=(3, 4, 5, 6), dtype=torch.float32, device="cpu"):
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(batch, *shape, generator=generator).to(device, dtype)
    cond = torch.randn(batch, 7, 8, generator=generator).to(device, dtype)
    uncond = torch.randn(1, 7, 8, generator=generator).to(device, dtype)
    return x, cond, uncond


def both(sampler, x, seed=3, **kwargs):
    """The eager and the graphed result of one call, each with a fresh generator of the same seed."""
    kwargs.setdefault("progress", False)
    eager = sampler.sample(x, generator=torch.Generator(x.device).manual_seed(seed), **kwargs)
    fast = CUDAGraphSampler(sampler).sample(x, generator=torch.Generator(x.device).manual_seed(seed), **kwargs)
    return eager, fast


def assert_same(eager, fast, rtol=1e-5):
    assert fast.plan == eager.plan and fast.timesteps == eager.timesteps
    assert fast.latents.shape == eager.latents.shape and fast.latents.dtype == eager.latents.dtype
    scale = eager.latents.float().abs().max()
    assert float((fast.latents.float() - eager.latents.float()).abs().max()) <= rtol * float(scale)


@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
@pytest.mark.parametrize("solver", ["ddpm", DDIMSolver(eta=0.5)], ids=["ddpm", "ddim"])
@pytest.mark.parametrize(
    "noise",
    [IndependentNoise(), [CorrelatedNoise(0.3), IndependentNoise()], [CorrelatedNoise(1.0), CorrelatedNoise(0.6)]],
    ids=["independent", "correlated-video", "shared-and-correlated"],
)
def test_graphed_chain_equals_the_eager_chain(schedule, guidance_scale, solver, noise):
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([0, 1, 1]), solver=solver, noise=noise, gamma=0.7)
    x, cond, uncond = inputs()
    assert_same(*both(sampler, x, num_steps=12, cond=cond, uncond=uncond, guidance_scale=guidance_scale))


def test_random_plan_and_per_model_conditioning(schedule):
    selector = PiecewiseSelector(t_v=0.3, t_e=0.7, p_e=0.5, p_f=0.2)
    sampler = MixtureSampler(denoisers(schedule, 2), selector)
    x, cond, uncond = inputs()
    other = torch.randn(2, 3, 5)
    assert_same(*both(sampler, x, num_steps=20, cond=[cond, other], uncond=[uncond, other[:1]], guidance_scale=3.0))


def test_per_sample_generators_shard_like_the_eager_chain(schedule):
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([0, 1]), noise=CorrelatedNoise(0.4))
    x, cond, uncond = inputs(batch=3)
    plan = sampler.plan(8, torch.Generator().manual_seed(0))
    generators = lambda: [torch.Generator().manual_seed(100 + i) for i in range(3)]  # noqa: E731
    kwargs = dict(num_steps=8, cond=cond, uncond=uncond, guidance_scale=2.0, plan=plan, progress=False)
    eager = sampler.sample(x, generator=generators(), **kwargs)
    fast = CUDAGraphSampler(sampler)
    whole = fast.sample(x, generator=generators(), **kwargs)
    assert_same(eager, whole)
    shard = fast.sample(x[1:], generator=generators()[1:], **{**kwargs, "cond": cond[1:]})
    torch.testing.assert_close(shard.latents, whole.latents[1:], rtol=1e-5, atol=1e-5)


def test_programs_are_reused_across_calls_with_other_settings(schedule):
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([1, 0]))
    fast = CUDAGraphSampler(sampler)
    x, cond, uncond = inputs()
    for steps, seed, scale in [(10, 1, 2.0), (4, 2, 2.0), (10, 3, 2.0)]:
        kwargs = dict(num_steps=steps, cond=cond * scale, uncond=uncond, guidance_scale=2.0, progress=False)
        eager = sampler.sample(x, generator=torch.Generator().manual_seed(seed), **kwargs)
        assert_same(eager, fast.sample(x, generator=torch.Generator().manual_seed(seed), **kwargs))
        cond = cond.flip(0)
    assert len(fast._programs) == 2  # one per denoiser: the later calls changed only what lives in buffers


def test_result_is_a_copy_that_later_calls_leave_alone(schedule):
    fast = CUDAGraphSampler(MixtureSampler(denoisers(schedule), PatternSelector([0, 1])))
    x, cond, _ = inputs()
    first = fast.sample(x, num_steps=5, cond=cond, progress=False).latents
    kept = first.clone()
    fast.sample(x * 2, num_steps=5, cond=cond, progress=False)
    assert torch.equal(first, kept)


def test_callback_sees_every_step_with_its_model(schedule):
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([0, 1, 1]))
    seen = []
    x, cond, _ = inputs()
    result = CUDAGraphSampler(sampler).sample(
        x, num_steps=7, cond=cond, progress=False, callback=lambda step, k, latents: seen.append((step.index, k))
    )
    assert seen == list(enumerate(result.plan))


def test_nan_is_reported_with_its_step_and_model(schedule, unchecked):
    def breaks_late(x, t, cond):
        return torch.where(t.view(-1, 1, 1, 1, 1) < 300, torch.nan, smooth_eps()(x, t))

    sampler = MixtureSampler([denoisers(schedule)[0], FunctionDenoiser(breaks_late, schedule)], PatternSelector([0, 1]))
    x, cond, _ = inputs()
    with pytest.raises(FloatingPointError, match=r"step 7 \(timestep 200\).*denoiser 1 \(FunctionDenoiser\)"):
        CUDAGraphSampler(sampler).sample(x, num_steps=10, cond=cond, progress=False)


def test_a_diffusers_scheduler_runs_the_eager_loop(schedule):
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(trained_betas=schedule.betas.tolist(), skip_prk_steps=True)
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([0, 1]), solver=SchedulerSolver(scheduler))
    x, cond, _ = inputs()
    eager, fast = both(sampler, x, num_steps=6, cond=cond)
    assert torch.equal(eager.latents, fast.latents) and eager.plan == fast.plan


def test_bad_arguments_are_named(schedule, unchecked):
    with pytest.raises(TypeError, match="wraps a MixtureSampler"):
        CUDAGraphSampler(denoisers(schedule)[0])
    sampler = MixtureSampler(denoisers(schedule), PatternSelector([0, 1]))
    with pytest.raises(ValueError, match="compile_mode"):
        CUDAGraphSampler(sampler, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="x_T must be"):
        CUDAGraphSampler(sampler).sample(torch.zeros(2, 3, 4), num_steps=3)


def test_compiling_rewrites_the_networks_for_the_compiler(schedule, monkeypatch):
    """With compile_mode, jvid's adapters compile themselves after folding frame-only Conv3d and splitting GroupNorm
    statistics per frame; any other denoiser is compiled as it is. torch.compile is replaced by a recorder here: what
    it compiles must give the eager chain."""
    from tiny_components import tiny_unets

    from jvid.models import ImageDenoiser, VideoDenoiser
    from jvid.models.convolution import FrameConv3d, frame_only
    from jvid.models.normalization import FrameSplitGroupNorm

    compiled = []

    def record(fn, mode=None, dynamic=None):
        compiled.append((getattr(fn, "__self__", fn), mode, dynamic))
        return fn

    video, image = (net.double() for net in tiny_unets())
    other = FunctionDenoiser(conditioned_eps(0.3), schedule)
    adapters = [VideoDenoiser(video, schedule), ImageDenoiser(image, schedule), other]
    sampler = MixtureSampler(adapters, PatternSelector([0, 1, 2]), noise=CorrelatedNoise(0.5))
    x = torch.randn(2, 4, 4, 8, 8, dtype=torch.float64)
    cond = torch.randn(2, 5, video.config.cross_attention_dim, dtype=torch.float64)
    kwargs = dict(num_steps=9, cond=cond, uncond=torch.zeros_like(cond[:1]), guidance_scale=2.0, progress=False)
    eager = sampler.sample(x, generator=torch.Generator().manual_seed(5), **kwargs)
    assert any(frame_only(m) for m in video.modules())

    monkeypatch.setattr(torch, "compile", record)
    fast = CUDAGraphSampler(sampler, compile_mode="max-autotune-no-cudagraphs")
    result = fast.sample(x, generator=torch.Generator().manual_seed(5), **kwargs)
    assert compiled == [(d, "max-autotune-no-cudagraphs", False) for d in adapters]
    assert not any(frame_only(m) for m in video.modules())
    assert any(isinstance(m, FrameConv3d) for m in video.modules())
    assert not any(type(m) is torch.nn.GroupNorm for net in (video, image) for m in net.modules())
    assert any(isinstance(m, FrameSplitGroupNorm) for m in video.modules())
    assert_same(eager, result, rtol=1e-6)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device; the same program runs uncaptured above")
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)], ids=str)
def test_captured_unet_chain_matches_the_eager_chain(schedule, dtype, rtol):
    from tiny_components import tiny_unets

    from jvid.models import ImageDenoiser, VideoDenoiser

    video, image = (net.to("cuda", dtype) for net in tiny_unets())
    sampler = MixtureSampler([VideoDenoiser(video, schedule), ImageDenoiser(image, schedule)],
                             PatternSelector([0, 1, 1]), noise=[CorrelatedNoise(0.5), IndependentNoise()])
    x = torch.randn(2, 4, 4, 8, 8, device="cuda").to(dtype)
    cond = torch.randn(2, 5, video.config.cross_attention_dim, device="cuda").to(dtype)
    uncond = torch.zeros(1, 5, video.config.cross_attention_dim, device="cuda").to(dtype)
    kwargs = dict(num_steps=20, cond=cond, uncond=uncond, guidance_scale=2.0, progress=False)
    eager = sampler.sample(x, generator=torch.Generator("cuda").manual_seed(5), **kwargs)
    fast = CUDAGraphSampler(sampler)
    for _ in range(2):  # the first call captures, the second replays
        result = fast.sample(x, generator=torch.Generator("cuda").manual_seed(5), **kwargs)
        assert result.plan == eager.plan
        error = (result.latents.float() - eager.latents.float()).norm() / eager.latents.float().norm()
        assert float(error) < rtol
    assert all(program.replay is not None for program in fast._programs.values())
