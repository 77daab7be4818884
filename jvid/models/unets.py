"""The paper's Table-1 networks (sec. 4.1) as diffusers UNets, at any base width.

The LVDM is diffusers' UNet3DConditionModel with the LIDM's hyper-parameters, which is the construction of
sec. 3.3: each residual block runs its 3x3 convolutions per frame, i.e. spatial (1, 3, 3) kernels, then a stack of
temporal (3, 1, 1) convolutions (the last one zero-initialised, so it starts as the identity); each spatial
self- and cross-attention layer is followed by a temporal self-attention layer over the frames at every position;
one more temporal attention (`transformer_in`, 8 heads) follows the input convolution.

Attention heads have `head_dim` channels each, so a level with c channels has c // head_dim heads. Table 1 lists
both 64 channels per head and 8 heads, which agree only at 512 channels; we keep 64-channel heads because that
gives the 546 M (LIDM) and 927 M (LVDM) parameters of the Table-1 networks. Measured at width 256 (diffusers 0.42.1): LIDM 546,200,068 and
LVDM 927,415,812 parameters. Eight heads at every level would give the same LIDM (a 2-D attention's weights do
not depend on the head count) but 922,017,412 for the LVDM, whose `transformer_in` width is 8 · head_dim.
"""

from __future__ import annotations

from typing import Any

from diffusers import UNet2DConditionModel, UNet3DConditionModel

CHANNEL_MULTIPLIERS = (1, 2, 3, 4)
LAYERS_PER_BLOCK = 2
CROSS_ATTENTION_LEVELS = (False, True, True, True)


def lidm_unet(
    *,
    width: int = 256,
    in_channels: int = 4,
    cross_attention_dim: int = 768,
    head_dim: int = 64,
    norm_num_groups: int = 32,
    sample_size: int = 32,
) -> UNet2DConditionModel:
    """The LIDM of Table 1 with `width` base channels, freshly initialised and in eval mode like `from_pretrained`."""
    config = _table1_config(width, in_channels, cross_attention_dim, head_dim, norm_num_groups, sample_size)
    down, up = _block_types("DownBlock2D", "CrossAttnDownBlock2D", "UpBlock2D", "CrossAttnUpBlock2D")
    heads = tuple(channels // head_dim for channels in config["block_out_channels"])
    # UNet2DConditionModel reads its legacy `attention_head_dim` as the number of heads at each level.
    return UNet2DConditionModel(down_block_types=down, up_block_types=up, attention_head_dim=heads, **config).eval()


def lvdm_unet(
    *,
    width: int = 256,
    in_channels: int = 4,
    cross_attention_dim: int = 768,
    head_dim: int = 64,
    norm_num_groups: int = 32,
    sample_size: int = 32,
) -> UNet3DConditionModel:
    """The LVDM of Table 1 with `width` base channels, freshly initialised and in eval mode like `from_pretrained`."""
    config = _table1_config(width, in_channels, cross_attention_dim, head_dim, norm_num_groups, sample_size)
    down, up = _block_types("DownBlock3D", "CrossAttnDownBlock3D", "UpBlock3D", "CrossAttnUpBlock3D")
    # UNet3DConditionModel's blocks read `attention_head_dim` as the channels per head, c // head_dim heads at a
    # level; its `transformer_in` gets 8 heads of head_dim channels.
    return UNet3DConditionModel(down_block_types=down, up_block_types=up, attention_head_dim=head_dim, **config).eval()


def _block_types(plain_down: str, cross_down: str, plain_up: str, cross_up: str) -> tuple[tuple[str, ...], ...]:
    """Down blocks per Table 1's cross-attention row, and the mirrored up blocks."""
    down = tuple(cross_down if cross else plain_down for cross in CROSS_ATTENTION_LEVELS)
    up = tuple(cross_up if cross else plain_up for cross in reversed(CROSS_ATTENTION_LEVELS))
    return down, up


def _table1_config(
    width: int, in_channels: int, cross_attention_dim: int, head_dim: int, norm_num_groups: int, sample_size: int
) -> dict[str, Any]:
    """The diffusers arguments both networks share, after checking them."""
    arguments = {"width": width, "in_channels": in_channels, "cross_attention_dim": cross_attention_dim,
                 "head_dim": head_dim, "norm_num_groups": norm_num_groups, "sample_size": sample_size}
    for name, value in arguments.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    # Every level's channel count is a multiple of width, so these two checks cover all levels.
    if width % norm_num_groups:
        raise ValueError(f"width {width} must be divisible by norm_num_groups {norm_num_groups} for group norm")
    if width % head_dim:
        raise ValueError(f"width {width} must be divisible by head_dim {head_dim} so that every level has whole "
                         f"attention heads")
    return {
        "sample_size": sample_size,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "block_out_channels": tuple(width * m for m in CHANNEL_MULTIPLIERS),
        "layers_per_block": LAYERS_PER_BLOCK,
        "norm_num_groups": norm_num_groups,
        "cross_attention_dim": cross_attention_dim,
    }


__all__ = ["lidm_unet", "lvdm_unet"]
