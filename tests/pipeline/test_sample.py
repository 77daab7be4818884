"""jvid.sample: settings checked before any model loads, seeds per video, reproducible and shardable runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jvid.models.loading import KINDS
from jvid.models.text import PROMPT_PREFIXES
from jvid.samplers import PiecewiseSelector
from jvid.sample import ModelFolders, SampleSettings, prompt_of, sample, stream_seed, video_paths, video_seeds

from tiny_components import FRAMES

BOTH = ("video_unet", "image_unet")


def settings(folder, **changes) -> SampleSettings:
    """A short run of the tiny pipeline in `folder`: 3 frames, 3 steps, on the CPU."""
    base = dict(prompt="a person apply eye makeup", num_frames=FRAMES, steps=3, device="cpu")
    return SampleSettings(models=ModelFolders(pipeline=folder), **{**base, **changes})


def test_same_settings_same_frames_and_record(pipeline_folder):
    first, again, other = (sample(settings(pipeline_folder, seed=seed, steps=2), progress=False) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.record == again.record
    assert not np.allclose(other.frames, first.frames)


def test_a_batch_is_its_shards(pipeline_folder):
    """--batch 3 makes the videos that --batch 1 --first-index 0 and --batch 2 --first-index 1 make."""
    mixed = dict(selector="piecewise:0,0.5,0.5,0.5", seed=7)
    whole = sample(settings(pipeline_folder, batch=3, **mixed), progress=False)
    shards = [sample(settings(pipeline_folder, batch=n, first_index=i, **mixed), progress=False)
              for i, n in ((0, 1), (1, 2))]
    assert all(shard.record["plan"] == whole.record["plan"] for shard in shards) and set(whole.record["plan"]) == {0, 1}
    assert [v["seed"] for shard in shards for v in shard.record["videos"]] == \
        [v["seed"] for v in whole.record["videos"]]
    np.testing.assert_allclose(np.concatenate([shard.frames for shard in shards]), whole.frames, atol=1e-5)


def test_the_record_holds_what_makes_the_video(pipeline_folder):
    run = settings(pipeline_folder, ucf_class="ApplyEyeMakeup", prompt=None, batch=2, first_index=5, gamma=0.5)
    record = sample(run, progress=False).record
    assert record["settings"] == dataclasses.asdict(run) and SampleSettings.from_record(record) == run
    assert record["prompt"] == prompt_of(run) and record["prompt"].endswith(" apply eye makeup")
    assert record["selector"] == repr(PiecewiseSelector.table6(64)) and record["unets"] == list(BOTH)
    assert [v["index"] for v in record["videos"]] == [5, 6] and record["frame_size"] == [16, 16]
    assert len(record["plan"]) == len(record["timesteps"]) == 3
    assert record["environment"]["dtype"] == "float32" and record["environment"]["versions"]["torch"]


@given(seed=st.integers(0, 2**64), first=st.integers(0, 50), count=st.integers(1, 5))
def test_video_seeds_depend_on_the_run_seed_and_the_index_only(seed, first, count):
    whole = video_seeds(SampleSettings(ModelFolders(pipeline="p"), prompt="", seed=seed, batch=first + count,
                                       device="cpu"))
    part = video_seeds(SampleSettings(ModelFolders(pipeline="p"), prompt="", seed=seed, batch=count,
                                      first_index=first, device="cpu"))
    assert part == whole[first:]
    streams = [stream_seed(seed, 0), stream_seed(seed, 1), *whole]
    assert len(set(streams)) == len(streams) and all(0 <= s < 2**64 for s in streams)


def test_the_ucf_prompt_subject_follows_the_seed():
    prompts = {prompt_of(SampleSettings(ModelFolders(pipeline="p"), ucf_class="YoYo", seed=seed, device="cpu"))
               for seed in range(12)}
    assert {p.removesuffix(" yo yo") for p in prompts} == set(PROMPT_PREFIXES)


def test_video_files_are_numbered_by_index_when_there_are_several():
    one = SampleSettings(ModelFolders(pipeline="p"), prompt="", out="out/clip.gif", first_index=4, device="cpu")
    assert [str(p) for p in video_paths(one)] == ["out/clip.gif"]
    many = dataclasses.replace(one, batch=2)
    assert [str(p) for p in video_paths(many)] == ["out/clip-4.gif", "out/clip-5.gif"]


@pytest.mark.parametrize(("changes", "match"), [
    (dict(ucf_class="YoYo"), "exactly one of prompt and ucf_class, got both"),
    (dict(prompt=None), "got neither"),
    (dict(prompt=None, ucf_class="Yo!"), "characters other than"),
    (dict(gamma=-0.5), r"gamma \(γ, sec. 3.5\)"),
    (dict(r_image=1.5), "shared_ratio"),
    (dict(smoothing=-1.0), "threshold"),
    (dict(steps=0), "steps must be an int >= 1"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(height=0), "height must be an int >= 1"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
    (dict(fps=0), "fps must be positive"),
    (dict(dtype="float64"), "dtype must be one of float32, float16, bfloat16"),
    (dict(device="gpu7"), "device 'gpu7' is not usable here"),
    (dict(out="clip.avi"), "not 'clip.avi'"),
    (dict(selector="piecewise:1"), "expected 4 numbers"),
])
def test_bad_settings_are_refused_before_any_model_loads(changes, match, unchecked):
    with pytest.raises((ValueError, TypeError), match=match):
        settings("no/such/folder", **changes)


def test_model_folders_are_absolute_and_mirror_the_pipeline():
    assert [field.name for field in dataclasses.fields(ModelFolders)] == ["pipeline", *KINDS]
    folders = ModelFolders(vae="rel/vae")
    assert folders.vae.endswith("/rel/vae") and folders.vae.startswith("/") and folders.pipeline is None
    with pytest.raises(ValueError, match="no model folders"):
        ModelFolders()


def test_a_record_gives_back_its_settings_with_changes(tmp_path):
    run = SampleSettings(ModelFolders(pipeline="p"), ucf_class="YoYo", device="cpu")
    record = {"settings": dataclasses.asdict(run)}
    again = SampleSettings.from_record(record, prompt="someone", models={"vae": "v"}, out="b.gif")
    assert again.prompt == "someone" and again.ucf_class is None and again.out == "b.gif"
    assert again.models.vae.endswith("/v") and again.models.pipeline == run.models.pipeline
    with pytest.raises(ValueError, match="settings this version of jvid does not know: colour"):
        SampleSettings.from_record({"settings": {**record["settings"], "colour": 1}})
    with pytest.raises(ValueError, match="no settings"):
        SampleSettings.from_record({"plan": []})
