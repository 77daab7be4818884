"""Temporal latent smoothing (paper sec. 3.6) and its Gaussian and uniform baselines (sec. 4.2) against loops."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jvid.postproc import (
    GaussianTemporalSmoother,
    Smoother,
    TemporalLatentSmoother,
    UniformTemporalSmoother,
    temporal_latent_smoothing,
)

# Odd, non-power-of-two sizes are in range on purpose; h = w = 1 exercises the σ_c floor.
shapes = st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 5), st.integers(1, 6), st.integers(1, 7))
seeds = st.integers(0, 2**31 - 1)
layouts = st.sampled_from(["contiguous", "transposed", "sliced"])
SMOOTHERS = [TemporalLatentSmoother(), GaussianTemporalSmoother(), UniformTemporalSmoother()]


def random_latents(shape, seed, dtype=torch.float64, layout="contiguous") -> torch.Tensor:
    """Standard normal latents, in memory that is contiguous or not, with the same values either way."""
    generator = torch.Generator().manual_seed(seed)
    if layout == "sliced":
        b, f, c, h, w = shape
        return torch.randn((b, f, c, h, 2 * w), generator=generator, dtype=dtype)[..., ::2]
    x = torch.randn(shape, generator=generator, dtype=dtype)
    if layout == "transposed":
        return x.transpose(1, 3).contiguous().transpose(1, 3)
    return x


def reference_smoothing(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sec. 3.6 voxel by voxel in float64: (smoothed latents, deviation D of shape (b, f, h, w), μ)."""
    b, f, c, h, w = x.shape
    mu = x.sum(axis=1) / f
    out, deviation = x.copy(), np.zeros((b, f, h, w))
    for bi in range(b):
        spatial_mean = mu[bi].reshape(c, -1).mean(axis=1)
        sigma = np.sqrt(((mu[bi].reshape(c, -1) - spatial_mean[:, None]) ** 2).mean(axis=1))
        sigma = np.maximum(sigma, 1e-6)
        for fi in range(f):
            for hi in range(h):
                for wi in range(w):
                    d = sum(abs(x[bi, fi, ci, hi, wi] - mu[bi, ci, hi, wi]) / sigma[ci] for ci in range(c))
                    deviation[bi, fi, hi, wi] = d
                    if d < threshold:
                        out[bi, fi, :, hi, wi] = mu[bi, :, hi, wi]
    return out, deviation, mu


def assert_matches_reference(latents: torch.Tensor, quantile: float, tolerance: float, margin: float) -> None:
    """Voxels whose D lies within `margin` of the threshold may go either way; all others must agree."""
    x = latents.double().numpy()
    _, deviation, _ = reference_smoothing(x, math.inf)
    threshold = float(np.quantile(deviation, quantile))
    expected, _, mu = reference_smoothing(x, threshold)
    out = temporal_latent_smoothing(latents, threshold)
    assert out.shape == latents.shape and out.dtype == latents.dtype
    out = out.double().numpy()
    clear = np.abs(deviation - threshold) > margin * max(1.0, threshold)
    clear = np.broadcast_to(clear[:, :, None], x.shape)
    np.testing.assert_allclose(out[clear], expected[clear], rtol=tolerance, atol=tolerance)
    mean = np.broadcast_to(mu[:, None], x.shape)
    either = np.isclose(out, x, rtol=tolerance, atol=tolerance) | np.isclose(out, mean, rtol=tolerance, atol=tolerance)
    assert either.all()


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=seeds, quantile=st.floats(0.0, 1.0), layout=layouts)
def test_reference_matches_voxel_loop_in_float64(shape, seed, quantile, layout):
    assert_matches_reference(random_latents(shape, seed, torch.float64, layout), quantile, tolerance=1e-12, margin=1e-9)


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds, quantile=st.floats(0.0, 1.0), layout=layouts)
def test_reference_matches_voxel_loop_in_float32(shape, seed, quantile, layout):
    # float32 moves D by ~1e-6 relative, so only decisions closer than 1e-4 to the threshold are left open.
    assert_matches_reference(random_latents(shape, seed, torch.float32, layout), quantile, tolerance=1e-5, margin=1e-4)


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds, dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
def test_zero_threshold_is_the_identity(shape, seed, dtype):
    x = random_latents(shape, seed, dtype)
    assert torch.equal(TemporalLatentSmoother(0.0)(x), x)


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds)
def test_huge_threshold_sets_every_frame_to_the_frame_mean(shape, seed):
    x = random_latents(shape, seed, torch.float32)
    out = TemporalLatentSmoother(1e30)(x)
    assert torch.equal(out, out[:, :1].expand_as(out))
    torch.testing.assert_close(out[:, 0], x.mean(dim=1))


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds, threshold=st.floats(0.0, 10.0))
def test_video_constant_over_time_is_unchanged(shape, seed, threshold):
    frame = random_latents((shape[0], 1, *shape[2:]), seed, torch.float32)
    x = frame.expand(shape)
    torch.testing.assert_close(TemporalLatentSmoother(threshold)(x), x, rtol=1e-6, atol=1e-6)


