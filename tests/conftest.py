"""Shared test doubles: ε-functions wrapped as Denoisers, and exact ε for Gaussian data."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, settings

from jvid.schedule import NoiseSchedule

settings.register_profile(
    "jvid", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("jvid")


class FunctionDenoiser:
    """A Denoiser whose ε is a plain function of (x, t, cond); records the conds it saw."""

    def __init__(self, fn: Callable, schedule: NoiseSchedule) -> None:
        self.fn, self.schedule, self.calls = fn, schedule, []

    def __call__(self, x, t, cond):
        self.calls.append((x.shape, t.clone(), cond))
        return self.fn(x, t, cond)


def smooth_eps(scale: float = 0.5) -> Callable:
    """A deterministic, non-trivial ε(x, t) so that trajectories depend on every coefficient."""

    def fn(x, t, cond=None):
        wave = torch.cos(t.to(torch.float64) / 97.0).to(x.dtype).view(-1, 1, 1, 1, 1)
        return (scale * torch.tanh(x) + 0.1 * wave).to(x.dtype)

    return fn


def gaussian_eps(schedule: NoiseSchedule, mean: float, std: float) -> Callable:
    """The exact ε(s_t, t) = E[ε | s_t] when the data are i.i.d. N(mean, std²)."""
    abar = schedule.alphas_cumprod

    def fn(x, t, cond=None):
        a = abar.to(x.device)[t].view(-1, 1, 1, 1, 1)
        eps = (1 - a).sqrt() * (x.double() - a.sqrt() * mean) / (a * std**2 + 1 - a)
        return eps.to(x.dtype)

    return fn


@pytest.fixture
def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(1000)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


__all__ = ["FunctionDenoiser", "gaussian_eps", "math", "relative_error", "smooth_eps"]


@pytest.fixture
def kernel_can_run():
    """Fails with the fix when the Triton kernels were compiled for CUDA but no CUDA device is here."""
    from jvid.kernels import is_interpreted

    if not is_interpreted() and not torch.cuda.is_available():
        pytest.fail(
            "the Triton kernels were compiled for CUDA, but there is no CUDA device: run the tests as "
            "`TRITON_INTERPRET=1 python -m pytest` (the variable must be set before Triton is imported)",
            pytrace=False,
        )


@pytest.fixture
def unchecked():
    """Runs a test as users run jvid, without the test run's annotation checks, to reach jvid's own errors."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(scope="session")
def pipeline_folder(tmp_path_factory):
    """A tiny JVIDPipeline with both UNets saved by save_pretrained (tests/tiny_components.py)."""
    from tiny_components import saved_pipeline

    return saved_pipeline(tmp_path_factory)


@pytest.fixture(scope="session")
def wide_pipeline_folder(tmp_path_factory):
    """As `pipeline_folder`, but the video UNet reads its own 48-wide CLIP (video_text_encoder, video_tokenizer)."""
    from tiny_components import saved_pipeline

    return saved_pipeline(tmp_path_factory, "wide_pipeline", video_context=48)
