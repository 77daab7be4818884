"""JVIDPipeline.from_folders: a saved pipeline, separate component folders, or a pipeline with parts replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import UNet3DConditionModel

from jvid.pipeline import JVIDPipeline
from jvid.samplers import PatternSelector

from tiny_components import run

PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")


def parts(folder, *roles: str) -> dict:
    """The component folders of a saved pipeline, by role."""
    return {role: folder / role for role in (*PARTS, *roles)}


def test_a_saved_pipeline_loads_as_from_pretrained_does(pipeline_folder):
    pipe = JVIDPipeline.from_folders(pipeline_folder)
    assert isinstance(pipe.video_unet, UNet3DConditionModel) and pipe.video_text_encoder is None
    loaded = JVIDPipeline.from_pretrained(pipeline_folder)
    np.testing.assert_array_equal(run(pipe, num_inference_steps=2).frames, run(loaded, num_inference_steps=2).frames)


def test_component_folders_make_the_same_pipeline(pipeline_folder):
    pipe = JVIDPipeline.from_folders(**parts(pipeline_folder, "video_unet", "image_unet"))
    whole = JVIDPipeline.from_folders(pipeline_folder)
    np.testing.assert_array_equal(run(pipe, num_inference_steps=2).frames, run(whole, num_inference_steps=2).frames)


@pytest.mark.parametrize("only", ["video_unet", "image_unet"])
def test_one_unet_folder_makes_a_plain_pipeline(pipeline_folder, only):
    pipe = JVIDPipeline.from_folders(**parts(pipeline_folder, only), dtype=torch.bfloat16)
    assert [name for name, _ in pipe.unets()] == [only] and pipe.vae.dtype == torch.bfloat16
    assert run(pipe, num_inference_steps=2).plan == [0, 0]


def test_a_video_model_with_its_own_wider_clip_from_folders(pipeline_folder, wide_pipeline_folder):
    """The video UNet and its 48-wide CLIP from one checkpoint, the image UNet and its 32-wide CLIP from another."""
    wide = {role: wide_pipeline_folder / role for role in ("video_unet", "video_text_encoder", "video_tokenizer")}
    pipe = JVIDPipeline.from_folders(**parts(pipeline_folder, "image_unet"), **wide)
    assert pipe.video_unet.config.cross_attention_dim == 48 and pipe.text_encoder.config.hidden_size == 32
    out = run(pipe, selector=PatternSelector([0, 1]), num_inference_steps=2)
    assert out.plan == [0, 1] and np.isfinite(out.frames).all()
    # The same three folders replace the parts of a saved two-UNet pipeline.
    replaced = JVIDPipeline.from_folders(pipeline_folder, **wide)
    np.testing.assert_array_equal(run(replaced, selector=PatternSelector([0, 1]), num_inference_steps=2).frames,
                                  out.frames)


def test_missing_parts_are_listed(pipeline_folder):
    with pytest.raises(ValueError, match="missing: tokenizer, scheduler"):
        JVIDPipeline.from_folders(image_unet=pipeline_folder / "image_unet", vae=pipeline_folder / "vae",
                                  text_encoder=pipeline_folder / "text_encoder")
    with pytest.raises(ValueError, match="neither a video_unet nor an image_unet"):
        JVIDPipeline.from_folders(**parts(pipeline_folder))
    with pytest.raises(TypeError, match="unknown component 'unet'"):
        JVIDPipeline.from_folders(unet=pipeline_folder / "image_unet")


def test_parts_that_do_not_fit_together_are_refused(pipeline_folder, wide_pipeline_folder):
    with pytest.raises(ValueError, match="cross_attention_dim=48, but its text_encoder gives 32"):
        JVIDPipeline.from_folders(pipeline_folder, video_unet=wide_pipeline_folder / "video_unet")


def test_a_folder_of_another_pipeline_is_named(pipeline_folder, tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="holds a StableDiffusionPipeline, not a JVIDPipeline"):
        JVIDPipeline.from_folders(tmp_path)
    with pytest.raises(ValueError, match="pipeline folder '.*vae' has no model_index.json"):
        JVIDPipeline.from_folders(pipeline_folder / "vae")
