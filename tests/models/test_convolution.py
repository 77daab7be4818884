"""Frame-only Conv3d as 2-D convolutions: the same outputs and parameters as the Conv3d they replace."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from jvid.models.convolution import FrameConv3d, fold_temporal_convolutions, frame_only
from tiny_components import assert_rewrite_keeps_the_unet


@settings(deadline=None, max_examples=25)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.integers(0, 2),
       groups=st.sampled_from([1, 2]), bias=st.booleans(), frames=st.integers(5, 9), frame_major=st.booleans())
def test_a_frame_conv_computes_its_conv3d(kernel, stride, dilation, padding, groups, bias, frames, frame_major):
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, (kernel, 1, 1), stride=(stride, 1, 1), padding=(padding, 0, 0), dilation=(dilation, 1, 1),
                     groups=groups, bias=bias).double()
    x = torch.randn(2, frames, 4, 3, 5, dtype=torch.float64)
    # Frame-major memory viewed as (b, c, f, h, w), as the 3-D UNet's temporal layers see it, or contiguous.
    x = x.permute(0, 2, 1, 3, 4) if frame_major else x.permute(0, 2, 1, 3, 4).contiguous()
    torch.testing.assert_close(FrameConv3d.from_conv(conv)(x), conv(x), rtol=1e-12, atol=1e-12)


def test_folding_a_3d_unet_keeps_its_function_and_parameters():
    counts = []
    folded = assert_rewrite_keeps_the_unet(lambda unet: counts.append(fold_temporal_convolutions(unet)))
    temporal = [m for m in folded.modules() if type(m).__name__ == "TemporalConvLayer"]
    assert counts == [4 * len(temporal)] and counts[0] > 0
    assert not any(frame_only(m) for m in folded.modules())


def test_folded_convolutions_share_the_parameters():
    conv = nn.Conv3d(3, 5, (3, 1, 1), padding=(1, 0, 0))
    folded = FrameConv3d.from_conv(conv)
    assert folded.weight is conv.weight and folded.bias is conv.bias


@pytest.mark.parametrize("conv", [nn.Conv3d(3, 5, 3, padding=1), nn.Conv3d(3, 5, (3, 1, 1), padding=(1, 1, 0)),
                                  nn.Conv3d(3, 5, (3, 1, 1), stride=(1, 2, 1)),
                                  nn.Conv3d(3, 5, (3, 1, 1), padding=(1, 0, 0), padding_mode="reflect")])
def test_a_conv_over_pixels_is_not_folded(conv):
    assert not frame_only(conv)
    with pytest.raises(ValueError, match="kernel spans frames only"):
        FrameConv3d.from_conv(conv)
    wrapper = nn.Sequential(conv)
    assert fold_temporal_convolutions(wrapper) == 0 and wrapper[0] is conv
