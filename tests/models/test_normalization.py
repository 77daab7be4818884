"""GroupNorm with statistics reduced per frame first: the same outputs and parameters as the GroupNorm it replaces."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from jvid.models.normalization import FrameSplitGroupNorm, split_group_norms
from tiny_components import assert_rewrite_keeps_the_unet


def group_norm(groups: int, channels: int, affine: bool, eps: float = 1e-5, seed: int = 0) -> nn.GroupNorm:
    torch.manual_seed(seed)
    norm = nn.GroupNorm(groups, channels, eps=eps, affine=affine).double()
    if affine:  # away from the identity initialisation, so a dropped scale or shift shows
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    return norm


@settings(deadline=None, max_examples=30)
@given(groups=st.integers(1, 4), per_group=st.integers(1, 3), frames=st.integers(1, 6), height=st.integers(1, 5),
       width=st.integers(1, 5), affine=st.booleans(), eps=st.sampled_from([1e-6, 1e-5, 0.1]),
       frame_major=st.booleans(), offset=st.floats(-100, 100))
def test_the_split_statistics_give_group_norm(groups, per_group, frames, height, width, affine, eps, frame_major,
                                              offset):
    norm = group_norm(groups, groups * per_group, affine, eps)
    x = torch.randn(2, frames, groups * per_group, height, width, dtype=torch.float64) * 3 + offset
    # Frame-major memory viewed as (b, c, f, h, w), as a 3-D UNet's temporal layers see it, or contiguous.
    x = x.permute(0, 2, 1, 3, 4) if frame_major else x.permute(0, 2, 1, 3, 4).contiguous()
    torch.testing.assert_close(FrameSplitGroupNorm.from_norm(norm)(x), norm(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 4, 3)])
def test_other_inputs_take_torch_group_norm(shape):
    norm = group_norm(3, 6, affine=True)
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(FrameSplitGroupNorm.from_norm(norm)(x), norm(x))


def test_half_precision_input_keeps_its_dtype():
    norm = group_norm(2, 8, affine=True).float()
    x = torch.randn(2, 8, 5, 4, 4).bfloat16()
    out = FrameSplitGroupNorm.from_norm(norm)(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x.float()), rtol=1e-2, atol=2e-2)


def test_the_split_norm_shares_the_parameters():
    norm = nn.GroupNorm(2, 4)
    split = FrameSplitGroupNorm.from_norm(norm)
    assert split.weight is norm.weight and split.bias is norm.bias
    assert (split.num_groups, split.num_channels, split.eps) == (2, 4, norm.eps)


@pytest.mark.parametrize("module", [nn.LayerNorm(4), FrameSplitGroupNorm(2, 4)])
def test_only_a_plain_group_norm_is_replaced(module, unchecked):
    with pytest.raises(TypeError, match="replaces a torch.nn.GroupNorm"):
        FrameSplitGroupNorm.from_norm(module)
    wrapper = nn.Sequential(module)
    assert split_group_norms(wrapper) == 0 and wrapper[0] is module


def test_splitting_a_3d_unet_keeps_its_function_and_parameters():
    counts = []
    split = assert_rewrite_keeps_the_unet(lambda unet: counts.append(split_group_norms(unet)))
    assert counts == [sum(isinstance(m, FrameSplitGroupNorm) for m in split.modules())] and counts[0] > 0
    assert not any(type(m) is nn.GroupNorm for m in split.modules())


def test_one_compilation_serves_later_calls(monkeypatch):
    """einops keeps a registry of tensor types, and Dynamo guards a compiled call on its size: a type first seen
    inside a compiled call (an nn.Parameter, say) fails that guard at the next call and retraces the whole network.
    The norm's affine parameters therefore never meet einops."""
    import einops._backends
    from torch._dynamo.testing import CompileCounter

    monkeypatch.delitem(einops._backends._type2backend, nn.Parameter, raising=False)  # as in a fresh process
    norm = FrameSplitGroupNorm.from_norm(group_norm(2, 4, affine=True))
    x = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64)
    counter = CompileCounter()
    compiled = torch.compile(norm, backend=counter, dynamic=False)
    first = compiled(x)
    torch.testing.assert_close(compiled(x), first)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, norm(x))
