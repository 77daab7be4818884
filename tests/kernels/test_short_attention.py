"""The short-sequence attention kernel against float64 softmax attention, in Triton's interpreter on the CPU.

TRITON_INTERPRET=1 must be set by the test command, as for tests/kernels/test_temporal_smoothing.py.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from jvid.kernels import is_interpreted
from jvid.kernels.short_attention import MAX_HEAD_DIM, MAX_LENGTH, AttentionLaunch, short_attention

DEVICE = "cpu" if is_interpreted() else "cuda"
pytestmark = pytest.mark.usefixtures("kernel_can_run")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def attention64(query, key, value, scale=None):
    """softmax(q kᵀ · scale) v in float64, written out."""
    q, k, v = (t.double() for t in (query, key, value))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def bound(dtype, query, key, value, scale=None):
    """Per (sequence, head): the kernel rounds the softmax weights and the output to `dtype` (unit roundoff u each),
    which moves o by at most 2u·max|v|. Its float32 scores carry relative errors of a few 2^-24 (products, the scale,
    exp2), i.e. absolute errors of that times |scores| in each weight's exponent: 2^-20·(1 + max|scores|)·max|v|."""
    u = torch.finfo(dtype).eps / 2
    q, k = query.double(), key.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2) * scale).abs().amax(dim=(-1, -2), keepdim=True)
    return (2 * u + 2.0**-20 * (1 + scores)) * value.double().abs().amax(dim=(-1, -2), keepdim=True)


def projections(batch, heads, length, head_dim, dtype, seed, layout):
    """q, k, v of one shape; "diffusers": (b, l, h·d) projections viewed as (b, h, l, d), "contiguous" otherwise."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, length, 3, heads, head_dim, generator=generator) * 2
    qkv = qkv.to(DEVICE, dtype)
    if layout == "diffusers":
        return tuple(qkv[:, :, i].transpose(1, 2) for i in range(3))
    return tuple(qkv[:, :, i].transpose(1, 2).contiguous() for i in range(3))


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 6), length=st.integers(1, MAX_LENGTH), head_dim=st.integers(1, 80),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1), layout=st.sampled_from(["diffusers", "contiguous"]),
       launch=st.builds(AttentionLaunch, st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 4])))
def test_equals_float64_softmax_attention(batch, heads, length, head_dim, dtype, seed, layout, launch):
    q, k, v = projections(batch, heads, length, head_dim, dtype, seed, layout)
    out = short_attention(q, k, v, launch=launch)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    # heads merge back into channels without a copy
    assert out.transpose(1, 2).is_contiguous()
    error = (out.double() - attention64(q, k, v)).abs()
    assert (error <= bound(dtype, q, k, v)).all(), float(error.max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_agrees_with_scaled_dot_product_attention_and_its_scale(dtype):
    """torch's attention in float64 as a peer reference, for its default scale and a given one."""
    q, k, v = projections(2, 3, 16, 64, dtype, 1, "diffusers")
    for scale in (None, 0.3):
        expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)
        got = short_attention(q, k, v, scale=scale)
        assert ((got.double() - expected).abs() <= bound(dtype, q, k, v, scale)).all()


def test_padded_keys_get_no_weight():
    """A sequence shorter than the tile: keys past its end would change every row if they got any weight."""
    q, k, v = projections(1, 2, 5, 16, torch.float32, 2, "contiguous")
    torch.testing.assert_close(short_attention(q, k, v).double(), attention64(q, k, v), rtol=1e-6, atol=1e-6)


def test_empty_batch_gives_an_empty_result():
    q = torch.empty(0, 2, 4, 8, device=DEVICE)
    assert short_attention(q, q, q).shape == (0, 2, 4, 8)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q: (q, q[:, :, :-1], q), "one shape"),
        (lambda q: (q, q.double(), q), "share one of"),
        (lambda q: (q[..., ::2], q[..., ::2], q[..., ::2]), "unit-stride channels"),
        (lambda q: (q[0], q[0], q[0]), "4-D"),
        (lambda q: (q.int(), q.int(), q.int()), "share one of"),
    ],
)
def test_bad_inputs_are_named(change, message, unchecked):
    q = torch.randn(2, 2, 4, 8, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        short_attention(*change(q))


def test_long_sequences_are_refused_with_the_alternative(unchecked):
    long = torch.randn(1, 1, MAX_LENGTH + 1, 8, device=DEVICE)
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        short_attention(long, long, long)
    wide = torch.randn(1, 1, 4, MAX_HEAD_DIM + 1, device=DEVICE)
    with pytest.raises(ValueError, match=f"at most {MAX_HEAD_DIM} channels"):
        short_attention(wide, wide, wide)


@pytest.mark.parametrize("heads_per_program, num_warps", [(3, 4), (0, 4), (2, 3)])
def test_bad_launches_are_named(heads_per_program, num_warps):
    with pytest.raises(ValueError, match="heads_per_program|num_warps"):
        AttentionLaunch(heads_per_program, num_warps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile of a Triton launch needs CUDA")
def test_torch_compile_keeps_the_kernel_as_one_call(unchecked):
    """Compiled as users run it: Dynamo would trace the test run's annotation checks too."""
    q, k, v = projections(3, 4, 16, 64, torch.bfloat16, 4, "diffusers")

    def layer(q, k, v):
        return short_attention(q * 2, k, v).transpose(1, 2).flatten(2)

    compiled = torch.compile(layer, dynamic=False)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), rtol=0, atol=0)
