"""The built-in example: a small LVDM and LIDM (random weights) mixed in one chain, from noise to smoothed latents.

It exercises every part of the method on the CPU in seconds: Table-1 networks at a small width behind the video
and image adapters, the Table-6 selection policy, correlated noise with γ (sec. 3.5) and temporal latent
smoothing (sec. 3.6). The networks are untrained, so the latents are not a picture of anything; the run shows
the machinery, the plan and the cost of each part.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jvid.models import ImageDenoiser, VideoDenoiser, lidm_unet, lvdm_unet
from jvid.noise import CorrelatedNoise
from jvid.postproc import TemporalLatentSmoother
from jvid.samplers import MixtureSampler, PiecewiseSelector
from jvid.schedule import NoiseSchedule


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines a demo run."""

    batch: int = 2
    frames: int = 8
    latent_size: int = 8
    width: int = 32
    steps: int = 50
    preset: int = 64
    guidance_scale: float = 2.0
    gamma: float = 1.0
    r_video: float = 0.0
    r_image: float = 0.0
    smoothing_threshold: float = 2.0
    seed: int = 0


def run_demo(settings: DemoSettings, out: Path | None = None, progress: bool = True) -> dict:
    """Builds the two models from `settings.seed`, samples, smooths, and returns (and optionally writes) a report."""
    smoother = TemporalLatentSmoother(settings.smoothing_threshold)  # bad settings fail before any work
    torch.manual_seed(settings.seed)
    schedule = NoiseSchedule.linear(1000)  # the paper's PNDM training schedule
    context = 16  # a small stand-in for CLIP's 768-wide text embeddings
    small = dict(width=settings.width, cross_attention_dim=context, head_dim=8, norm_num_groups=8,
                 sample_size=settings.latent_size)
    lvdm = VideoDenoiser(lvdm_unet(**small).eval(), schedule)
    lidm = ImageDenoiser(lidm_unet(**small).eval(), schedule)
    sampler = MixtureSampler(
        [lvdm, lidm],
        PiecewiseSelector.table6(settings.preset),
        noise=[CorrelatedNoise(settings.r_video), CorrelatedNoise(settings.r_image)],
        gamma=settings.gamma,
    )
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch, settings.frames, 4, settings.latent_size, settings.latent_size)
    x_T = torch.randn(shape, generator=generator)
    cond = torch.randn(settings.batch, 5, context, generator=generator)
    uncond = torch.zeros(1, 5, context)

    start = time.perf_counter()
    result = sampler.sample(x_T, num_steps=settings.steps, cond=cond, uncond=uncond,
                            guidance_scale=settings.guidance_scale, generator=generator, progress=progress)
    sampled = time.perf_counter()
    smoothed = smoother(result.latents)
    done = time.perf_counter()

    report = {
        "settings": asdict(settings),
        "plan": result.plan,
        "timesteps": result.timesteps,
        "video_steps": result.plan.count(0),
        "image_steps": result.plan.count(1),
        "smoothed_fraction": float((smoothed != result.latents).any(dim=2).float().mean()),
        "latent_mean": float(smoothed.mean()),
        "latent_std": float(smoothed.std()),
        "sampling_seconds": sampled - start,
        "smoothing_seconds": done - sampled,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"latents": smoothed, "raw_latents": result.latents, "plan": result.plan}, out / "latents.pt")
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
