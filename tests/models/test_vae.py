"""The frame-by-frame VAE and the video decoder, on tiny random diffusers VAEs."""

import re

import pytest
import torch
from diffusers import AutoencoderKL

import jvid.models.vae as vae_module
from jvid.models import FrameVAE, VideoDecoder

TINY_VAE = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "latent_channels": 4, "norm_num_groups": 4,
            "sample_size": 16}


def tiny_vae(seed=0, **overrides):
    torch.manual_seed(seed)
    return AutoencoderKL(**{**TINY_VAE, **overrides}).eval()


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


@pytest.fixture(scope="module")
def sd_like_vae():
    """A tiny VAE whose decoder has Stable Diffusion's layout (32-group norms, 2 layers per block)."""
    return tiny_vae(1, block_out_channels=(32, 32), norm_num_groups=32, layers_per_block=2, scaling_factor=0.5)


@pytest.fixture
def video():
    return torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture
def latents():
    return torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def test_encode_and_decode_shapes(vae, video):
    frame_vae = FrameVAE(vae)
    latents = frame_vae.encode(video)
    assert latents.shape == (2, 3, 4, 8, 8) and latents.dtype == video.dtype
    frames = frame_vae.decode(latents)
    assert frames.shape == video.shape and torch.isfinite(frames).all()


def test_scaling_factor_and_layout_match_the_vae_called_on_one_frame(vae, video, latents):
    frame_vae = FrameVAE(vae)
    assert frame_vae.scaling_factor == vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        mean = vae.encode(video[1, 2:3]).latent_dist.mean
        frame = vae.decode(latents[1, 2:3] / 0.18215).sample
    torch.testing.assert_close(frame_vae.encode(video)[1, 2], mean[0] * 0.18215)
    torch.testing.assert_close(frame_vae.decode(latents)[1, 2], frame[0])


def test_shift_factor_is_removed_before_scaling(video):
    shifted = FrameVAE(tiny_vae(shift_factor=0.25, scaling_factor=2.0))
    plain = FrameVAE(tiny_vae(scaling_factor=2.0))
    torch.testing.assert_close(shifted.encode(video), plain.encode(video) - 0.5)
    torch.testing.assert_close(shifted.decode(plain.encode(video) - 0.5), plain.decode(plain.encode(video)))


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_chunking_does_not_change_results(vae, video, latents, chunk_size):
    chunked, whole = FrameVAE(vae, chunk_size=chunk_size), FrameVAE(vae, chunk_size=6)
    calls = []
    hook = vae.decoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    decoded = chunked.decode(latents)
    hook.remove()
    assert max(calls) <= chunk_size and sum(calls) == 6
    torch.testing.assert_close(decoded, whole.decode(latents), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.encode(video), whole.encode(video), atol=1e-5, rtol=1e-5)
    draw = torch.Generator().manual_seed(5)
    torch.testing.assert_close(chunked.encode(video, torch.Generator().manual_seed(5), sample=True),
                               whole.encode(video, draw, sample=True), atol=1e-5, rtol=1e-5)


def test_sampling_is_reproducible_and_differs_from_the_mean(vae, video):
    frame_vae = FrameVAE(vae, chunk_size=4)
    draw = [frame_vae.encode(video, torch.Generator().manual_seed(seed), sample=True) for seed in (3, 3, 4)]
    torch.testing.assert_close(draw[0], draw[1], rtol=0, atol=0)
    assert not torch.allclose(draw[0], draw[2])
    assert not torch.allclose(draw[0], frame_vae.encode(video))


def test_frame_decoding_does_not_mix_frames(vae, latents):
    frame_vae = FrameVAE(vae)
    changed = latents.clone()
    changed[:, 0] += 1.0
    before, after = frame_vae.decode(latents), frame_vae.decode(changed)
    assert not torch.allclose(before[:, 0], after[:, 0])
    torch.testing.assert_close(before[:, 1:], after[:, 1:], rtol=0, atol=0)


def test_a_bfloat16_vae_returns_the_callers_dtype(video):
    frame_vae = FrameVAE(tiny_vae().to(torch.bfloat16))
    latents = frame_vae.encode(video)
    assert latents.dtype == torch.float32 and frame_vae.decode(latents).dtype == torch.float32