def test_voxel_exactly_at_the_threshold_is_kept_and_one_below_is_replaced():
    # One channel, two frames, two pixels: μ = [1, 2], σ_c = 0.5, so D = 2 at pixel 0 in both frames, exactly.
    x = torch.tensor([[0.0, 2.0], [2.0, 2.0]]).reshape(1, 2, 1, 1, 2)
    assert torch.equal(temporal_latent_smoothing(x, 2.0), x)
    assert torch.equal(temporal_latent_smoothing(x, 2.001), torch.tensor([1.0, 2.0]).expand(1, 2, 1, 1, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_its_own_dtype(dtype):
    x = random_latents((2, 5, 3, 6, 7), seed=3, dtype=dtype)
    out = TemporalLatentSmoother(2.0)(x)
    assert out.dtype == dtype
    assert torch.equal(out, temporal_latent_smoothing(x.float(), 2.0).to(dtype))
    assert not torch.equal(out, x)  # threshold 2 replaces some voxels of a random video


@pytest.mark.parametrize("threshold", [-0.5, float("nan"), float("inf")])
def test_bad_threshold_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold"):
        TemporalLatentSmoother(threshold)


@pytest.mark.parametrize("smoother", SMOOTHERS, ids=repr)
@pytest.mark.parametrize(
    "latents", [torch.zeros(2, 3, 4, 5), torch.zeros(1, 2, 3, 4, 5, 6), torch.zeros(1, 2, 3, 4, 5, dtype=torch.int64)]
)
def test_latents_that_are_not_five_dimensional_floats_are_rejected(smoother, latents):
    with pytest.raises(ValueError, match=r"\(" + ", ".join(map(str, latents.shape)) + r"\)"):
        smoother(latents)


@pytest.mark.parametrize("smoother", SMOOTHERS, ids=repr)
def test_smoothers_keep_shape_dtype_device_and_satisfy_the_protocol(smoother):
    assert isinstance(smoother, Smoother)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = random_latents((1, 4, 3, 5, 5), seed=0, dtype=dtype)
        out = smoother(x)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def reference_frame_convolution(x: np.ndarray, weight, radius: int) -> np.ndarray:
    """y_t = Σ_k weight(k)·x_{t+k} / Σ_k weight(k), both sums over offsets k that stay inside the video."""
    frames = x.shape[1]
    out = np.zeros_like(x)
    for t in range(frames):
        total, norm = np.zeros_like(x[:, 0]), 0.0
        for k in range(-radius, radius + 1):
            if 0 <= t + k < frames:
                total += weight(k) * x[:, t + k]
                norm += weight(k)
        out[:, t] = total / norm
    return out


def gaussian_reference(x: np.ndarray, sigma: float) -> np.ndarray:
    return reference_frame_convolution(x, lambda k: math.exp(-(k**2) / (2 * sigma**2)), math.ceil(3 * sigma))


def uniform_reference(x: np.ndarray, window: int) -> np.ndarray:
    return reference_frame_convolution(x, lambda k: 1.0, window // 2)


baselines = st.floats(0.1, 5.0).map(lambda s: (GaussianTemporalSmoother(s), lambda x: gaussian_reference(x, s))) | (
    st.integers(0, 5).map(lambda n: (UniformTemporalSmoother(2 * n + 1), lambda x: uniform_reference(x, 2 * n + 1)))
)


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=seeds, layout=layouts, baseline=baselines)
def test_baselines_match_explicit_sums_in_float64(shape, seed, layout, baseline):
    smoother, reference = baseline
    x = random_latents(shape, seed, torch.float64, layout)
    np.testing.assert_allclose(smoother(x).numpy(), reference(x.numpy()), rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds, baseline=baselines)
def test_baselines_match_explicit_sums_in_float32(shape, seed, baseline):
    smoother, reference = baseline
    x = random_latents(shape, seed, torch.float32)
    np.testing.assert_allclose(smoother(x).double().numpy(), reference(x.double().numpy()), rtol=1e-5, atol=1e-5)


@settings(deadline=None, max_examples=25)
@given(shape=shapes, seed=seeds, baseline=baselines)
def test_baselines_leave_a_video_constant_over_time_unchanged(shape, seed, baseline):
    smoother, _ = baseline
    x = random_latents((shape[0], 1, *shape[2:]), seed, torch.float32).expand(shape)
    torch.testing.assert_close(smoother(x), x, rtol=1e-6, atol=1e-6)


def series(values) -> torch.Tensor:
    """One (b, c, h, w) location holding `values` over frames."""
    return torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1, 1, 1)


def test_uniform_window_renormalises_at_the_ends_of_a_ramp():
    out = UniformTemporalSmoother(3)(series([0.0, 1.0, 2.0, 3.0, 4.0])).flatten()
    # Interior frames average three neighbours; the end frames average the two that exist.
    torch.testing.assert_close(out, torch.tensor([0.5, 1.0, 2.0, 3.0, 3.5], dtype=torch.float64))


def test_gaussian_renormalises_at_the_ends_of_a_one_hot_series():
    out = GaussianTemporalSmoother(1.0)(series([1.0, 0.0, 0.0])).flatten()
    # σ = 1 reaches 3 frames either side, so every frame of a 3-frame video keeps only its in-video weights.
    w1, w2 = math.exp(-0.5), math.exp(-2.0)
    expected = torch.tensor([1 / (1 + w1 + w2), w1 / (1 + 2 * w1), w2 / (1 + w1 + w2)], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_is_rejected(sigma):
    with pytest.raises(ValueError, match="sigma"):
        GaussianTemporalSmoother(sigma)


@pytest.mark.parametrize("window", [0, 2, 4, -3, True])
def test_bad_window_is_rejected(window):
    with pytest.raises(ValueError, match="window"):
        UniformTemporalSmoother(window)


def test_reprs_name_the_parameters():
    assert repr(TemporalLatentSmoother(1.5)) == "TemporalLatentSmoother(threshold=1.5)"
    assert repr(GaussianTemporalSmoother(2.0)) == "GaussianTemporalSmoother(sigma=2.0)"
    assert repr(UniformTemporalSmoother(5)) == "UniformTemporalSmoother(window=5)"
