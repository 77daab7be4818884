"""The reference sampler step: the float64 formulas within float32 rounding, the eager chain's step bit for bit in
float32, and every input checked with an error that names it (the checks the fused kernel shares)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sampler_step_cases import (
    DTYPES,
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

from jvid.samplers.step import sampler_step_reference

steps = st.fixed_dictionaries(
    dict(guidance_scale=guidance_scales, shared_ratio=ratios, noise=st.booleans(), solver=solvers, index=step_indices,
         seed=seeds)
)


def reference(case, **overrides):
    kwargs = case.kwargs() | overrides
    return sampler_step_reference(case.x, case.eps, case.coefficients, case.step_tensor(), **kwargs)


@settings(max_examples=40)
@given(shape=shapes, step=steps)
def test_float32_step_is_the_eager_step_bit_for_bit(shape, step):
    case = make_case(shape, torch.float32, **step)
    assert torch.equal(reference(case), eager_step(case))


@settings(max_examples=40)
@given(shape=shapes, dtype=st.sampled_from([*DTYPES, torch.float64]), step=steps)
def test_step_follows_the_formulas_and_the_eager_step_within_rounding(shape, dtype, step):
    case = make_case(shape, dtype, **step)
    out = reference(case)
    assert out.shape == case.x.shape and out.dtype == dtype
    terms = formulas64(case)
    assert_within(out, terms.exact, fused_bound(terms, dtype), "reference against the float64 formulas")
    assert_within(out, eager_step(case), fused_bound(terms, dtype) + eager_bound(terms, dtype),
                  "reference against the eager step")


def test_out_receives_the_result_and_may_be_x():
    case = make_case((2, 3, 4, 5, 5), torch.bfloat16, guidance_scale=2.0, shared_ratio=0.3)
    expected = reference(case)
    x = case.x.clone()
    out = sampler_step_reference(x, case.eps, case.coefficients, case.step_tensor(), out=x, **case.kwargs())
    assert out is x and torch.equal(x, expected)


def test_nonfinite_flags_only_the_step_that_made_nan_or_inf():
    case = make_case((1, 2, 3, 4, 4), torch.float32, index=4)
    flags = torch.zeros(10, dtype=torch.int32)
    reference(case, nonfinite=flags)
    assert not flags.any()
    case.x[0, 1, 2, 3, 3] = float("inf")
    reference(case, nonfinite=flags)
    assert flags.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


@pytest.fixture
def case():
    return make_case((2, 3, 4, 5, 6), torch.float32, guidance_scale=2.0, shared_ratio=0.3)


def call(case, **changes):
    arguments = dict(x=case.x, eps=case.eps, coefficients=case.coefficients, step=case.step_tensor()) | case.kwargs()
    arguments |= changes
    return sampler_step_reference(**arguments)


BAD_INPUTS = [
    (dict(x=torch.zeros(2, 3, 4, 5)), ValueError, r"x must be 5-D.*\(2, 3, 4, 5\)"),
    (dict(x=torch.zeros(2, 3, 4, 5, 6, dtype=torch.int32)), ValueError, "x must be a floating.*int32"),
    (dict(x=[[0.0]]), TypeError, "x must be a torch.Tensor, got list"),
    (dict(eps=torch.zeros(2, 3, 4, 5, 6)), ValueError, r"eps must have shape \(4, 3, 4, 5, 6\).*\[ε_∅; ε_y\].*"
                                                      r"got \(2, 3, 4, 5, 6\)"),
    (dict(guidance_scale=None), ValueError, r"eps must have shape \(2, 3, 4, 5, 6\).*guidance_scale is None"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale must be finite, got nan"),
    (dict(guidance_scale="2"), TypeError, "guidance_scale must be None or a real number, got str"),
    (dict(coefficients=torch.zeros(10, 3, dtype=torch.float64)), ValueError, "coefficients must be a float32.*float64"),
    (dict(coefficients=torch.zeros(10, 2)), ValueError, r"coefficients.*\(steps, 3\).*\(10, 2\)"),
    (dict(step=torch.tensor(1.0)), ValueError, "step must be an int32 or int64 tensor.*torch.float32"),
    (dict(step=torch.tensor([1, 2])), ValueError, r"step must .* one index.*\(2,\)"),
    (dict(step=3), TypeError, "step must be a torch.Tensor, got int"),
    (dict(noise=None), ValueError, r"z_ind.*r = 0\.3.*missing"),
    (dict(shared_noise=None), ValueError, r"z_shared.*r = 0\.3.*missing"),
    (dict(shared_ratio=0.0), ValueError, r"z_shared.*r = 0\.0.*given"),
    (dict(shared_ratio=1.5), ValueError, "shared_ratio r must be a real number in \\[0, 1\\], got 1.5"),
    (dict(shared_noise=torch.zeros(2, 3, 4, 5, 6)), ValueError, r"shared_noise must have shape \(2, 1, 4, 5, 6\)"),
    (dict(noise=torch.zeros(2, 3, 4, 5, 7)), ValueError, r"noise must have shape \(2, 3, 4, 5, 6\)"),
    (dict(out=torch.zeros(2, 3, 4, 5, 6, dtype=torch.float16)), ValueError, "out must have x's dtype torch.float32"),
    (dict(out=torch.zeros(1, 3, 4, 5, 6)), ValueError, r"out must have shape \(2, 3, 4, 5, 6\)"),
    (dict(nonfinite=torch.zeros(10, dtype=torch.int64)), ValueError, r"nonfinite must be an int32 tensor of shape "
                                                                     r"\(10,\).*torch.int64"),
    (dict(nonfinite=torch.zeros(9, dtype=torch.int32)), ValueError, r"nonfinite .* of shape \(10,\).*\(9,\)"),
    (dict(step=torch.tensor(1, device="meta")), ValueError, "step is on meta but x is on cpu"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD_INPUTS, ids=[str(list(c)) for c, _, _ in BAD_INPUTS])
def test_bad_inputs_are_rejected_with_the_problem_named(case, changes, error, message, unchecked):
    with pytest.raises(error, match=message):
        call(case, **changes)
