"""Every kernel runs on its tensors' device, not on the current one.

Triton launches on the current CUDA device whatever device its arguments live on, so a launcher that did not make
its tensors' device current would run them on another GPU. These tests keep cuda:0 current and give the kernels
tensors on cuda:1; they need two GPUs.
"""

import pytest
import torch
import torch.nn.functional as F
from sampler_step_cases import make_case

from jvid.kernels import fused_sampler_step, fused_temporal_smoothing
from jvid.kernels.short_attention import short_attention
from jvid.kernels.temporal_smoothing import LaunchConfig
from jvid.postproc import temporal_latent_smoothing
from jvid.samplers.step import sampler_step_reference

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
OTHER = torch.device("cuda:1")


@pytest.fixture(autouse=True)
def first_device_current():
    with torch.cuda.device(0):
        yield


@pytest.mark.parametrize("config", [LaunchConfig("groups", 2048, num_warps=4), LaunchConfig("videos"),
                                    LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)], ids=str)
def test_smoothing_runs_on_the_latents_device(config):
    x = torch.randn((3, 8, 4, 16, 16), generator=torch.Generator().manual_seed(0)).to(OTHER)
    out = fused_temporal_smoothing(x, 2.0, config)
    assert out.device == OTHER and torch.cuda.current_device() == 0
    torch.testing.assert_close(out, temporal_latent_smoothing(x, 2.0), rtol=1e-5, atol=1e-5)


def test_sampler_step_runs_on_the_latents_device():
    case = make_case((2, 4, 3, 8, 8), torch.float32, guidance_scale=3.0, shared_ratio=0.25, device=OTHER)
    step = case.step_tensor()
    out = fused_sampler_step(case.x, case.eps, case.coefficients, step, **case.kwargs())
    assert out.device == OTHER
    expected = sampler_step_reference(case.x, case.eps, case.coefficients, step, **case.kwargs())
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_short_attention_runs_on_the_inputs_device():
    q, k, v = torch.randn((3, 2, 4, 16, 64), generator=torch.Generator().manual_seed(1)).to(OTHER, torch.bfloat16)
    out = short_attention(q, k, v)
    assert out.device == OTHER
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q.float(), k.float(), v.float()),
                               rtol=2e-2, atol=2e-2)
