import json
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from jvid.cli import main
from jvid.video import read_sidecar, sidecar_path


def test_demo_mixes_two_models_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "6", "--frames", "3", "--batch", "1", "--seed", "5", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    saved = torch.load(out / "latents.pt")
    assert saved["latents"].shape == (1, 3, 4, 8, 8) and torch.isfinite(saved["latents"]).all()
    assert len(report["plan"]) == 6 and report["plan"][0] == 0  # Table 6 starts with the video model
    assert report["video_steps"] + report["image_steps"] == 6
    assert "plan (V = video model, I = image model)" in capsys.readouterr().out
    # Same seed, same run: the report's plan and the latents repeat exactly.
    assert main([*args[:-1], str(tmp_path / "again")]) == 0
    assert torch.equal(torch.load(tmp_path / "again" / "latents.pt")["latents"], saved["latents"])


@pytest.mark.parametrize(
    "flag, value, message",
    [("--gamma", "-1", "gamma"), ("--r-image", "1.5", "shared_ratio"), ("--steps", "0", "num_steps"),
     ("--smoothing", "-2", "threshold")],
)
def test_demo_bad_values_give_one_line_errors(flag, value, message, tmp_path, capsys, unchecked):
    assert main(["demo", "--steps", "2", flag, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jvid demo: error:") and message in err and "\n" not in err


def test_unknown_preset_is_rejected_by_the_parser(capsys):
    assert main(["demo", "--preset", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jvid demo: error: argument --preset: invalid choice") and "\n" not in err


def sample_args(folder, out, *flags: str, prompt=("--prompt", "a person apply eye makeup")) -> list[str]:
    """`jvid sample` over the tiny pipeline in `folder`: 3 frames, 2 steps on the CPU, writing `out`."""
    return ["sample", "--pipeline", str(folder), *prompt, "--num-frames", "3", "--steps", "2", "--device", "cpu",
            "--out", str(out), *flags]


def decoded(path) -> np.ndarray:
    """An .mp4's frames (f, H, W, 3) as a player decodes them."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_sample_writes_a_playable_mp4_and_its_sidecar(pipeline_folder, tmp_path, capsys):
    out = tmp_path / "videos" / "clip.mp4"
    assert main(sample_args(pipeline_folder, out, "--seed", "3", "--fps", "8")) == 0
    assert decoded(out).shape == (3, 16, 16, 3)
    record = read_sidecar(tmp_path / "videos" / "clip.mp4.json")
    assert record["settings"]["seed"] == 3 and record["settings"]["fps"] == 8
    assert record["settings"]["models"]["pipeline"] == str(pipeline_folder)
    assert record["prompt"] == "a person apply eye makeup" and record["video"] == record["videos"][0]
    assert len(record["plan"]) == len(record["timesteps"]) == 2 and record["plan"][0] == 0
    printed = capsys.readouterr()
    assert "plan (V = video model, I = image model): V" in printed.out and f"wrote {out}" in printed.out
    assert "jvid: 100%" in printed.err  # the sampler's progress bar


def test_a_sidecar_makes_its_video_again_bit_for_bit(pipeline_folder, tmp_path):
    clip, again = tmp_path / "clip.mp4", tmp_path / "again.mp4"
    assert main(sample_args(pipeline_folder, clip, "--gamma", "0.5", prompt=("--ucf-class", "YoYo"))) == 0
    assert main(["sample", "--from-sidecar", str(sidecar_path(clip)), "--out", str(again)]) == 0
    assert again.read_bytes() == clip.read_bytes()
    first, second = read_sidecar(sidecar_path(clip)), read_sidecar(sidecar_path(again))
    assert first["prompt"] == second["prompt"] and first["prompt"].endswith(" yo yo")
    assert second["settings"] == {**first["settings"], "out": str(again)}


def test_sample_writes_one_gif_per_video_of_a_batch(pipeline_folder, tmp_path):
    assert main(sample_args(pipeline_folder, tmp_path / "clip.gif", "--batch", "2", "--first-index", "4")) == 0
    for index in (4, 5):
        with Image.open(tmp_path / f"clip-{index}.gif") as gif:
            assert gif.n_frames == 3 and gif.size == (16, 16)
        assert read_sidecar(tmp_path / f"clip-{index}.gif.json")["video"]["index"] == index


def test_sample_from_separate_folders_with_a_wider_video_clip(pipeline_folder, wide_pipeline_folder, tmp_path):
    folders = ["--image-unet", pipeline_folder / "image_unet", "--vae", pipeline_folder / "vae",
               "--text-encoder", pipeline_folder / "text_encoder", "--tokenizer", pipeline_folder / "tokenizer",
               "--scheduler", pipeline_folder / "scheduler", "--video-unet", wide_pipeline_folder / "video_unet",
               "--video-text-encoder", wide_pipeline_folder / "video_text_encoder",
               "--video-tokenizer", wide_pipeline_folder / "video_tokenizer"]
    args = sample_args(pipeline_folder, tmp_path / "clip.gif", "--selector", "piecewise:0,0.5,0.5,0.5", *folders)
    assert main([str(arg) for arg in args[:1] + args[3:]]) == 0  # no --pipeline
    record = read_sidecar(tmp_path / "clip.gif.json")
    assert record["unets"] == ["video_unet", "image_unet"]
    assert record["settings"]["models"]["video_text_encoder"] == str(wide_pipeline_folder / "video_text_encoder")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("jvid sample: error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("flags", "message"), [
    (["--pipeline", "{tmp}/nothing"], "pipeline folder '{tmp}/nothing' does not exist"),
    (["--pipeline", "{tmp}"], "has no model_index.json"),
    (["--image-unet", "{tmp}"], "image_unet folder '{tmp}' has no config.json"),
    (["--image-unet", "{pipe}/video_unet"], "holds UNet3DConditionModel; expected UNet2DConditionModel"),
    (["--vae", "{pipe}/text_encoder"], "vae folder '{pipe}/text_encoder' holds CLIPTextModel; expected AutoencoderKL"),
    (["--tokenizer", "{pipe}/text_encoder"], "has no tokenizer_config.json"),
    (["--selector", "fancy"], "unknown selector 'fancy'"),
    (["--selector", "piecewise:0.2,0.7"], "expected 4 numbers t_v,t_e,p_e,p_f"),
    (["--selector", "no_such_module_xyz:Policy"], "no module named 'no_such_module_xyz'"),
    (["--selector", "jvid.samplers:Policy"], "has no class 'Policy'"),
    (["--selector", "collections:OrderedDict"], "is not a Selector"),
    (["--gamma", "-1"], "gamma"),
    (["--r-image", "1.5"], "r_image: shared_ratio r must be a real number in [0, 1], got 1.5"),
    (["--r-video", "-0.1"], "r_video: shared_ratio"),
    (["--smoothing", "-2"], "smoothing: threshold c must be non-negative"),
    (["--steps", "0"], "steps must be an int >= 1"),
    (["--height", "15"], "height=15 must be divisible by the VAE scale factor 2"),
    (["--ucf-class", "YoYo"], "exactly one of prompt and ucf_class, got both"),
    (["--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
    (["--gamma", "lots"], "argument --gamma: invalid float value: 'lots'"),
    (["--out", "{tmp}/clip.avi"], "a video file name ends in .mp4 or .gif, not 'clip.avi'"),
    (["--device", "gpu7"], "device 'gpu7' is not usable here"),
    (["--compile"], "compile_mode compiles the UNets of the CUDA-graph runner: set cuda_graphs too"),
    (["--cuda-graphs", "--compile", "fast"], "argument --compile: invalid choice: 'fast'"),
])
def test_sample_bad_input_gives_one_line_errors(flags, message, pipeline_folder, tmp_path, capsys, unchecked):
    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, pipe=pipeline_folder)

    assert main(sample_args(pipeline_folder, tmp_path / "clip.mp4", *map(fill, flags))) == 2
    assert fill(message) in one_line_error(capsys)


def test_sample_needs_a_prompt_models_and_a_readable_sidecar(pipeline_folder, tmp_path, capsys):
    assert main(["sample", "--pipeline", str(pipeline_folder), "--out", str(tmp_path / "a.gif")]) == 2
    assert "got neither" in one_line_error(capsys)
    assert main(["sample", "--prompt", "a person", "--out", str(tmp_path / "a.gif")]) == 2
    assert "no model folders" in one_line_error(capsys)
    assert main(["sample", "--from-sidecar", str(tmp_path / "none.json"), "--out", str(tmp_path / "a.gif")]) == 2
    assert "no sidecar file" in one_line_error(capsys)
    assert main(["sample", "--from-sidecar", str(tmp_path / "none.json")]) == 2
    assert "--from-sidecar needs --out" in one_line_error(capsys)


def test_sample_without_pyav_says_how_to_install_it_before_loading(pipeline_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    assert main(sample_args(pipeline_folder, tmp_path / "clip.mp4")) == 2
    assert 'pip install "jvid[video]"' in one_line_error(capsys)
