"""Pixels <-> latents: the image VAE applied frame by frame (paper sec. 3.2), and the video decoder (sec. 3.3/4.1).

`VideoDecoder` decodes a whole latent video at once. The paper adopts He et al.'s video autoencoder [15] and trains
only its decoder, on the latents of the frozen image encoder; we build that decoder from diffusers' `TemporalDecoder`
(Stable Video Diffusion's VAE decoder, an image decoder with temporal layers) behind a 1x1 `post_quant_conv`:
- spatial, per frame: `conv_in`, the mid block's ResNets and its single-head self-attention, each up block's
  ResNets and 2x nearest-neighbour upsampling convolutions, `conv_norm_out` and `conv_out`, which are exactly
  the modules of diffusers' 2-D VAE `Decoder`;
- temporal, across frames: after every spatial ResNet a temporal ResNet of (3, 1, 1) convolutions, blended with
  the spatial output by a learned factor (σ(0) = 1/2 at initialisation), and a final (3, 1, 1) `time_conv_out`.
At the default size (block_out_channels (128, 256, 512, 512), 4 latent channels) it has 63,579,203 parameters
(measured with diffusers 0.42.1): 49,490,199 spatial, exactly Stable Diffusion's VAE decoder and post_quant_conv,
and 14,089,004 temporal. Decoding holds every frame at once, since the temporal layers need them all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import TemporalDecoder
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from jvid._checks import int_at_least
from jvid.shapes import Latents

GROUP_NORM_GROUPS = 32  # TemporalDecoder's group norms have a fixed 32 groups
LAYERS_PER_BLOCK = 2  # Stable Diffusion's VAE; TemporalDecoder's mid block has one attention between two ResNets
_RESNET = re.compile(r"(resnets\.\d+)\.")


class FrameVAE:
    """A diffusers `AutoencoderKL` applied to each frame on its own, at most `chunk_size` frames per call.

    Latents are scaled as the diffusion models see them: (z - shift_factor) * scaling_factor from the VAE's config.
    """

    def __init__(self, vae: AutoencoderKL, chunk_size: int = 16) -> None:
        if not isinstance(vae, AutoencoderKL):
            raise TypeError(f"vae must be a diffusers AutoencoderKL, got {type(vae).__name__}")
        int_at_least("chunk_size", chunk_size, 1)
        self.vae, self.chunk_size = vae, chunk_size

    @property
    def scaling_factor(self) -> float:
        """The VAE config's scaling factor (0.18215 for Stable Diffusion 1.5)."""
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """The VAE config's shift factor, 0 when it has none."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @torch.no_grad()
    def encode(
        self, video: Float[Tensor, "b f 3 H W"], generator: torch.Generator | None = None, sample: bool = False
    ) -> Latents:
        """Scaled latents of a video in [-1, 1]: each frame's posterior mean, or with `sample` a draw from it.

        The draw takes one standard normal of the whole latent video from `generator`, so it does not depend on
        `chunk_size`.
        """
        _check_video(video, self.vae.config.in_channels, "video", "colour channels")
        if sample and generator is None:
            raise ValueError("sample=True needs a torch.Generator, so that the draw is reproducible")
        batch = video.shape[0]
        frames = rearrange(video, "b f c h w -> (b f) c h w")
        posteriors = [self.vae.encode(self._to_vae(chunk)).latent_dist for chunk in frames.split(self.chunk_size)]
        z = torch.cat([posterior.mean for posterior in posteriors])
        if sample:
            std = torch.cat([posterior.std for posterior in posteriors])
            noise = torch.randn(z.shape, generator=generator, device=generator.device, dtype=torch.float32)
            z = z + std * noise.to(device=z.device, dtype=z.dtype)
        latents = (z - self.shift_factor) * self.scaling_factor
        return rearrange(latents, "(b f) c h w -> b f c h w", b=batch).to(device=video.device, dtype=video.dtype)

    @torch.no_grad()
    def decode(self, latents: Latents) -> Float[Tensor, "b f 3 H W"]:
        """Frames in about [-1, 1] from scaled latents, each frame decoded on its own."""
        _check_video(latents, self.vae.config.latent_channels, "latents", "latent channels")
        batch = latents.shape[0]
        z = rearrange(latents, "b f c h w -> (b f) c h w") / self.scaling_factor + self.shift_factor
        frames = torch.cat([self.vae.decode(self._to_vae(chunk)).sample for chunk in z.split(self.chunk_size)])
        return rearrange(frames, "(b f) c h w -> b f c h w", b=batch).to(device=latents.device, dtype=latents.dtype)

    def _to_vae(self, x: Tensor) -> Tensor:
        return x.to(device=self.vae.device, dtype=self.vae.dtype)


class VideoDecoder(ModelMixin, ConfigMixin):
    """The video decoder: scaled latents of a whole video -> frames, mixing frames at every level (module docstring).

    Its config round-trips through diffusers' `save_pretrained`/`from_pretrained`.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
    ) -> None:
        super().__init__()
        int_at_least("latent_channels", latent_channels, 1)
        if not block_out_channels or any(c < 1 or c % GROUP_NORM_GROUPS for c in block_out_channels):
            raise ValueError(f"block_out_channels must be positive multiples of {GROUP_NORM_GROUPS} (the group norm "
                             f"size of diffusers' TemporalDecoder), got {tuple(block_out_channels)}")
        if scaling_factor <= 0:
            raise ValueError(f"scaling_factor must be positive, got {scaling_factor}")
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, kernel_size=1)
        self.decoder = TemporalDecoder(latent_channels, 3, tuple(block_out_channels), LAYERS_PER_BLOCK)

    @classmethod
    def from_frame_vae(cls, vae: AutoencoderKL | FrameVAE) -> VideoDecoder:
        """A video decoder whose spatial layers are copies of the image VAE's decoder and whose temporal layers start
        as the identity, so that it first decodes exactly as `FrameVAE.decode` does; training then adds the mixing.

        Raises ValueError when the VAE's decoder is not the Stable-Diffusion-like one that `TemporalDecoder` extends.
        """
        vae = vae.vae if isinstance(vae, FrameVAE) else vae
        if not isinstance(vae, AutoencoderKL):
            raise TypeError(f"vae must be a diffusers AutoencoderKL or a FrameVAE, got {type(vae).__name__}")
        config = vae.config
        required = {"out_channels": 3, "layers_per_block": LAYERS_PER_BLOCK, "norm_num_groups": GROUP_NORM_GROUPS,
                    "act_fn": "silu", "mid_block_add_attention": True}
        for name, value in required.items():
            if getattr(config, name, value) != value:
                raise ValueError(f"the VAE's {name} is {getattr(config, name)!r}; the video decoder copies only "
                                 f"decoders with {name}={value!r}")
        if any(kind != "UpDecoderBlock2D" for kind in config.up_block_types):
            raise ValueError(f"the VAE's up_block_types {tuple(config.up_block_types)} are not all UpDecoderBlock2D")
        video_decoder = cls(config.latent_channels, tuple(config.block_out_channels), config.scaling_factor,
                            getattr(config, "shift_factor", None))
        video_decoder.to(device=vae.device, dtype=vae.dtype)
        video_decoder._copy_spatial_weights(vae)
        video_decoder._make_temporal_identity()
        return video_decoder

    def forward(self, latents: Latents) -> Float[Tensor, "b f 3 H W"]:
        """Frames in about [-1, 1] from scaled latents, all frames of a video decoded together."""
        _check_video(latents, self.config.latent_channels, "latents", "latent channels")
        batch, frames = latents.shape[:2]
        z = rearrange(latents, "b f c h w -> (b f) c h w") / self.config.scaling_factor
        z = (z + (self.config.shift_factor or 0.0)).to(device=self.device, dtype=self.dtype)
        # All zeros: every frame belongs to a video, so the temporal layers mix all of them.
        image_only = torch.zeros(batch, frames, device=z.device, dtype=z.dtype)
        out = self.decoder(self.post_quant_conv(z), image_only_indicator=image_only, num_frames=frames)
        return rearrange(out, "(b f) c h w -> b f c h w", b=batch).to(device=latents.device, dtype=latents.dtype)

    def _copy_spatial_weights(self, vae: AutoencoderKL) -> None:
        """Loads the 2-D decoder's weights into the spatial modules, which differ only in the ResNets' names."""
        # The image decoder's 'resnets.<i>' are TemporalDecoder's 'resnets.<i>.spatial_res_block'.
        weights = {"decoder." + _RESNET.sub(r"\1.spatial_res_block.", key): value
                   for key, value in vae.decoder.state_dict().items()}
        if getattr(vae.config, "use_post_quant_conv", True):
            weights.update({f"post_quant_conv.{key}": value for key, value in vae.post_quant_conv.state_dict().items()})
        else:  # the image VAE decodes its latents directly: a 1x1 identity convolution does the same
            weights["post_quant_conv.weight"] = torch.eye(self.config.latent_channels)[:, :, None, None]
            weights["post_quant_conv.bias"] = torch.zeros(self.config.latent_channels)
        mine = self.state_dict()
        unexpected = sorted(set(weights) - set(mine))
        if unexpected:
            raise ValueError(f"the VAE's decoder has weights the video decoder lacks: {unexpected[:5]}")
        not_spatial = [key for key in set(mine) - set(weights) if not _is_temporal(key)]
        if not_spatial:
            raise ValueError(f"the VAE's decoder lacks spatial weights of the video decoder: {sorted(not_spatial)[:5]}")
        self.load_state_dict(weights, strict=False)

    @torch.no_grad()
    def _make_temporal_identity(self) -> None:
        """Zeroes each temporal ResNet's last convolution (the block then returns its input, so the blend does too)
        and sets `time_conv_out` to pass the centre frame through."""
        for module in self.modules():
            if type(module).__name__ == "TemporalResnetBlock":
                nn.init.zeros_(module.conv2.weight)
                nn.init.zeros_(module.conv2.bias)
        conv = self.decoder.time_conv_out
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        conv.weight[:, :, 1, 0, 0] = torch.eye(conv.out_channels)


def _is_temporal(key: str) -> bool:
    """Whether a state-dict key names a temporal layer, which an image decoder does not have."""
    return any(part in key for part in ("temporal_res_block", "time_mixer", "time_conv_out"))


def _check_video(x: Tensor, channels: int, name: str, what: str) -> None:
    """Raises a ValueError unless x is a (b, f, channels, h, w) video."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"{name} must be (batch, frames, channels, height, width), got shape {tuple(x.shape)}")
    if x.shape[2] != channels:
        raise ValueError(f"{name} has {x.shape[2]} channels at dim 2; the VAE expects {channels} {what}")
    if 0 in x.shape[:2]:
        raise ValueError(f"{name} has an empty batch or frame axis: shape {tuple(x.shape)}")


__all__ = ["FrameVAE", "VideoDecoder"]
