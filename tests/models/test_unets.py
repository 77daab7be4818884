"""Tiny Table-1 networks from the presets, alone and behind the adapters."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.attention_processor import Attention

from jvid.models import ImageDenoiser, VideoDenoiser, lidm_unet, lvdm_unet

TINY = {"width": 32, "cross_attention_dim": 16, "head_dim": 8, "norm_num_groups": 8, "sample_size": 8}
CHANNELS = (32, 64, 96, 128)


@pytest.fixture(scope="module")
def lidm():
    torch.manual_seed(0)
    return lidm_unet(**TINY)


@pytest.fixture(scope="module")
def lvdm():
    torch.manual_seed(1)
    return lvdm_unet(**TINY)


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 8, 8, generator=generator)
    cond = torch.randn(2, 5, 16, generator=generator)
    return x, torch.tensor([10, 900]), cond


def adapters(lidm, lvdm, schedule):
    return [ImageDenoiser(lidm, schedule), VideoDenoiser(lvdm, schedule)]


@torch.no_grad()
def test_tiny_unets_keep_shape_and_dtype_behind_the_adapters(lidm, lvdm, schedule, inputs):
    x, t, cond = inputs
    for denoiser in adapters(lidm, lvdm, schedule):
        eps = denoiser(x, t, cond)
        assert eps.shape == x.shape and eps.dtype == x.dtype and torch.isfinite(eps).all()
        assert eps.std() > 0.1  # a real network output, not a pass-through of zeros


@torch.no_grad()
def test_bf16_unets_return_the_callers_float32(lidm, lvdm, schedule, inputs):
    x, t, cond = inputs
    for denoiser in adapters(copy.deepcopy(lidm).to(torch.bfloat16), copy.deepcopy(lvdm).to(torch.bfloat16), schedule):
        eps = denoiser(x, t, cond)
        assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


@torch.no_grad()
def test_image_denoiser_equals_the_2d_unet_frame_by_frame(lidm, schedule, inputs):
    x, t, cond = inputs
    eps = ImageDenoiser(lidm, schedule)(x, t, cond)
    for j in range(x.shape[1]):
        frame = lidm(x[:, j], t, encoder_hidden_states=cond).sample
        torch.testing.assert_close(eps[:, j], frame, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_the_video_unet_mixes_frames_and_the_image_unet_does_not(lidm, lvdm, schedule, inputs):
    x, t, cond = inputs
    changed = x.clone()
    changed[:, 0] += 1.0
    image, video = adapters(lidm, lvdm, schedule)
    torch.testing.assert_close(image(changed, t, cond)[:, 1:], image(x, t, cond)[:, 1:])
    assert not torch.allclose(video(changed, t, cond)[:, 1:], video(x, t, cond)[:, 1:], atol=1e-3)


def attention_shapes(model):
    """(heads, channels per head, channels) of every attention layer, by top-level submodule."""
    return {(name.split(".")[0], m.heads, m.inner_dim // m.heads, m.inner_dim)
            for name, m in model.named_modules() if isinstance(m, Attention)}


@pytest.mark.parametrize("kind", ["lidm", "lvdm"])
def test_presets_follow_table_1(kind, lidm, lvdm):
    model, suffix, cls = {"lidm": (lidm, "2D", UNet2DConditionModel), "lvdm": (lvdm, "3D", UNet3DConditionModel)}[kind]
    assert type(model) is cls and not model.training
    config = model.config
    assert tuple(config.block_out_channels) == CHANNELS and config.layers_per_block == 2
    assert config.cross_attention_dim == 16 and config.in_channels == config.out_channels == 4
    assert [type(b).__name__ for b in model.down_blocks] == [f"DownBlock{suffix}"] + [f"CrossAttnDownBlock{suffix}"] * 3
    assert [type(b).__name__ for b in model.up_blocks] == [f"CrossAttnUpBlock{suffix}"] * 3 + [f"UpBlock{suffix}"]
    assert [len(b.resnets) for b in model.down_blocks] == [2] * 4
    assert [len(b.resnets) for b in model.up_blocks] == [3] * 4  # diffusers' up blocks take one more for the skip
    assert [b.resnets[-1].out_channels for b in model.down_blocks] == list(CHANNELS)
    # Heads of head_dim = 8 channels, so a level of c channels has c // 8 heads.
    levels = {(part, c // 8, 8, c) for part in ("down_blocks", "up_blocks") for c in CHANNELS[1:]}
    levels.add(("mid_block", CHANNELS[-1] // 8, 8, CHANNELS[-1]))
    if kind == "lvdm":
        levels.add(("transformer_in", 8, 8, 64))
    assert attention_shapes(model) == levels


def test_the_lvdm_has_spatial_then_temporal_kernels_and_temporal_attention(lvdm):
    """Paper sec. 3.3: (1, 3, 3) spatial kernels, then (3, 1, 1) temporal kernels; spatial, then temporal attention."""
    for block in lvdm.down_blocks:
        assert all(r.conv1.kernel_size == (3, 3) for r in block.resnets)  # 2-D per frame, i.e. (1, 3, 3)
        temporal = [m for tc in block.temp_convs for m in tc.modules() if isinstance(m, torch.nn.Conv3d)]
        assert temporal and all(m.kernel_size == (3, 1, 1) for m in temporal)
    for block in lvdm.down_blocks[1:]:
        assert len(block.attentions) == len(block.temp_attentions) == 2


@pytest.mark.parametrize("preset", [lidm_unet, lvdm_unet])
@pytest.mark.parametrize("change, message", [
    ({"width": 36}, "width 36 must be divisible by norm_num_groups 8"),
    ({"width": 40, "norm_num_groups": 4}, "width 40 must be divisible by head_dim 16"),
    ({"sample_size": 0}, "sample_size must be positive, got 0"),
])
def test_presets_name_the_broken_constraint(preset, change, message):
    arguments = {**TINY, "head_dim": 16, **change}
    with pytest.raises(ValueError, match=message):
        preset(**arguments)
