"""Group normalisation of video activations with its statistics reduced per frame first.

A 3-D UNet normalises `(b, c, f, h, w)` activations (its temporal convolution and attention layers) with GroupNorm,
whose statistics for a (sample, group) pool c/G channels of every frame and pixel. Those activations are frame-major
views, so the pool is strided in memory, and torch.compile (Inductor) reduces it as one long strided reduction per
(sample, group): few programs, each over f·(c/G)·h·w elements. `FrameSplitGroupNorm` computes the same statistics in
two stages that each reduce contiguous spans: the mean and variance of each (sample, group, frame), then their merge by
the law of total variance over the frames (equal counts):

    mean = mean_f m_f,    var = mean_f (v_f + (m_f − mean)²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from jvid.models._rewrite import replace_modules


class FrameSplitGroupNorm(nn.GroupNorm):
    """A GroupNorm that reduces 5-D `(b, c, f, h, w)` input per frame first (module docstring); other inputs take
    `F.group_norm`. Same parameters and state-dict keys as the GroupNorm it replaces (`from_norm` shares them)."""

    @classmethod
    def from_norm(cls, norm: nn.GroupNorm) -> FrameSplitGroupNorm:
        if type(norm) is not nn.GroupNorm:
            raise TypeError(f"FrameSplitGroupNorm replaces a torch.nn.GroupNorm, got {type(norm).__name__}")
        split = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine, device="meta")
        split.weight, split.bias = norm.weight, norm.bias
        return split

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        grouped = rearrange(x, "b (g c) f h w -> b g f (c h w)", g=self.num_groups)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        var_f, mean_f = torch.var_mean(grouped.to(compute), dim=3, correction=0, keepdim=True)  # (b, g, f, 1)
        mean = mean_f.mean(dim=2, keepdim=True)
        var = (var_f + (mean_f - mean).square()).mean(dim=2, keepdim=True)  # (b, g, 1, 1)
        scale = rearrange(torch.rsqrt(var + self.eps), "b g 1 1 -> b g 1 1 1 1")
        shift = rearrange(mean, "b g 1 1 -> b g 1 1 1 1")
        normed = (rearrange(x, "b (g c) f h w -> b g c f h w", g=self.num_groups).to(compute) - shift) * scale
        out = rearrange(normed, "b g c f h w -> b (g c) f h w")
        if self.affine:
            # Indexed, not rearranged: einops registers each tensor type it meets, and a Parameter first met inside
            # a compiled call changes that registry, which fails Dynamo's guard on it and retraces the network.
            out = out * self.weight[:, None, None, None] + self.bias[:, None, None, None]
        return out.to(x.dtype)


def split_group_norms(model: nn.Module) -> int:
    """Replaces every torch.nn.GroupNorm in `model` by a `FrameSplitGroupNorm` over the same parameters; returns how
    many. The model computes the same function up to summation order; its state dict is unchanged."""
    return replace_modules(model, lambda module: type(module) is nn.GroupNorm, FrameSplitGroupNorm.from_norm)


__all__ = ["FrameSplitGroupNorm", "split_group_norms"]
