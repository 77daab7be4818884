"""Pipelines assembled from folders laid out like public checkpoints, built from tiny random components:
Stable Diffusion 1.5 (image), ModelScope/Zeroscope (video, own CLIP) and AnimateDiff (motion-module video UNet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, \
    UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from jvid.pipeline import JVIDPipeline
from jvid.samplers import PatternSelector

from tiny_components import FRAMES, LATENT, run, sd_scheduler, tiny_clip, tiny_tokenizer, tiny_vae

TWO_LEVELS = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=LATENT, norm_num_groups=8)


def sd15_unet() -> UNet2DConditionModel:
    torch.manual_seed(1)
    return UNet2DConditionModel(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, **TWO_LEVELS).eval()


def modelscope_unet() -> UNet3DConditionModel:
    torch.manual_seed(2)
    return UNet3DConditionModel(down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=48,
                                attention_head_dim=8, **TWO_LEVELS).eval()


def save_checkpoint(folder, unet, clip_width: int, seed: int):
    """A diffusers-style folder: unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    tokenizer = tiny_tokenizer(folder / "vocab")
    unet.save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    tiny_clip(tokenizer, clip_width, seed).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    sd_scheduler().save_pretrained(folder / "scheduler")


def load(folder, name: str):
    kinds = {"unet": None, "vae": AutoencoderKL, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer,
             "scheduler": DDPMScheduler}
    return kinds[name].from_pretrained(folder / name)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    sd, modelscope = tmp_path_factory.mktemp("sd15"), tmp_path_factory.mktemp("modelscope")
    save_checkpoint(sd, sd15_unet(), 32, seed=3)
    save_checkpoint(modelscope, modelscope_unet(), 48, seed=4)
    return sd, modelscope


def test_sd15_folder_makes_an_image_only_pipeline(checkpoints, tmp_path):
    sd, _ = checkpoints
    pipe = JVIDPipeline(video_unet=None, image_unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
                        vae=load(sd, "vae"), text_encoder=load(sd, "text_encoder"), tokenizer=load(sd, "tokenizer"),
                        scheduler=load(sd, "scheduler"))
    out = run(pipe)
    assert out.frames.shape == (1, FRAMES, 2 * LATENT, 2 * LATENT, 3) and out.plan == [0] * 4
    pipe.save_pretrained(tmp_path)
    np.testing.assert_array_equal(run(JVIDPipeline.from_pretrained(tmp_path)).frames, out.frames)


def test_modelscope_video_with_its_own_clip_mixed_with_sd15_image(checkpoints, tmp_path):
    sd, modelscope = checkpoints
    pipe = JVIDPipeline(video_unet=UNet3DConditionModel.from_pretrained(modelscope / "unet"),
                        image_unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
                        vae=load(sd, "vae"), text_encoder=load(sd, "text_encoder"), tokenizer=load(sd, "tokenizer"),
                        scheduler=load(sd, "scheduler"), video_text_encoder=load(modelscope, "text_encoder"),
                        video_tokenizer=load(modelscope, "tokenizer"))
    out = run(pipe, selector=PatternSelector([0, 1]))
    assert out.plan == [0, 1, 0, 1] and np.isfinite(out.frames).all()
    pipe.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "image_unet", "scheduler", "text_encoder", "tokenizer", "vae", "video_text_encoder", "video_tokenizer",
        "video_unet"]
    loaded = JVIDPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.video_unet, UNet3DConditionModel)
    np.testing.assert_array_equal(run(loaded, selector=PatternSelector([0, 1])).frames, out.frames)


def test_animatediff_motion_unet_as_the_video_model(checkpoints, tmp_path):
    sd, _ = checkpoints
    image_unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    torch.manual_seed(5)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=8, use_motion_mid_block=False)
    video_unet = UNetMotionModel.from_unet2d(image_unet, motion_adapter=adapter).eval()
    pipe = JVIDPipeline(video_unet=video_unet, image_unet=image_unet, vae=load(sd, "vae"),
                        text_encoder=load(sd, "text_encoder"), tokenizer=load(sd, "tokenizer"),
                        scheduler=load(sd, "scheduler"))
    out = run(pipe, selector=PatternSelector([0, 0, 1]), num_inference_steps=3)
    assert out.plan == [0, 0, 1] and out.frames.shape == (1, FRAMES, 2 * LATENT, 2 * LATENT, 3)
    pipe.save_pretrained(tmp_path)
    loaded = JVIDPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.video_unet, UNetMotionModel)
    np.testing.assert_array_equal(run(loaded, selector=PatternSelector([0, 0, 1]), num_inference_steps=3).frames,
                                  out.frames)
