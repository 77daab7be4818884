"""Networks behind one ε-model interface: the Denoiser protocol, its video and image adapters, Table-1 presets."""

from jvid.models.denoiser import CompilableDenoiser, Denoiser, ImageDenoiser, VideoDenoiser
from jvid.models.unets import lidm_unet, lvdm_unet
from jvid.models.text import TextEncoder, ucf101_prompt
from jvid.models.vae import FrameVAE, VideoDecoder

__all__ = ["CompilableDenoiser", "Denoiser", "ImageDenoiser", "VideoDenoiser", "lidm_unet", "lvdm_unet"]
__all__ += ["FrameVAE", "TextEncoder", "VideoDecoder", "ucf101_prompt"]
