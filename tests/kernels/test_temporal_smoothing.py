"""The fused temporal smoothing kernel (sec. 3.6) against its PyTorch reference, in Triton's interpreter on the CPU.

Triton decides between compiled and interpreted kernels when it is imported, and `import jvid` (conftest) already
imports it, so TRITON_INTERPRET=1 must be set by the test command (the README's and CI's do): this module cannot set
it in time. Without it and without a CUDA device every test here fails with a message saying so.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jvid.kernels
from jvid.kernels import SUPPORTED_DTYPES, fused_temporal_smoothing, is_interpreted
from jvid.kernels import temporal_smoothing as kernel_module
from jvid.kernels.temporal_smoothing import LaunchConfig
from jvid.postproc import TemporalLatentSmoother, temporal_latent_smoothing
from jvid.postproc import smoothing as reference_module

DEVICE = "cpu" if is_interpreted() else "cuda"
pytestmark = pytest.mark.usefixtures("kernel_can_run")

# The kernel computes D in float32 with another summation order than the reference, so the two D differ by a few
# float32 ulps relative to the terms |x − μ| / σ_c: voxels whose float64 D lies within TIE_MARGIN·threshold of the
# threshold may be decided either way; every other voxel must be decided alike.
TIE_MARGIN = 1e-5
# (rtol, atol) for voxels both sides replace by μ. float32: μ's summation order moves it by a few ulps (atol covers μ
# near 0, where the error is relative to |x|, not |μ|). Half precision: the same float32 μ, rounded to the input dtype,
# so one ulp of that dtype (2^-10 for float16, 2^-7 for bfloat16) where the two float32 μ straddle a rounding point;
# atol covers float16 subnormals and ±0 for μ near 0.
TOLERANCES = {torch.float32: (1e-6, 1e-6), torch.float16: (2.0**-10, 1e-6), torch.bfloat16: (2.0**-7, 1e-6)}

# Odd, non-power-of-two sizes; f = 1 makes x = μ, h = w = 1 exercises the σ_c floor.
shapes = st.tuples(st.integers(1, 3), st.integers(1, 10), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9))
seeds = st.integers(0, 2**31 - 1)
layouts = st.sampled_from(["contiguous", "frames_last", "sliced", "hw_transposed", "expanded"])
thresholds = st.sampled_from([0.0, 2.0, 1e30]) | st.floats(0.0, 1.0).map(lambda q: ("quantile", q))
half_dtypes = st.sampled_from([torch.float16, torch.bfloat16])
# Every way of covering the latents: pixel tiles (two launches); whole videos in one tile or in several, with one
# program per video or fewer programs looping over videos; small tiles split frames into chunks; groups of programs
# holding a video in registers.
CONFIGS = [
    LaunchConfig("tiles"),
    LaunchConfig("tiles", tile_elements=64, frames_per_iteration=16),
    LaunchConfig("videos", tile_elements=8192),
    LaunchConfig("videos", tile_elements=64, programs_per_sm=1, frames_per_iteration=2),
    LaunchConfig("videos", tile_elements=256, programs_per_sm=2, frames_per_iteration=1),
    # One chunk per video in the interpreter, which runs programs one after another; on a GPU, small chunks make
    # groups of many programs that wait for each other.
    LaunchConfig("groups", tile_elements=2**20 if DEVICE == "cpu" else 1024),
]
configs = st.sampled_from(CONFIGS)


def random_latents(shape, seed, dtype=torch.float32, layout="contiguous", offset=0.0) -> torch.Tensor:
    """Normal latents around `offset` on DEVICE, laid out in memory as `layout` says; the same values for any layout."""
    b, f, c, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    if layout == "expanded":  # one channel seen c times (stride 0): the c terms of D are equal
        x = torch.randn((b, f, 1, h, w), generator=generator) + offset
        return x.to(DEVICE, dtype).expand(shape)
    x = (torch.randn(shape, generator=generator) + offset).to(DEVICE, dtype)
    if layout == "frames_last":  # a (b, c, h, w, f) buffer seen as (b, f, c, h, w)
        return x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    if layout == "sliced":  # every other column of a wider buffer: (h, w) still flatten to one stride
        wide = torch.zeros((b, f, c, h, 2 * w), dtype=dtype, device=DEVICE)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "hw_transposed":  # (h, w) do not flatten: the launcher copies
        return x.transpose(3, 4).contiguous().transpose(3, 4)
    return x


def deviation64(latents: torch.Tensor) -> torch.Tensor:
    """D = Σ_c |x − μ| / σ_c in float64, shape (b, f, 1, h, w); tests/postproc checks this formula voxel by voxel."""
    x = latents.double()
    mu = x.mean(dim=1, keepdim=True)
    sigma = mu.std(dim=(3, 4), correction=0, keepdim=True).clamp_min(reference_module.SIGMA_FLOOR)
    return ((x - mu).abs() / sigma).sum(dim=2, keepdim=True)


def resolve(threshold, latents: torch.Tensor) -> float:
    """A fixed threshold, or for ("quantile", q) the midpoint between two neighbouring values of D near its q-quantile,
    so that about that share of voxels is replaced and none ties with the threshold (D repeats for f = 2, or in
    coarse bfloat16 data)."""
    if not isinstance(threshold, tuple):
        return threshold
    values = torch.unique(deviation64(latents).flatten().cpu())  # sorted
    edges = torch.cat([values, 2 * values[-1:] + 1])
    return float((edges[:-1] + edges[1:])[round(threshold[1] * (values.numel() - 1))] / 2)


def assert_matches_reference(latents: torch.Tensor, threshold: float, config=None) -> torch.Tensor:
    out = fused_temporal_smoothing(latents, threshold, config)
    assert out.shape == latents.shape and out.dtype == latents.dtype and out.device == latents.device
    assert out.is_contiguous()
    expected = temporal_latent_smoothing(latents, threshold)
    deviation = deviation64(latents)
    near = (deviation - threshold).abs() <= TIE_MARGIN * threshold if threshold > 0 else torch.zeros_like(deviation)
    # The margin leaves few voxels open (ties come in frame pairs when f = 2), so the checks below see almost all.
    assert int(near.sum()) <= 4
    near = near.bool().expand_as(latents)
    kept = (deviation >= threshold).expand_as(latents) & ~near
    smoothed = (deviation < threshold).expand_as(latents) & ~near
    assert torch.equal(expected[kept], latents[kept])  # the margin is wide enough for the reference too
    assert torch.equal(out[kept], latents[kept])
    rtol, atol = TOLERANCES[latents.dtype]
    torch.testing.assert_close(out[smoothed], expected[smoothed], rtol=rtol, atol=atol)
    return out


@settings(max_examples=60)
@given(shape=shapes, seed=seeds, layout=layouts, threshold=thresholds, offset=st.sampled_from([0.0, 3.0]),
       config=configs)
def test_float32_matches_the_reference_away_from_ties(shape, seed, layout, threshold, offset, config):
    x = random_latents(shape, seed, torch.float32, layout, offset)
    assert_matches_reference(x, resolve(threshold, x), config)


@settings(max_examples=40)
@given(shape=shapes, seed=seeds, dtype=half_dtypes, layout=layouts, threshold=thresholds, config=configs)
def test_half_precision_matches_the_reference_within_one_ulp(shape, seed, dtype, layout, threshold, config):
    x = random_latents(shape, seed, dtype, layout)
    assert_matches_reference(x, resolve(threshold, x), config)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 16, 4, 32, 32),  # the paper's 256x256 latents: 16 pixel tiles per video
        (1, 17, 9, 33, 33),  # frames in two chunks of 16, and more tiles (69) than moments merged at once (64)
        (1, 3, 5, 7, 9),
    ],
)
@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_shapes_that_split_frames_and_tiles_match_the_reference(shape, dtype, config):
    x = random_latents(shape, seed=sum(shape), dtype=dtype)
    out = assert_matches_reference(x, resolve(("quantile", 0.5), x), config)
    assert (out != x).any(dim=2).float().mean() > 0.4  # about half the (f, h, w) vectors take μ


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_every_output_element_is_written(dtype, config, monkeypatch):
    # The launcher allocates its output and the tiles' μ and moments with torch.empty: poison them with NaN.
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: empty(*args, **kwargs).fill_(math.nan))
    x = random_latents((2, 5, 3, 9, 7), seed=5, dtype=dtype)
    for threshold in (0.0, 2.0, 1e30):  # keep all, some, none of x; a NaN σ_c would keep x and fail at 1e30
        assert not assert_matches_reference(x, threshold, config).isnan().any()


@pytest.mark.parametrize(("dtype", "ulp"), [(torch.float16, 2.0**-10), (torch.bfloat16, 2.0**-7)], ids=str)
def test_half_precision_mean_is_rounded_to_nearest_even(dtype, ulp):
    # Four frames, each μ exact in float32: 1 + ulp·3/4 rounds up to 1 + ulp (truncation would give 1), and
    # 1 + ulp·3/2 is a tie that goes to the even 1 + 2·ulp; likewise for the negatives.
    one, step = 1.0, 3 * ulp
    series = [[one, one, one, one + step], [one, one + step, one, one + step]]
    x = torch.tensor(series + [[-v for v in s] for s in series], dtype=dtype).T.reshape(1, 4, 1, 2, 2)
    expected = torch.tensor([one + ulp, one + 2 * ulp, -one - ulp, -one - 2 * ulp], dtype=dtype).reshape(1, 1, 1, 2, 2)
    assert torch.equal(temporal_latent_smoothing(x, 1e30), expected.expand_as(x))
    assert torch.equal(fused_temporal_smoothing(x.to(DEVICE), 1e30).cpu(), expected.expand_as(x))


@settings(max_examples=10)
@given(shape=shapes, seed=seeds, dtype=st.sampled_from(SUPPORTED_DTYPES), layout=layouts)
def test_zero_threshold_is_the_identity(shape, seed, dtype, layout):
    x = random_latents(shape, seed, dtype, layout)
    assert torch.equal(fused_temporal_smoothing(x, 0.0), x)


@settings(max_examples=10)
@given(shape=shapes, seed=seeds, dtype=st.sampled_from(SUPPORTED_DTYPES))
def test_huge_threshold_sets_every_frame_to_the_frame_mean(shape, seed, dtype):
    x = random_latents(shape, seed, dtype)
    out = fused_temporal_smoothing(x, 1e30)
    assert torch.equal(out, out[:, :1].expand_as(out))  # one μ per (b, c, h, w), written to every frame
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(out[:, 0], x.float().mean(dim=1).to(dtype), rtol=rtol, atol=atol)


@settings(max_examples=10)
@given(shape=shapes, seed=seeds, threshold=st.floats(0.0, 10.0))
def test_video_constant_over_time_is_unchanged(shape, seed, threshold):
    x = random_latents((shape[0], 1, *shape[2:]), seed).expand(shape)  # stride 0 over frames
    # μ = x up to the rounding of f equal terms summed; D is then rounding noise over σ_c, either side of any threshold.
    torch.testing.assert_close(fused_temporal_smoothing(x, threshold), x, rtol=1e-6, atol=1e-6)


def test_voxel_exactly_at_the_threshold_is_kept_and_one_below_is_replaced():
    # One channel, two frames, two pixels: μ = [1, 2], σ_c = 0.5, so D = 2 at pixel 0 in both frames, exactly.
    x = torch.tensor([[0.0, 2.0], [2.0, 2.0]], device=DEVICE).reshape(1, 2, 1, 1, 2)
    assert torch.equal(fused_temporal_smoothing(x, 2.0), x)
    smoothed = torch.tensor([1.0, 2.0], device=DEVICE).expand(1, 2, 1, 1, 2)
    assert torch.equal(fused_temporal_smoothing(x, 2.001), smoothed)


def test_flat_frame_mean_uses_the_sigma_floor():
    # μ is 0 at every pixel, so σ_c = SIGMA_FLOOR and D = Σ_c |x| / 1e-6 = 0.2 for two channels at ±1e-7.
    x = torch.tensor([1e-7, -1e-7], device=DEVICE).reshape(1, 2, 1, 1, 1).expand(1, 2, 2, 3, 2).contiguous()
    assert kernel_module.SIGMA_FLOOR == reference_module.SIGMA_FLOOR
    assert torch.equal(fused_temporal_smoothing(x, 0.3), torch.zeros_like(x))
    assert torch.equal(fused_temporal_smoothing(x, 0.1), x)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf − inf in the interpreter
@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_a_video_holding_nan_or_inf_is_left_unchanged_like_the_reference(bad, config):
    # μ and σ_c of that channel are NaN, so is every D of the video, and D < threshold is false; other videos smooth.
    x = random_latents((2, 4, 3, 5, 5), seed=1)
    x[0, 2, 1, 3, 4] = bad
    out, expected = fused_temporal_smoothing(x, 2.0, config), temporal_latent_smoothing(x, 2.0)
    assert torch.equal(expected[0].nan_to_num(), x[0].nan_to_num())
    assert torch.equal(out[0].nan_to_num(), x[0].nan_to_num())
    assert not torch.equal(out[1], x[1])
    torch.testing.assert_close(out[1], expected[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (torch.zeros(2, 3, 4, 5), r"5-D.*\(2, 3, 4, 5\)"),
        (torch.zeros(1, 2, 3, 4, 5, 6), r"5-D.*\(1, 2, 3, 4, 5, 6\)"),
        (torch.zeros(1, 2, 3, 4, 5, dtype=torch.int64), "torch.int64"),
        (torch.zeros(1, 2, 3, 4, 5, dtype=torch.float64), "float64"),
        (torch.zeros(1, 2, 3, 4, 5, device="meta"), "meta"),
    ],
    ids=["4-D", "6-D", "int64", "float64", "meta"],
)
def test_bad_latents_are_rejected_with_the_problem_named(latents, message):
    with pytest.raises(ValueError, match=message):
        fused_temporal_smoothing(latents, 2.0)


@pytest.mark.parametrize("threshold", [-0.5, math.nan])
def test_bad_threshold_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold"):
        fused_temporal_smoothing(torch.zeros(1, 2, 3, 4, 5, device=DEVICE), threshold)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "rows"}, "kind must be one of"),
        ({"kind": "tiles", "frames_per_iteration": 3}, "frames_per_iteration"),
        ({"kind": "groups", "programs_per_sm": 0}, "programs_per_sm"),
        ({"kind": "videos", "tile_elements": 0}, "tile_elements"),
        ({"kind": "videos", "num_warps": 3}, "num_warps"),
    ],
)
def test_bad_launch_config_is_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        LaunchConfig(**fields)


def test_groups_that_cannot_all_be_resident_are_refused():
    # 16 frames x 4 channels x 16 pixels a program: a 64x64 video needs 256 programs waiting for each other, more than
    # the interpreter (one at a time) or one program on each of fewer than 256 multiprocessors runs at once.
    x = random_latents((1, 16, 4, 64, 64), seed=0)
    with pytest.raises(ValueError, match="256 chunks, which must all run at once"):
        fused_temporal_smoothing(x, 2.0, LaunchConfig("groups", tile_elements=1024, programs_per_sm=1))


@pytest.mark.skipif(DEVICE == "cpu", reason="occupancy is a GPU's; the interpreter runs one program at a time")
def test_groups_asking_for_more_programs_than_fit_are_refused():
    # 32 warps a program: a multiprocessor holds at most two (64 warps).
    x = random_latents((1, 16, 4, 8, 8), seed=0)
    with pytest.raises(ValueError, match="asks for 3 programs per multiprocessor, but only"):
        fused_temporal_smoothing(x, 2.0, LaunchConfig("groups", num_warps=32, programs_per_sm=3))


@pytest.mark.parametrize(
    ("shape", "dtype", "expected"),
    [
        ((4, 16, 4, 32, 32), torch.bfloat16, LaunchConfig("groups", 2048, num_warps=4)),
        ((16, 16, 4, 32, 32), torch.float32, LaunchConfig("groups", 2048, num_warps=4)),
        ((8, 16, 4, 64, 64), torch.bfloat16, LaunchConfig("groups", 4096, num_warps=2)),
        ((16, 16, 1, 64, 64), torch.bfloat16, LaunchConfig("groups", 2048, num_warps=4)),
        ((1, 16, 4, 256, 256), torch.float32, LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)),
        ((2, 128, 4, 16, 16), torch.float32, LaunchConfig("groups", 8192, num_warps=4)),
        ((1, 256, 4, 16, 16), torch.float32, LaunchConfig("groups", 16384, num_warps=8)),
        ((1, 128, 4, 64, 64), torch.bfloat16, LaunchConfig("groups", 16384, num_warps=8)),
        ((1, 512, 4, 16, 16), torch.float32, LaunchConfig("tiles", 256, num_warps=4, frames_per_iteration=2)),
        ((256, 16, 4, 32, 32), torch.bfloat16, LaunchConfig("videos", 4096, num_warps=4, frames_per_iteration=2)),
        ((256, 16, 4, 32, 32), torch.float32, LaunchConfig("videos", 4096, num_warps=8, frames_per_iteration=8)),
        ((256, 16, 4, 8, 8), torch.bfloat16, LaunchConfig("videos", 4096, num_warps=8, frames_per_iteration=16)),
        ((512, 8, 8, 16, 16), torch.float32, LaunchConfig("videos", 4096, num_warps=8, frames_per_iteration=16)),
        ((256, 16, 16, 64, 64), torch.float32, LaunchConfig("videos", 4096, num_warps=8, frames_per_iteration=8)),
        ((8, 16, 4, 128, 128), torch.bfloat16, LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)),
        ((16, 16, 1, 128, 128), torch.bfloat16, LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)),
        ((16, 16, 16, 32, 32), torch.float32, LaunchConfig("tiles", 512, num_warps=4, frames_per_iteration=8)),
    ],
    ids=str,
)
def test_default_launch_on_a_132_multiprocessor_gpu(shape, dtype, expected, monkeypatch):
    monkeypatch.setattr(kernel_module, "_multiprocessors", lambda device: 132)
    assert kernel_module.default_config(shape, dtype, torch.device("cuda")) == expected


def test_batches_beyond_a_launch_grid_are_split_and_frames_beyond_it_refused(monkeypatch):
    # CUDA bounds a grid's second and third dimensions, along which the tile kernels lay runs of frames and videos.
    monkeypatch.setattr(kernel_module, "_MAX_GRID_YZ", 2)
    config = LaunchConfig("tiles", frames_per_iteration=2)
    assert_matches_reference(random_latents((5, 4, 2, 4, 3), seed=3), 2.0, config)  # videos in slices of 2, 2, 1
    # The replacement kernel takes float32 frames of 2 channels 16 at a time (8 values of each pixel a thread).
    with pytest.raises(ValueError, match="splits 40 frames into 3 runs of 16"):
        fused_temporal_smoothing(random_latents((1, 40, 2, 4, 3), seed=3), 2.0, config)


@pytest.mark.parametrize("tile_elements", [32, 4096])
def test_replacement_rows_wider_and_narrower_than_the_moment_tiles(tile_elements):
    # 2304 pixels of one float32 channel: the replacement's rows are 512 pixels (4 warps of 4-pixel vectors), the
    # moments' tiles 32 or 4096 (all pixels), so σ_c merges 72 tiles or one, and rows straddle tiles or lie in one.
    assert kernel_module._replacement_blocks(1, 48 * 48, 4) == (512, 4, 16)
    assert_matches_reference(random_latents((2, 3, 1, 48, 48), seed=5), 2.0, LaunchConfig("tiles", tile_elements))


def test_empty_latents_give_an_empty_result():
    x = torch.zeros(0, 4, 3, 5, 5, device=DEVICE)
    out = fused_temporal_smoothing(x, 2.0)
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("dtype", [*SUPPORTED_DTYPES, torch.float64], ids=str)
def test_smoother_uses_the_kernel_exactly_for_supported_cuda_latents(device, dtype, monkeypatch):
    calls = []

    def spy(latents, threshold):
        calls.append(threshold)
        return temporal_latent_smoothing(latents, threshold)

    monkeypatch.setattr(jvid.kernels, "fused_temporal_smoothing", spy)
    x = random_latents((1, 4, 3, 5, 5), seed=0, dtype=dtype).to(device)
    out = TemporalLatentSmoother(2.0)(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert calls == ([2.0] if device == "cuda" and dtype in SUPPORTED_DTYPES else [])