def test_frame_vae_refuses_bad_inputs(vae, video, latents, unchecked):
    with pytest.raises(ValueError, match="chunk_size"):
        FrameVAE(vae, chunk_size=0)
    with pytest.raises(TypeError, match="AutoencoderKL"):
        FrameVAE(torch.nn.Identity())
    frame_vae = FrameVAE(vae)
    with pytest.raises(ValueError, match="shape"):
        frame_vae.encode(video[0])
    with pytest.raises(ValueError, match="colour channels"):
        frame_vae.encode(video[:, :, :2])
    with pytest.raises(ValueError, match="latent channels"):
        frame_vae.decode(latents[:, :, :3])
    with pytest.raises(ValueError, match="Generator"):
        frame_vae.encode(video, sample=True)


@pytest.fixture(scope="module")
def video_decoder():
    torch.manual_seed(2)
    return VideoDecoder(block_out_channels=(32, 32)).eval()


def test_video_decoder_shape(video_decoder, latents):
    with torch.no_grad():
        frames = video_decoder(latents)
    assert frames.shape == (2, 3, 3, 16, 16) and torch.isfinite(frames).all()


def test_video_decoder_mixes_frames(video_decoder, latents):
    changed = latents.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        before, after = video_decoder(latents), video_decoder(changed)
    # Frame 2 is two frames away: several stacked (3, 1, 1) convolutions reach it.
    for frame in (1, 2):
        assert (before[:, frame] - after[:, frame]).abs().max() > 1e-4
    torch.testing.assert_close(before[1:], video_decoder(latents[1:]).detach())  # videos do not mix, frames do


def test_from_frame_vae_first_decodes_like_the_frame_vae(sd_like_vae, latents):
    video_decoder = VideoDecoder.from_frame_vae(sd_like_vae)
    assert video_decoder.config.scaling_factor == 0.5
    assert tuple(video_decoder.config.block_out_channels) == (32, 32)
    with torch.no_grad():
        decoded = video_decoder(latents)
    torch.testing.assert_close(decoded, FrameVAE(sd_like_vae).decode(latents), atol=1e-5, rtol=1e-5)
    spatial = video_decoder.decoder.up_blocks[1].resnets[2].spatial_res_block.conv1.weight
    torch.testing.assert_close(spatial, sd_like_vae.decoder.up_blocks[1].resnets[2].conv1.weight, rtol=0, atol=0)
    # The temporal layers are there, only silent: waking one up mixes frames.
    with torch.no_grad():
        torch.nn.init.normal_(video_decoder.decoder.time_conv_out.weight, std=0.3)
        changed = latents.clone()
        changed[:, 0] += 1.0
        assert not torch.allclose(video_decoder(latents)[:, 1], video_decoder(changed)[:, 1])


def test_from_frame_vae_refuses_decoders_of_another_layout(vae):
    with pytest.raises(ValueError, match="norm_num_groups"):
        VideoDecoder.from_frame_vae(tiny_vae(layers_per_block=2))
    with pytest.raises(ValueError, match="layers_per_block"):
        VideoDecoder.from_frame_vae(FrameVAE(vae))


def test_video_decoder_round_trips_through_save_pretrained(video_decoder, latents, tmp_path):
    video_decoder.save_pretrained(tmp_path)
    loaded = VideoDecoder.from_pretrained(tmp_path)
    assert tuple(loaded.config.block_out_channels) == (32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents), video_decoder(latents))


def test_documented_parameter_count():
    with torch.device("meta"):
        video_decoder = VideoDecoder()
    total = sum(p.numel() for p in video_decoder.parameters())
    temporal = sum(p.numel() for name, p in video_decoder.named_parameters() if vae_module._is_temporal(name))
    documented = [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+", vae_module.__doc__)]
    assert documented == [total, total - temporal, temporal]


def test_video_decoder_refuses_bad_inputs(video_decoder, latents, unchecked):
    with pytest.raises(ValueError, match="multiples of 32"):
        VideoDecoder(block_out_channels=(8, 16))
    with pytest.raises(ValueError, match="latent channels"):
        video_decoder(latents[:, :, :3])
    with pytest.raises(ValueError, match="shape"):
        video_decoder(latents[0])
