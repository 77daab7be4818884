"""Components load from local folders with the class their config names; wrong folders are one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, PNDMScheduler, UNet2DConditionModel, \
    UNet3DConditionModel, UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from jvid.models.loading import KINDS, load_component

CLASSES = {"video_unet": UNet3DConditionModel, "image_unet": UNet2DConditionModel, "vae": AutoencoderKL,
           "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer, "scheduler": DDPMScheduler}


@pytest.mark.parametrize("role", CLASSES)
def test_each_component_loads_with_its_class(pipeline_folder, role):
    assert type(load_component(role, pipeline_folder / role)) is CLASSES[role]


def test_the_video_roles_take_the_video_models_own_clip(wide_pipeline_folder):
    encoder = load_component("video_text_encoder", wide_pipeline_folder / "video_text_encoder")
    assert isinstance(encoder, CLIPTextModel) and encoder.config.hidden_size == 48
    assert isinstance(load_component("video_tokenizer", wide_pipeline_folder / "video_tokenizer"), CLIPTokenizer)


def test_a_motion_unet_is_a_video_unet(pipeline_folder, tmp_path):
    image = load_component("image_unet", pipeline_folder / "image_unet")
    adapter = MotionAdapter(block_out_channels=image.config.block_out_channels,
                            motion_layers_per_block=image.config.layers_per_block, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=8, use_motion_mid_block=False)
    UNetMotionModel.from_unet2d(image, motion_adapter=adapter).save_pretrained(tmp_path)
    assert type(load_component("video_unet", tmp_path)) is UNetMotionModel


def test_any_diffusers_scheduler_loads_by_its_name(tmp_path):
    PNDMScheduler(beta_schedule="scaled_linear").save_pretrained(tmp_path)  # the paper's training scheduler
    assert type(load_component("scheduler", tmp_path)) is PNDMScheduler


def test_networks_load_in_the_dtype_asked_for(pipeline_folder):
    for role in ("image_unet", "vae", "text_encoder"):
        assert load_component(role, pipeline_folder / role, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize(("role", "folder", "match"), [
    ("image_unet", "video_unet", "holds UNet3DConditionModel; expected UNet2DConditionModel"),
    ("video_unet", "image_unet", "holds UNet2DConditionModel; expected UNet3DConditionModel or UNetMotionModel"),
    ("vae", "text_encoder", "holds CLIPTextModel; expected AutoencoderKL"),
    ("text_encoder", "vae", "holds AutoencoderKL; expected CLIPTextModel"),
    ("tokenizer", "text_encoder", "has no tokenizer_config.json"),
    ("scheduler", "vae", "has no scheduler_config.json"),
    ("vae", "no_such_folder", "does not exist"),
])
def test_a_folder_of_the_wrong_kind_is_named(pipeline_folder, role, folder, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match) as error:
        load_component(role, pipeline_folder / folder)
    assert folder in str(error.value) and "\n" not in str(error.value)


def test_broken_folders_are_named(pipeline_folder, tmp_path):
    broken = tmp_path / "vae"
    shutil.copytree(pipeline_folder / "vae", broken)
    (broken / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"cannot load vae from '.*vae': .*diffusion_pytorch_model") as error:
        load_component("vae", broken)
    assert "\n" not in str(error.value)
    (broken / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_component("vae", broken)
    (broken / "config.json").write_text(json.dumps({"_class_name": "NoSuchScheduler"}))
    with pytest.raises(ValueError, match="holds NoSuchScheduler; expected AutoencoderKL"):
        load_component("vae", broken)
    with pytest.raises(ValueError, match="expected a diffusers scheduler"):
        load_component("scheduler", _with_scheduler_config(tmp_path / "scheduler", "UNet2DConditionModel"))


def _with_scheduler_config(folder, class_name: str):
    folder.mkdir()
    (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": class_name}))
    return folder


def test_roles_are_the_pipelines_components():
    assert list(KINDS) == ["video_unet", "image_unet", "vae", "text_encoder", "tokenizer", "scheduler",
                           "video_text_encoder", "video_tokenizer"]
    with pytest.raises(ValueError, match="unknown component 'unet'"):
        load_component("unet", ".")
