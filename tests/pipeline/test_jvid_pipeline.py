"""JVIDPipeline end to end on tiny random components: outputs, reproducibility, save/load, single-UNet pipelines,
two text encoders, and refusals before any denoising."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from jvid.pipeline import JVIDPipeline, JVIDPipelineOutput
from jvid.samplers import PatternSelector, PiecewiseSelector

from tiny_components import FRAMES, LATENT, run, sd_scheduler, tiny_pipeline, tiny_vae

SIZE = 2 * LATENT


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> JVIDPipeline:
    return tiny_pipeline(tmp_path_factory)


@contextmanager
def count_unet_calls(pipe: JVIDPipeline) -> Iterator[dict[str, list]]:
    """Records the shape of encoder_hidden_states at every UNet forward, per UNet name."""
    calls, handles = {}, []
    for name, unet in pipe.unets():
        calls[name] = []
        handles.append(unet.register_forward_pre_hook(
            lambda module, args, kwargs, seen=calls[name]: seen.append(kwargs["encoder_hidden_states"].shape),
            with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize(("output_type", "shape"), [
    ("np", (2, FRAMES, SIZE, SIZE, 3)),
    ("pt", (2, FRAMES, 3, SIZE, SIZE)),
    ("latent", (2, FRAMES, 4, LATENT, LATENT)),
])
def test_each_output_type_has_its_layout(pipe, output_type, shape):
    out = run(pipe, output_type=output_type, num_videos_per_prompt=2)
    assert isinstance(out, JVIDPipelineOutput)
    frames = out.frames
    assert tuple(frames.shape) == shape
    if output_type == "np":
        assert isinstance(frames, np.ndarray) and frames.dtype == np.float32
    else:
        assert isinstance(frames, torch.Tensor) and frames.dtype == torch.float32
    if output_type != "latent":
        assert frames.min() >= 0 and frames.max() <= 1 and float(frames.std()) > 0
    assert len(out.plan) == len(out.timesteps) == 4 and out.plan[0] == 0


def test_pil_output_is_a_list_of_frame_lists(pipe):
    out = run(pipe, prompt=["a person", "someone yo yo"], output_type="pil")
    assert len(out.frames) == 2 and all(len(video) == FRAMES for video in out.frames)
    assert all(isinstance(frame, Image.Image) and frame.size == (SIZE, SIZE) for frame in out.frames[1])
    np.testing.assert_allclose(np.asarray(out.frames[0][0]) / 255, run(pipe, prompt=["a person", "someone yo yo"])
                               .frames[0, 0], atol=1 / 255 + 1e-6)


def test_np_and_pt_are_the_same_frames(pipe):
    array, tensor = run(pipe, output_type="np").frames, run(pipe, output_type="pt").frames
    np.testing.assert_array_equal(array, tensor.permute(0, 1, 3, 4, 2).numpy())


def test_default_plan_is_table6_and_starts_with_the_video_model(pipe):
    assert repr(pipe.default_selector(SIZE, SIZE)) == repr(PiecewiseSelector.table6(64))
    assert repr(pipe.default_selector(200, 300)) == repr(PiecewiseSelector.table6(256))
    out = run(pipe, num_inference_steps=10, output_type="latent", smoothing_threshold=None)
    assert out.plan[:2] == [0, 0]  # progress 0 and 1/9 lie before t_v = 0.2: P_V = 1
    assert set(out.plan) <= {0, 1} and out.timesteps == sorted(out.timesteps, reverse=True)


def test_both_models_run_when_the_plan_uses_both(pipe):
    with count_unet_calls(pipe) as calls:
        out = run(pipe, selector=PatternSelector([0, 1, 1, 1]), output_type="latent")
    assert out.plan == [0, 1, 1, 1]
    assert len(calls["video_unet"]) == 1 and len(calls["image_unet"]) == 3
    # guidance doubles the batch (uncond + cond); the image model sees the frames folded into the batch
    assert calls["video_unet"][0][0] == 2 and calls["image_unet"][0][0] == 2 * FRAMES


def test_same_seed_same_video_other_seed_other_video(pipe):
    first, again, other = (run(pipe, seed=s, output_type="pt") for s in (3, 3, 4))
    assert torch.equal(first.frames, again.frames) and first.plan == again.plan
    assert not torch.allclose(first.frames, other.frames)


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def test_per_video_generators_give_each_video_its_own_noise(pipe):
    both = run(pipe, generator=generators(5, 6), plan_generator=torch.Generator().manual_seed(0),
               num_videos_per_prompt=2, output_type="latent", smoothing_threshold=None).frames
    assert both.shape[0] == 2 and not torch.allclose(both[0], both[1])


def test_a_batch_split_into_shards_makes_the_same_videos(pipe):
    """Per-video generators and one plan generator: a video does not depend on the batch that makes it, up to the
    rounding of batched network calls."""
    def shard(*seeds):
        return run(pipe, generator=generators(*seeds), plan_generator=torch.Generator().manual_seed(9),
                   num_videos_per_prompt=len(seeds), selector=PiecewiseSelector(0.0, 0.5, 0.5, 0.5))

    whole, first, rest = shard(5, 6, 7), shard(5), shard(6, 7)
    assert whole.plan == first.plan == rest.plan and set(whole.plan) == {0, 1}
    np.testing.assert_allclose(np.concatenate([first.frames, rest.frames]), whole.frames, atol=1e-5)


def test_the_plan_comes_from_the_plan_generator(pipe):
    def plan(noise_seed: int, plan_seed: int) -> list[int]:
        return run(pipe, seed=noise_seed, plan_generator=torch.Generator().manual_seed(plan_seed),
                   selector=PiecewiseSelector(0.0, 0.5, 0.5, 0.5), num_inference_steps=6, output_type="latent").plan

    assert plan(1, 3) == plan(2, 3) != plan(1, 4)


def test_cuda_graph_runner_makes_the_eager_videos_and_is_kept_for_later_calls(pipe):
    settings = dict(output_type="latent", noise_r_video=0.3, selector=PiecewiseSelector(0.0, 0.5, 0.5, 0.5))
    eager = run(pipe, seed=2, **settings)
    graphed = run(pipe, seed=2, cuda_graphs=True, **settings)
    assert graphed.plan == eager.plan and set(eager.plan) == {0, 1}
    torch.testing.assert_close(graphed.frames, eager.frames, rtol=1e-5, atol=1e-5)
    runner = pipe._graph_runner
    again = run(pipe, seed=2, cuda_graphs=True, **{**settings, "selector": PiecewiseSelector(0.0, 0.2, 0.9, 0.1)})
    assert pipe._graph_runner is runner and again.plan != eager.plan
    run(pipe, seed=2, cuda_graphs=True, **{**settings, "gamma": 0.5})
    assert pipe._graph_runner is not runner  # γ is part of what a kept runner must match


def test_compiled_cuda_graph_runner_makes_the_eager_videos(tmp_path_factory, monkeypatch):
    """compile_mode reaches the runner, which compiles each UNet's adapter once; torch.compile is replaced by a
    recorder here, since compiling takes minutes. A pipeline of its own: compiling rewrites the UNets in place."""
    pipe = tiny_pipeline(tmp_path_factory)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: compiled.append(mode) or fn)
    settings = dict(output_type="latent", selector=PatternSelector([0, 1]))
    eager = run(pipe, seed=4, **settings)
    graphed = run(pipe, seed=4, cuda_graphs=True, compile_mode="default", **settings)
    assert pipe._graph_runner[1].compile_mode == "default" and compiled == ["default", "default"]
    torch.testing.assert_close(graphed.frames, eager.frames, rtol=1e-5, atol=1e-5)
    refused(pipe, "pass cuda_graphs=True too", compile_mode="default")


def test_per_video_generators_need_a_plan_generator(pipe):
    refused(pipe, "pass plan_generator", generator=generators(1, 2), num_videos_per_prompt=2)


def test_settings_change_the_result(pipe):
    base = run(pipe, output_type="latent").frames
    for change in (dict(gamma=0.5), dict(noise_r_video=0.5, selector=PiecewiseSelector(0.9, 0.95, 1.0, 1.0)),
                   dict(guidance_scale=5.0), dict(smoothing_threshold=None), dict(prompt="someone parallel bars")):
        assert not torch.allclose(run(pipe, output_type="latent", **change).frames, base), change


def test_save_and_load_round_trip_gives_the_same_video(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["video_unet"] == ["diffusers", "UNet3DConditionModel"]
    assert index["video_text_encoder"] == [None, None]
    loaded = JVIDPipeline.from_pretrained(tmp_path)
    assert loaded.video_text_encoder is None and loaded.video_tokenizer is None
    np.testing.assert_array_equal(run(loaded).frames, run(pipe).frames)


@pytest.mark.parametrize("only", ["video", "image"])
def test_a_single_unet_makes_a_plain_pipeline(tmp_path_factory, tmp_path, only):
    pipe = tiny_pipeline(tmp_path_factory, video=only == "video", image=only == "image")
    with count_unet_calls(pipe) as calls:
        out = run(pipe, num_inference_steps=5)
    assert out.frames.shape == (1, FRAMES, SIZE, SIZE, 3) and out.plan == [0] * 5
    assert list(calls) == [f"{only}_unet"] and len(calls[f"{only}_unet"]) == 5
    pipe.save_pretrained(tmp_path)
    loaded = JVIDPipeline.from_pretrained(tmp_path)
    assert (loaded.video_unet is None) == (only == "image") and (loaded.image_unet is None) == (only == "video")
    np.testing.assert_array_equal(run(loaded, num_inference_steps=5).frames, out.frames)


def test_a_video_model_with_its_own_wider_text_encoder(tmp_path_factory, tmp_path):
    pipe = tiny_pipeline(tmp_path_factory, video_context=48)
    with count_unet_calls(pipe) as calls:
        out = run(pipe, selector=PatternSelector([0, 1]))
    assert calls["video_unet"] and calls["image_unet"]
    assert {shape[-1] for shape in calls["video_unet"]} == {48}
    assert {shape[-1] for shape in calls["image_unet"]} == {32}
    pipe.save_pretrained(tmp_path)
    loaded = JVIDPipeline.from_pretrained(tmp_path)
    assert loaded.video_text_encoder.config.hidden_size == 48
    np.testing.assert_array_equal(run(loaded, selector=PatternSelector([0, 1])).frames, out.frames)


def refused(pipe: JVIDPipeline, match: str, **kwargs) -> None:
    """The call raises ValueError matching `match` before any UNet runs."""
    with count_unet_calls(pipe) as calls, pytest.raises(ValueError, match=match):
        run(pipe, **kwargs)
    assert all(not seen for seen in calls.values())


def test_latent_channels_other_than_the_vae_are_refused(tmp_path_factory):
    pipe = tiny_pipeline(tmp_path_factory)
    pipe.register_modules(vae=tiny_vae(latent_channels=8))
    refused(pipe, "in_channels=4, but the VAE has 8 latent channels")


def test_a_v_prediction_scheduler_is_refused(tmp_path_factory):
    pipe = tiny_pipeline(tmp_path_factory)
    pipe.register_modules(scheduler=sd_scheduler(prediction_type="v_prediction"))
    refused(pipe, "prediction_type is 'v_prediction'.*'epsilon'")


def test_bad_sizes_and_settings_are_refused_before_denoising(pipe):
    refused(pipe, "height=15 must be divisible by the VAE scale factor 2", height=15)
    refused(pipe, "output_type", output_type="gif")
    refused(pipe, "threshold", smoothing_threshold=-1.0)
    refused(pipe, "shared_ratio", noise_r_image=1.5)
    refused(pipe, "gamma", gamma=-1.0)
    refused(pipe, "num_frames must be positive", num_frames=0)
    refused(pipe, "only 2", selector=PatternSelector([2]))


def test_a_text_encoder_narrower_than_the_cross_attention_is_refused(tmp_path_factory):
    wide = tiny_pipeline(tmp_path_factory, video_context=48)
    narrow = JVIDPipeline(**{**wide.components, "video_text_encoder": None, "video_tokenizer": None})
    refused(narrow, "video_unet has cross_attention_dim=48, but its text_encoder gives 32")
    half = JVIDPipeline(**{**wide.components, "video_tokenizer": None})
    refused(half, "give both or neither")


def test_a_pipeline_without_unets_is_refused(pipe):
    empty = JVIDPipeline(**{**pipe.components, "video_unet": None, "image_unet": None})
    with pytest.raises(ValueError, match="neither a video_unet nor an image_unet"):
        run(empty)
