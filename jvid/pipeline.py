"""The JVID text-to-video pipeline: a video and an image ε-model mixed in one reverse chain (paper sec. 3, 4.1-4.2).

A diffusers `DiffusionPipeline`, so the whole set (two UNets, one VAE, one or two CLIP text encoders, one
scheduler) saves to and loads from one folder. Either UNet may be absent, which leaves a plain video or image
pipeline. Everything that can make the mixture invalid is checked before the first network call.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from einops import rearrange
from transformers import CLIPTextModel, CLIPTokenizer

from jvid.models import FrameVAE, ImageDenoiser, TextEncoder, VideoDenoiser
from jvid.models.loading import KINDS, load_component, read_config
from jvid.noise import CorrelatedNoise
from jvid.postproc import TemporalLatentSmoother
from jvid.samplers import TABLE6, CUDAGraphSampler, FixedSelector, MixtureSampler, PiecewiseSelector, Selector
from jvid.schedule import NoiseSchedule

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class JVIDPipelineOutput(BaseOutput):
    """`frames` in the requested `output_type`; `plan[i]` is the denoiser of step i (0 video, 1 image when both
    UNets exist, else 0 for the only one) and `timesteps[i]` its training timestep."""

    frames: Any
    plan: list[int]
    timesteps: list[int | float]


class JVIDPipeline(DiffusionPipeline):
    """Text to video with the JVID mixture: `video_unet` (b, c, f, h, w) and `image_unet` (per frame) share the
    one `scheduler`'s noise schedule; the video model reads `video_text_encoder` when given, else `text_encoder`."""

    model_cpu_offload_seq = "text_encoder->video_text_encoder->video_unet->image_unet->vae"
    _optional_components = ["video_unet", "image_unet", "video_text_encoder", "video_tokenizer"]

    def __init__(
        self,
        video_unet: ModelMixin | None,
        image_unet: ModelMixin | None,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: SchedulerMixin,
        video_text_encoder: CLIPTextModel | None = None,
        video_tokenizer: CLIPTokenizer | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(video_unet=video_unet, image_unet=image_unet, vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, scheduler=scheduler, video_text_encoder=video_text_encoder,
                              video_tokenizer=video_tokenizer)
        self._text_encoders: dict[tuple[int, int], TextEncoder] = {}

    @classmethod
    def from_folders(cls, pipeline: str | os.PathLike | None = None, *, dtype: torch.dtype | None = None,
                     **components: str | os.PathLike | None) -> JVIDPipeline:
        """A checked pipeline from local folders only: `pipeline` written by `save_pretrained`, and/or one folder per
        component (`video_unet=`, `vae=`, ...: the keys of `jvid.models.loading.KINDS`), each loaded with the class
        its config names, networks in `dtype`. A component folder replaces that component of `pipeline`. Without
        `pipeline`, vae, text_encoder, tokenizer, scheduler and at least one UNet need folders; a missing UNet
        leaves a plain video or image pipeline."""
        unknown = sorted(set(components) - set(KINDS))
        if unknown:
            raise TypeError(f"unknown component {unknown[0]!r}; the components are {', '.join(KINDS)}")
        folders = {} if pipeline is None else cls._component_folders(pipeline)
        folders.update({role: folder for role, folder in components.items() if folder is not None})
        missing = [role for role in ("vae", "text_encoder", "tokenizer", "scheduler") if role not in folders]
        if missing:
            raise ValueError(f"each of vae, text_encoder, tokenizer and scheduler needs a folder, in the pipeline "
                             f"folder or of its own; missing: {', '.join(missing)}")
        pipe = cls(**{role: load_component(role, folders[role], dtype) if role in folders else None
                      for role in KINDS})
        pipe.check_components()
        return pipe

    @classmethod
    def _component_folders(cls, pipeline: str | os.PathLike) -> dict[str, str]:
        """The subfolder of each component that a `save_pretrained` folder holds, by its model_index.json."""
        index = read_config(pipeline, "model_index.json", what="pipeline")
        if index.get("_class_name") != cls.__name__:
            raise ValueError(f"pipeline folder {str(pipeline)!r} holds a {index.get('_class_name')}, not a "
                             f"{cls.__name__}; give its parts as component folders instead")
        present = [role for role in KINDS if isinstance(index.get(role), list) and index[role][:1] != [None]]
        return {role: os.path.join(pipeline, role) for role in present}

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side: 2 per VAE down level (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def unets(self) -> list[tuple[str, ModelMixin]]:
        """The present UNets in denoiser order, video first: their index is the one the plan reports."""
        return [(name, unet) for name in ("video_unet", "image_unet") if (unet := getattr(self, name)) is not None]

    def text_encoder_for(self, name: str) -> TextEncoder:
        """The cached `TextEncoder` of a UNet: the video UNet's own CLIP when the pipeline has one."""
        tokenizer, encoder = self.tokenizer, self.text_encoder
        if name == "video_unet" and self.video_text_encoder is not None:
            tokenizer, encoder = self.video_tokenizer, self.video_text_encoder
        key = (id(tokenizer), id(encoder))
        if key not in self._text_encoders:
            self._text_encoders[key] = TextEncoder(tokenizer, encoder)
        return self._text_encoders[key]

    def check_components(self) -> None:
        """Raises ValueError when the components cannot form one reverse chain (no network runs here)."""
        if not self.unets():
            raise ValueError("the pipeline has neither a video_unet nor an image_unet")
        if (self.video_text_encoder is None) != (self.video_tokenizer is None):
            raise ValueError("video_text_encoder and video_tokenizer come together: give both or neither")
        latent_channels = self.vae.config.latent_channels
        for name, unet in self.unets():
            for key in ("in_channels", "out_channels"):
                channels = unet.config.get(key)
                if channels != latent_channels:
                    raise ValueError(f"{name} has {key}={channels}, but the VAE has {latent_channels} latent "
                                     f"channels; every model of the mixture must denoise the VAE's latents")
            width = self.text_encoder_for(name).embedding_dim
            if unet.config.get("cross_attention_dim") != width:
                which = "video_text_encoder" if name == "video_unet" and self.video_text_encoder is not None \
                    else "text_encoder"
                raise ValueError(f"{name} has cross_attention_dim={unet.config.get('cross_attention_dim')}, but "
                                 f"its {which} gives {width}-wide embeddings")
        prediction = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"the scheduler's prediction_type is {prediction!r}; jvid's DDPM solver mixes ε-models "
                             f"(eq. 5) and needs 'epsilon'")

    def schedule(self) -> NoiseSchedule:
        """The noise schedule of the scheduler's config, which every UNet shares (sec. 3.4)."""
        return NoiseSchedule.from_diffusers(self.scheduler)

    def default_size(self) -> int:
        """Pixels per side when height/width are not given: the first UNet's sample_size × the VAE scale factor."""
        _, unet = self.unets()[0]
        size = unet.config.get("sample_size") or 64
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale_factor

    def _graphed(self, sampler: MixtureSampler, settings: tuple[float, ...],
                 compile_mode: str | None) -> CUDAGraphSampler:
        """The CUDA-graph runner of the last call with the same UNets, γ, noise ratios and compile mode (so its
        graphs are reused), else a new one; the plan is always passed in, so the selector of the sampler it wraps
        plays no part."""
        key = (tuple((name, id(unet)) for name, unet in self.unets()), settings, compile_mode)
        cached = getattr(self, "_graph_runner", None)
        if cached is None or cached[0] != key:
            cached = (key, CUDAGraphSampler(sampler, compile_mode=compile_mode))
            self._graph_runner = cached
        return cached[1]

    def default_selector(self, height: int, width: int) -> Selector:
        """Table 6's setting for the resolution nearest the frame size when both UNets exist, else the only UNet."""
        if len(self.unets()) == 1:
            return FixedSelector(0)
        resolution = min(TABLE6, key=lambda r: abs(r - max(height, width)))
        return PiecewiseSelector.table6(resolution)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        selector: Selector | None = None,
        gamma: float = 1.0,
        noise_r_video: float = 0.0,
        noise_r_image: float = 0.0,
        smoothing_threshold: float | None = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        plan_generator: torch.Generator | None = None,
        output_type: str = "np",
        num_videos_per_prompt: int = 1,
        progress: bool = True,
        cuda_graphs: bool = False,
        compile_mode: str | None = None,
    ) -> JVIDPipelineOutput:
        """Samples `num_videos_per_prompt` videos of `num_frames` frames per prompt.

        `gamma` scales the chain's noise (sec. 3.5), `noise_r_video`/`noise_r_image` are the shared ratios r of each
        model's correlated noise (eq. 8-9), `smoothing_threshold` is c of sec. 3.6 (None: no smoothing).

        `generator` draws the initial and every step's noise: one generator for the batch, or one per video.
        `plan_generator` draws the plan (which model runs at each step); without it the plan comes from `generator`,
        which must then be a single generator. With per-video generators and a shared `plan_generator`, the videos
        do not depend on the batch they are made in, so a batch split across processes makes the same videos.

        Frames come as a float array (b, f, H, W, 3) in [0, 1] ("np"), a tensor (b, f, 3, H, W) in [0, 1] ("pt"),
        lists of PIL images ("pil") or the latents (b, f, c, h, w) ("latent").

        `cuda_graphs` runs the chain through `jvid.samplers.CUDAGraphSampler`: each UNet's step is captured once per
        shape (a few seconds on the first call) and replayed, the same chain as the eager loop up to rounding. The
        captured graphs are kept for later calls with the same UNets, γ and noise ratios. With `compile_mode` (one of
        `jvid.samplers.graphed.COMPILE_MODES`, e.g. "default"; needs `cuda_graphs`) the UNets are compiled by
        torch.compile before capture: minutes on the first call, faster networks on every call.
        """
        self.check_components()
        prompts = _prompts(prompt)
        height = self.default_size() if height is None else height
        width = self.default_size() if width is None else width
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width),
                            ("num_inference_steps", num_inference_steps),
                            ("num_videos_per_prompt", num_videos_per_prompt)):
            _check_positive_int(name, value)
        for name, value in (("height", height), ("width", width)):
            if value % self.vae_scale_factor:
                raise ValueError(f"{name}={value} must be divisible by the VAE scale factor {self.vae_scale_factor}")
        if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        batch = len(prompts) * num_videos_per_prompt
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for {batch} videos; give one generator or one per video")
        if plan_generator is None and isinstance(generator, list):
            raise ValueError("with one generator per video, pass plan_generator= too: the plan must not depend on "
                             "which videos a batch holds")
        if plan_generator is not None and not isinstance(plan_generator, torch.Generator):
            raise TypeError(f"plan_generator must be a torch.Generator or None, got {type(plan_generator).__name__}")

        # Everything below the checks is cheap to build and validates its own arguments before any denoising.
        smoother = None if smoothing_threshold is None else TemporalLatentSmoother(smoothing_threshold)
        schedule = self.schedule()
        names = [name for name, _ in self.unets()]
        adapters = {"video_unet": VideoDenoiser, "image_unet": ImageDenoiser}
        denoisers = [adapters[name](unet, schedule) for name, unet in self.unets()]
        ratios = {"video_unet": noise_r_video, "image_unet": noise_r_image}
        sampler = MixtureSampler(denoisers, selector or self.default_selector(height, width), solver="ddpm",
                                 noise=[CorrelatedNoise(ratios[name]) for name in names], gamma=gamma)

        device = self._execution_device
        expanded = [p for p in prompts for _ in range(num_videos_per_prompt)]
        cond, uncond = [], []
        for name in names:
            encoder = self.text_encoder_for(name)
            cond.append(encoder.encode(expanded).to(device))
            uncond.append(encoder.unconditional(1).to(device))

        shape = (batch, num_frames, self.vae.config.latent_channels,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        x_T = _initial_noise(shape, generator, device)
        # The plan is drawn here, before any step's noise, exactly where the sampler would draw it from `generator`.
        plan = sampler.plan(num_inference_steps, plan_generator or generator)
        if compile_mode is not None and not cuda_graphs:
            raise ValueError(f"compile_mode={compile_mode!r} compiles the UNets of the CUDA-graph runner: pass "
                             f"cuda_graphs=True too")
        noise_settings = (gamma, noise_r_video, noise_r_image)
        runner = self._graphed(sampler, noise_settings, compile_mode) if cuda_graphs else sampler
        result = runner.sample(x_T, num_steps=num_inference_steps, cond=cond, uncond=uncond,
                               guidance_scale=guidance_scale, generator=generator, plan=plan, progress=progress)
        latents = result.latents if smoother is None else smoother(result.latents)
        frames = latents if output_type == "latent" else self._to_frames(latents, output_type)
        self.maybe_free_model_hooks()
        return JVIDPipelineOutput(frames=frames, plan=result.plan, timesteps=result.timesteps)

    def _to_frames(self, latents: torch.Tensor, output_type: str) -> Any:
        """Decodes each frame with the VAE and maps [-1, 1] to [0, 1] in the requested container."""
        video = (FrameVAE(self.vae).decode(latents).float() / 2 + 0.5).clamp(0, 1)  # (b, f, 3, H, W)
        if output_type == "pt":
            return video
        array = rearrange(video, "b f c h w -> b f h w c").cpu().numpy()
        if output_type == "np":
            return array
        return [VaeImageProcessor.numpy_to_pil(frames) for frames in array]


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt or not all(isinstance(p, str) for p in prompt):
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompt!r}")
    return prompt


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")


def _initial_noise(shape: tuple[int, ...], generator: Any, device: torch.device) -> torch.Tensor:
    """x_T ~ N(0, I) in float32, drawn on each generator's device, one row per generator when given a list."""
    if isinstance(generator, list):
        return torch.cat([_initial_noise((1, *shape[1:]), g, device) for g in generator])
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device)


__all__ = ["JVIDPipeline", "JVIDPipelineOutput"]
