"""Laws of the reverse chain's noise: shape and dtype, reproducibility, and the statistics of eq. 8-9."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jvid.noise import CorrelatedNoise, IndependentNoise, NoiseDraw, NoiseGenerator, noise_draw

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

shapes = st.tuples(*(st.integers(1, n) for n in (3, 6, 5, 7, 7)))
ratios = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)
seeds = st.integers(0, 2**32 - 1)
noises = st.just(IndependentNoise()) | ratios.map(CorrelatedNoise)


def draw(noise: NoiseGenerator, shape, seed: int, **kwargs) -> torch.Tensor:
    return noise.sample(shape, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_both_generators_satisfy_the_protocol():
    assert isinstance(IndependentNoise(), NoiseGenerator)
    assert isinstance(CorrelatedNoise(0.5), NoiseGenerator)


@settings(deadline=None, max_examples=60)
@given(noise=noises, shape=shapes, seed=seeds, dtype=st.sampled_from(DTYPES))
def test_sample_has_requested_shape_dtype_device(noise, shape, seed, dtype):
    z = draw(noise, shape, seed, dtype=dtype, device="cpu")
    assert z.shape == shape
    assert z.dtype == dtype
    assert z.device.type == "cpu"
    assert z.is_contiguous()
    assert torch.isfinite(z).all()


def test_sample_moves_to_the_requested_device_after_drawing_on_the_generators():
    z = draw(CorrelatedNoise(0.5), (1, 2, 3, 4, 5), seed=0, device="meta")
    assert z.device.type == "meta" and z.shape == (1, 2, 3, 4, 5)


@settings(deadline=None, max_examples=40)
@given(noise=noises, shape=shapes, seed=seeds)
def test_same_seed_same_noise_and_different_seed_different_noise(noise, shape, seed):
    first = draw(noise, shape, seed)
    assert torch.equal(first, draw(noise, shape, seed))
    assert not torch.equal(first, draw(noise, shape, seed + 1))


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=seeds, dtype=st.sampled_from(DTYPES))
def test_zero_shared_ratio_is_bitwise_independent_noise(shape, seed, dtype):
    correlated = draw(CorrelatedNoise(0.0), shape, seed, dtype=dtype)
    assert torch.equal(correlated, draw(IndependentNoise(), shape, seed, dtype=dtype))


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=seeds, r=st.floats(0.01, 0.99))
def test_draw_order_is_shared_then_independent(shape, seed, r):
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn((shape[0], 1, *shape[2:]), generator=generator)
    independent = torch.randn(shape, generator=generator)
    expected = math.sqrt(r) * shared + math.sqrt(1.0 - r) * independent
    torch.testing.assert_close(draw(CorrelatedNoise(r), shape, seed), expected, rtol=1e-6, atol=1e-6)


@settings(deadline=None, max_examples=40)
@given(shape=shapes, seed=seeds, dtype=st.sampled_from(DTYPES))
def test_full_shared_ratio_repeats_one_frame(shape, seed, dtype):
    z = draw(CorrelatedNoise(1.0), shape, seed, dtype=dtype)
    assert torch.equal(z, z[:, :1].expand_as(z))


# L independent (b, c, h, w) locations, each a series of F frames with unit variance and pairwise correlation r.
STATS_SHAPE = (8, 3, 4, 64, 64)
L, F = 8 * 4 * 64 * 64, 3


@pytest.mark.parametrize("r", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_empirical_mean_variance_and_cross_frame_correlation(r):
    z = draw(CorrelatedNoise(r), STATS_SHAPE, seed=1234, dtype=torch.float64)
    # Standard errors from the Gaussian model, over N = L·F elements with each location's F frames correlated by r:
    # Var(mean z) = (1 + (F−1)r) / N; Var(mean z²) = 2(1 + (F−1)r²) / N; Var(mean z_f z_g) = (1 + r²) / L.
    # Six standard errors make a false failure a ~1e-9 event, while still resolving r to about ±0.03.
    n = L * F
    assert abs(z.mean().item()) < 6 * math.sqrt((1 + (F - 1) * r) / n)
    assert abs(z.pow(2).mean().item() - 1.0) < 6 * math.sqrt(2 * (1 + (F - 1) * r**2) / n)
    for f, g in [(0, 1), (0, 2), (1, 2)]:
        correlation = (z[:, f] * z[:, g]).mean().item()
        assert abs(correlation - r) < 6 * math.sqrt((1 + r**2) / L)


@pytest.mark.parametrize("r", [-0.1, 1.1, float("nan"), float("inf")])
def test_shared_ratio_outside_unit_interval_is_rejected(r):
    with pytest.raises(ValueError, match="shared_ratio"):
        CorrelatedNoise(r)


BAD_SHAPES = [(2, 3, 4, 5), (1, 0, 4, 4, 4), (0, 1, 1, 1, 1), (1, 2, -3, 4, 4), (1, 2, 3, 4, 5, 6)]


@pytest.mark.parametrize("noise", [IndependentNoise(), CorrelatedNoise(0.5)])
@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_shape_that_is_not_five_positive_ints_is_rejected(noise, shape):
    with pytest.raises(ValueError, match=r"shape .*" + r"\(" + ", ".join(map(str, shape))):
        noise.sample(shape)


def test_non_floating_dtype_is_rejected():
    with pytest.raises(TypeError, match="int64"):
        IndependentNoise().sample((1, 1, 1, 1, 1), dtype=torch.int64)


def test_reprs_name_the_shared_ratio():
    assert repr(IndependentNoise()) == "IndependentNoise()"
    assert repr(CorrelatedNoise(0.25)) == "CorrelatedNoise(shared_ratio=0.25)"


# Parts of a draw (NoiseDraw) for fused steps: the same generator calls as `sample`, combined exactly as it combines.


def draw_parts(noise: NoiseGenerator, shape, seed: int, **kwargs) -> NoiseDraw:
    return noise.draw(shape, generator=torch.Generator().manual_seed(seed), **kwargs)


@settings(deadline=None, max_examples=60)
@given(noise=noises, shape=shapes, seed=seeds, dtype=st.sampled_from(DTYPES))
def test_sample_is_the_draw_combined_bit_for_bit(noise, shape, seed, dtype):
    parts = draw_parts(noise, shape, seed, dtype=dtype)
    assert torch.equal(parts.combined(dtype), draw(noise, shape, seed, dtype=dtype))


@settings(deadline=None, max_examples=40)
@given(noise=noises, shape=shapes, seed=seeds, dtype=st.sampled_from(DTYPES))
def test_draw_leaves_the_generator_where_sample_leaves_it(noise, shape, seed, dtype):
    after_sample, after_draw = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    noise.sample(shape, generator=after_sample, dtype=dtype)
    noise.draw(shape, generator=after_draw, dtype=dtype)
    assert torch.equal(after_sample.get_state(), after_draw.get_state())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r", [0.0, 0.3, 1.0])
def test_draw_holds_only_the_weighted_parts_in_their_drawing_dtype(r, dtype):
    shape = (2, 3, 4, 5, 6)
    parts = draw_parts(CorrelatedNoise(r), shape, seed=7, dtype=dtype)
    assert parts.shared_ratio == r
    work = dtype if r in (0.0, 1.0) else torch.promote_types(dtype, torch.float32)  # one draw at r = 0, 1: in dtype
    if r < 1.0:
        assert parts.independent.shape == shape and parts.independent.dtype == work
    else:
        assert parts.independent is None and parts.frames == 3
    if r > 0.0:
        assert parts.shared.shape == (2, 1, 4, 5, 6) and parts.shared.dtype == work
    else:
        assert parts.shared is None


def test_independent_noise_draws_its_sample_as_the_independent_part():
    parts = draw_parts(IndependentNoise(), (1, 2, 3, 4, 5), seed=3, dtype=torch.bfloat16)
    assert parts.shared is None and parts.shared_ratio == 0.0
    assert torch.equal(parts.independent, draw(IndependentNoise(), (1, 2, 3, 4, 5), 3, dtype=torch.bfloat16))


def test_draw_moves_its_parts_to_the_requested_device():
    parts = draw_parts(CorrelatedNoise(0.5), (1, 2, 3, 4, 5), seed=0, device="meta")
    assert parts.independent.device.type == "meta" and parts.shared.device.type == "meta"


class SampleOnly:
    """A user's generator with the protocol's one method."""

    def sample(self, shape, *, generator=None, device=None, dtype=torch.float32):
        return torch.full(shape, 0.5, device=device, dtype=dtype)


def test_noise_draw_falls_back_to_sample_as_the_independent_part():
    assert isinstance(SampleOnly(), NoiseGenerator)
    parts = noise_draw(SampleOnly(), (1, 2, 3, 4, 5), dtype=torch.float16)
    assert parts.shared is None and parts.shared_ratio == 0.0
    assert torch.equal(parts.combined(torch.float16), torch.full((1, 2, 3, 4, 5), 0.5, dtype=torch.float16))


@pytest.mark.parametrize("noise", [IndependentNoise(), CorrelatedNoise(0.25)], ids=repr)
def test_noise_draw_uses_the_generators_own_draw(noise):
    shape, seed = (2, 3, 2, 3, 2), 11
    parts = noise_draw(noise, shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(parts.combined(torch.float32), draw(noise, shape, seed))


def test_full_shared_ratio_combines_one_frame_over_all_frames():
    parts = NoiseDraw(independent=None, shared=torch.randn(2, 1, 3, 4, 4), shared_ratio=1.0, frames=5)
    assert torch.equal(parts.combined(torch.float32), parts.shared.expand(2, 5, 3, 4, 4))


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (dict(independent=None, shared=torch.zeros(1, 1, 2, 2, 2), shared_ratio=0.5), r"z_ind.*r = 0\.5.*missing"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=None, shared_ratio=0.5), r"z_shared.*r = 0\.5.*missing"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=torch.zeros(1, 1, 2, 2, 2), shared_ratio=1.0),
         r"z_ind.*r = 1\.0.*given"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=torch.zeros(1, 1, 2, 2, 2), shared_ratio=0.0),
         r"z_shared.*r = 0\.0.*given"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=torch.zeros(1, 3, 2, 2, 2), shared_ratio=0.5),
         r"\(b, 1, c, h, w\).*\(1, 3, 2, 2, 2\)"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=torch.zeros(2, 1, 2, 2, 2), shared_ratio=0.5),
         r"\(2, 1, 2, 2, 2\) does not match.*\(1, 1, 2, 2, 2\)"),
        (dict(independent=torch.zeros(1, 3, 2, 2, 2), shared=None, shared_ratio=-0.5), "shared_ratio"),
    ],
    ids=["no z_ind", "no z_shared", "z_ind at r=1", "z_shared at r=0", "shared frames", "shared batch", "bad r"],
)
def test_inconsistent_parts_are_rejected(parts, message, unchecked):
    with pytest.raises(ValueError, match=message):
        NoiseDraw(**parts)


def test_combining_shared_noise_alone_needs_the_frame_count():
    with pytest.raises(ValueError, match="frames="):
        NoiseDraw(independent=None, shared=torch.zeros(1, 1, 2, 2, 2), shared_ratio=1.0).combined(torch.float32)
