"""Temporal convolutions of 3-D UNets computed as 2-D convolutions over (frames, pixels).

diffusers' UNet3DConditionModel follows each residual block with four (3, 1, 1) Conv3d over the frames (sec. 3.3).
A (k, 1, 1) kernel mixes frames only, so on `(b, c, f, h, w)` it is a 2-D convolution with a (k, 1) kernel on
`(b, c, f, h·w)`: the same products and sums, and h, w merge into one axis without a copy. The 2-D form matters under
torch.compile, whose channels-last layout optimisation takes 2-D convolutions only: as Conv3d, each of these keeps
cuDNN's layout conversions around it (two in, one out per call).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from jvid.models._rewrite import replace_modules


class FrameConv3d(nn.Conv3d):
    """A Conv3d whose kernel spans frames only, `(k, 1, 1)`, run as a 2-D convolution over (frames, h·w).

    Same parameters and state-dict keys as the Conv3d it replaces (`from_conv` shares them).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv3d) -> FrameConv3d:
        if not frame_only(conv):
            raise ValueError(f"FrameConv3d takes a Conv3d whose kernel spans frames only, with unit stride and "
                             f"dilation, no padding over pixels and zero padding; got {conv}")
        folded = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, device="meta")
        folded.weight, folded.bias = conv.weight, conv.bias
        return folded

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        out = F.conv2d(x.flatten(3), self.weight.squeeze(-1), self.bias, stride=(self.stride[0], 1),
                       padding=(self.padding[0], 0), dilation=(self.dilation[0], 1), groups=self.groups)
        return out.unflatten(3, (height, width))


def frame_only(conv: nn.Module) -> bool:
    """Whether `conv` is a plain Conv3d that convolves over frames only."""
    return (type(conv) is nn.Conv3d and conv.kernel_size[1:] == (1, 1) and conv.stride[1:] == (1, 1)
            and conv.dilation[1:] == (1, 1) and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and conv.padding[1:] == (0, 0))


def fold_temporal_convolutions(model: nn.Module) -> int:
    """Replaces every frame-only Conv3d in `model` by a `FrameConv3d` over the same parameters; returns how many.

    The model computes the same function (up to the convolution algorithm cuDNN picks); its state dict is unchanged.
    """
    return replace_modules(model, frame_only, FrameConv3d.from_conv)


__all__ = ["FrameConv3d", "fold_temporal_convolutions", "frame_only"]
