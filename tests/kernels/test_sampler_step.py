"""The fused sampler step against the float64 formulas, the eager chain's step and its PyTorch reference, in Triton's
interpreter on the CPU (tolerances: tests/sampler_step_cases.py).

As for tests/kernels/test_temporal_smoothing.py, TRITON_INTERPRET=1 must be set by the test command, before `import
jvid` (conftest) imports Triton; without it and without a CUDA device every test here fails with a message saying so.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sampler_step_cases import (
    DTYPES,
    NUM_STEPS,
    assert_within,
    eager_bound,
    eager_step,
    formulas64,
    fused_bound,
    guidance_scales,
    make_case,
    ratios,
    seeds,
    shapes,
    solvers,
    step_indices,
)

from jvid.kernels import fused_sampler_step, is_interpreted
from jvid.kernels import sampler_step as kernel_module
from jvid.samplers.step import sampler_step_reference

DEVICE = "cpu" if is_interpreted() else "cuda"
pytestmark = pytest.mark.usefixtures("kernel_can_run")

steps = st.fixed_dictionaries(
    dict(guidance_scale=guidance_scales, shared_ratio=ratios, noise=st.booleans(), solver=solvers, index=step_indices,
         seed=seeds)
)


def case_on_device(shape, dtype, **step):
    return make_case(shape, dtype, device=DEVICE, **step)


def fused(case, **overrides):
    kwargs = case.kwargs() | overrides
    return fused_sampler_step(case.x, case.eps, case.coefficients, case.step_tensor(), **kwargs)


def reference(case, **overrides):
    kwargs = case.kwargs() | overrides
    return sampler_step_reference(case.x, case.eps, case.coefficients, case.step_tensor(), **kwargs)


def assert_matches(case) -> torch.Tensor:
    """The fused step within rounding of the float64 formulas, of the eager step and of the reference."""
    out = fused(case)
    dtype = case.x.dtype
    assert out.shape == case.x.shape and out.dtype == dtype and out.device == case.x.device
    assert out.is_contiguous()
    terms = formulas64(case)
    assert_within(out, terms.exact, fused_bound(terms, dtype), "fused against the float64 formulas")
    assert_within(out, eager_step(case), fused_bound(terms, dtype) + eager_bound(terms, dtype),
                  "fused against the eager step")
    assert_within(out, reference(case), 2 * fused_bound(terms, dtype), "fused against the reference")
    return out


@settings(max_examples=60)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), step=steps)
def test_fused_step_matches_the_formulas_the_eager_step_and_the_reference(shape, dtype, step):
    assert_matches(case_on_device(shape, dtype, **step))


@pytest.mark.parametrize(
    "shape",
    [
        (1, 16, 4, 32, 32),  # the paper's 256x256 latents
        (1, 2, 3, 40, 40),  # pixels in several tiles (small latents' tiles), the last one partial
        (2, 2, 16, 16, 16),  # channels in several tiles
        (3, 2, 5, 4, 4),  # several channels in one tile, three of its eight rows masked
        (1, 1, 1, 1, 1),
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tiles", ["small", "large"])
def test_tilings_match_with_guidance_and_correlated_noise(shape, dtype, tiles, monkeypatch):
    if tiles == "large":  # the 8-warp tiles of large latents, on shapes the interpreter runs quickly
        monkeypatch.setattr(kernel_module, "_SMALL_NUMEL", 0)
    assert_matches(case_on_device(shape, dtype, guidance_scale=7.5, shared_ratio=0.3))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_step_is_at_least_as_accurate_as_the_eager_step(dtype):
    # In half precision the eager step rounds ε̂'s intermediates and z before the update, the fused one does not: its
    # mean squared error to the float64 formulas is about 0.4 of the eager one's. In float32 both round alike.
    case = case_on_device((2, 4, 4, 8, 8), dtype, guidance_scale=2.0, shared_ratio=0.3)
    exact = formulas64(case).exact
    fused_error = float((fused(case).double() - exact).pow(2).mean())
    eager_error = float((eager_step(case).double() - exact).pow(2).mean())
    assert fused_error <= (1.25 if dtype == torch.float32 else 0.75) * eager_error


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_in_place_update_of_x(dtype):
    case = case_on_device((2, 3, 4, 5, 5), dtype, guidance_scale=2.0, shared_ratio=0.3)
    expected = fused(case)
    x = case.x.clone()
    out = fused_sampler_step(x, case.eps, case.coefficients, case.step_tensor(), out=x, **case.kwargs())
    assert out is x and torch.equal(x, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_output_element_is_written(dtype):
    case = case_on_device((2, 3, 5, 7, 9), dtype, guidance_scale=2.0, shared_ratio=0.3)
    out = torch.full_like(case.x, float("nan"))
    fused(case, out=out)
    assert not out.isnan().any()


@pytest.mark.parametrize("step_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("step_shape", [(), (1,)], ids=["0-d", "1-element"])
def test_step_index_and_coefficients_are_read_from_device_memory(step_dtype, step_shape):
    case = case_on_device((1, 2, 3, 4, 4), torch.float32, shared_ratio=0.3)
    step = torch.zeros(step_shape, dtype=step_dtype, device=DEVICE)
    results = []
    for index in (0, 6, 9):
        step.fill_(index)  # as a replayed CUDA graph sees it: the same tensor, updated in place
        case.index = index
        out = fused_sampler_step(case.x, case.eps, case.coefficients, step, **case.kwargs())
        terms = formulas64(case)
        assert_within(out, terms.exact, fused_bound(terms, torch.float32), f"step {index}")
        results.append(out)
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[1], results[2])


def test_last_step_without_noise_is_the_mean_update():
    case = case_on_device((1, 2, 3, 4, 4), torch.float32, guidance_scale=2.0, noise=False, index=9)
    a, b, sigma = case.coefficients[9].tolist()
    assert sigma == 0.0  # DDPM's last step adds no noise
    eps_hat = case.eager_eps()
    torch.testing.assert_close(fused(case), a * case.x + b * eps_hat, rtol=1e-6, atol=1e-6)


def test_strided_inputs_are_read_in_place():
    # ε as a video network returns it, (b, c, f, h, w) memory seen as (b, f, c, h, w); x with frames outermost.
    case = case_on_device((2, 3, 4, 5, 6), torch.bfloat16, guidance_scale=2.0, shared_ratio=0.3)
    expected = fused(case)
    case.eps = case.eps.transpose(1, 2).contiguous().transpose(1, 2)
    case.x = case.x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not case.eps.is_contiguous() and not case.x.is_contiguous()
    assert torch.equal(fused(case), expected)


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a CUDA device")
def test_one_captured_launch_replays_every_step_from_the_step_counter():
    case = case_on_device((2, 3, 4, 8, 8), torch.bfloat16, guidance_scale=2.0, shared_ratio=0.3)
    kwargs, coefficients = case.kwargs(), case.coefficients  # static buffers, as the graph reads them
    x, step = case.x.clone(), torch.zeros(1, dtype=torch.int64, device=DEVICE)
    flags = torch.zeros(NUM_STEPS, dtype=torch.int32, device=DEVICE)

    def program():
        fused_sampler_step(x, case.eps, coefficients, step, out=x, nonfinite=flags, **kwargs)
        step.add_(1)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        program()  # compiles the kernel outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        program()
    x.copy_(case.x)
    step.zero_()
    expected = case.x
    for index in range(NUM_STEPS):
        graph.replay()
        expected = fused_sampler_step(expected, case.eps, coefficients, torch.tensor(index, device=DEVICE), **kwargs)
        assert torch.equal(x, expected)
    assert step.item() == NUM_STEPS and not flags.any()


def test_nonfinite_flag_is_set_at_the_step_only_when_the_output_has_nan_or_inf():
    case = case_on_device((2, 3, 4, 5, 5), torch.float16, guidance_scale=2.0, shared_ratio=0.3, index=4)
    flags = torch.zeros(10, dtype=torch.int32, device=DEVICE)
    fused(case, nonfinite=flags)
    assert not flags.any()
    case.eps[3, 2, 1, 4, 0] = float("nan")  # a conditional ε
    fused(case, nonfinite=flags)
    assert flags.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    case.index = 6
    fused(case, nonfinite=flags)  # the flag of step 4 stays set: nothing clears a flag
    assert flags.tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 0, 0]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's numpy cast
def test_overflow_to_inf_in_the_output_dtype_is_flagged():
    case = case_on_device((1, 1, 1, 1, 2), torch.float16, noise=False, index=0)
    case.x = torch.tensor([60000.0, 1.0], dtype=torch.float16, device=DEVICE).reshape(1, 1, 1, 1, 2)
    coefficients = torch.tensor([[2.0, 0.0, 0.0]], device=DEVICE)  # 2 · 60000 is finite in float32, not in float16
    flags = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    out = fused_sampler_step(case.x, case.eps, coefficients, torch.tensor(0, device=DEVICE), nonfinite=flags)
    assert out[0, 0, 0, 0].tolist() == [float("inf"), 2.0] and flags.tolist() == [1]


def test_bfloat16_output_is_rounded_to_nearest_even():
    # 0·x + 1·ε with a float32 ε, bfloat16's ulp at 1 being 2^-7: 1 + ulp·3/4 rounds up to 1 + ulp (truncation would
    # give 1), and 1 + ulp·3/2 is a tie that goes to the even 1 + 2·ulp; likewise for the negatives.
    ulp = 2.0**-7
    values = [1 + 0.75 * ulp, 1 + 1.5 * ulp, -1 - 0.75 * ulp, -1 - 1.5 * ulp]
    eps = torch.tensor(values, device=DEVICE).reshape(1, 1, 1, 1, 4)
    x = torch.zeros(eps.shape, dtype=torch.bfloat16, device=DEVICE)
    coefficients = torch.tensor([[0.0, 1.0, 0.0]], device=DEVICE)
    out = fused_sampler_step(x, eps, coefficients, torch.tensor(0, device=DEVICE))
    assert out.flatten().tolist() == [1 + ulp, 1 + 2 * ulp, -1 - ulp, -1 - 2 * ulp]
    assert torch.equal(out, eps.bfloat16())


@pytest.fixture
def case():
    return case_on_device((2, 3, 4, 5, 6), torch.float32, guidance_scale=2.0, shared_ratio=0.3)


def call(case, **changes):
    arguments = dict(x=case.x, eps=case.eps, coefficients=case.coefficients, step=case.step_tensor()) | case.kwargs()
    return fused_sampler_step(**(arguments | changes))


BAD_INPUTS = [
    (dict(x=torch.zeros(2, 3, 4, 5, 6, dtype=torch.float64)), "float32, float16 or bfloat16.*x of torch.float64"),
    (dict(eps=torch.zeros(4, 3, 4, 6, 5).transpose(3, 4)), r"eps must have unit-stride \(h, w\)"),
    (dict(out=torch.zeros(2, 3, 4, 6, 5).transpose(3, 4)), r"out must have unit-stride \(h, w\)"),
    (dict(out=torch.zeros(3, 2, 4, 5, 6).transpose(0, 1)), "out must be contiguous"),
    (dict(coefficients=torch.zeros(3, 10).T), "coefficients must be contiguous"),
    (dict(eps=torch.zeros(2, 3, 4, 5, 6)), r"eps must have shape \(4, 3, 4, 5, 6\)"),  # the shared checks run too
    (dict(noise=None), r"z_ind.*r = 0\.3.*missing"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_INPUTS, ids=[str(list(c)) for c, _ in BAD_INPUTS])
def test_bad_inputs_are_rejected_with_the_problem_named(case, changes, message, unchecked):
    changes = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) and v.device.type != "meta" else v
               for k, v in changes.items()}
    with pytest.raises(ValueError, match=message):
        call(case, **changes)


def test_latents_where_triton_cannot_run_are_rejected(case, unchecked):
    meta = {name: value.to("meta") for name, value in vars(case).items() if isinstance(value, torch.Tensor)}
    vars(case).update(meta)
    with pytest.raises(ValueError, match="x is on meta, where Triton cannot run the fused step"):
        fused(case)


def test_empty_latents_give_an_empty_result():
    case = case_on_device((1, 2, 3, 4, 4), torch.float32)
    x = torch.zeros(0, 2, 3, 4, 4, device=DEVICE)
    out = fused_sampler_step(x, x, case.coefficients, case.step_tensor(), noise=x.clone())
    assert out.shape == x.shape
