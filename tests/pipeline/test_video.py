"""Video files and their JSON sidecars."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from jvid.video import to_uint8, write_sidecar, write_video


def frames(count: int = 5, size: int = 12) -> np.ndarray:
    """Float frames in [0, 1] whose brightness rises from frame to frame, so each frame differs."""
    ramp = np.linspace(0, 1, count, dtype=np.float32)[:, None, None, None]
    return np.broadcast_to(ramp, (count, size, size + 4, 3)).copy()


@pytest.mark.parametrize("kind", ["float", "uint8", "tensor"])
def test_a_gif_has_every_frame(tmp_path, kind):
    video = {"float": frames(), "uint8": to_uint8(frames()), "tensor": torch.from_numpy(frames())}[kind]
    path = write_video(video, tmp_path / "clip.gif", fps=20)
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.size == (16, 12) and gif.info["duration"] == 50
        grey = [np.asarray(frame.convert("RGB"))[0, 0, 0] for frame in ImageSequence.Iterator(gif)]
    np.testing.assert_allclose(grey, np.round(np.linspace(0, 255, 5)), atol=2)


def test_float_frames_scale_to_0_255():
    assert to_uint8(np.array([[[[0.0, 0.5, 1.0]]]])).tolist() == [[[[0, 128, 255]]]]


def test_mp4_without_a_backend_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(RuntimeError, match="pip install imageio imageio-ffmpeg.*pip install av"):
        write_video(frames(), tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


@pytest.mark.parametrize(("video", "name", "error", "match"), [
    (frames(), "clip.avi", ValueError, ".gif or .mp4"),
    (frames()[..., :2], "clip.gif", ValueError, "height, width, 3"),
    (frames() * 2, "clip.gif", ValueError, r"\[0, 1\]"),
    (frames().astype(np.int32), "clip.gif", TypeError, "uint8 or floats"),
])
def test_bad_frames_and_names_are_refused(tmp_path, video, name, error, match):
    with pytest.raises(error, match=match):
        write_video(video, tmp_path / name)


def test_the_sidecar_round_trips(tmp_path):
    settings = {"prompt": "a person apply eye makeup", "num_inference_steps": 4, "guidance_scale": 2.0,
                "smoothing_threshold": None, "noise_r_video": 0.25}
    path = write_sidecar(tmp_path / "clip.json", settings, seed=7, plan=[0, 0, 1, 0])
    assert json.loads(path.read_text()) == {"settings": settings, "seed": 7, "plan": [0, 0, 1, 0]}


def test_sidecar_stores_other_objects_as_repr(tmp_path):
    path = write_sidecar(tmp_path / "clip.json", {"dtype": torch.float16}, seed=None, plan=[])
    assert json.loads(path.read_text())["settings"]["dtype"] == "torch.float16"
    with pytest.raises(TypeError, match="seed"):
        write_sidecar(tmp_path / "bad.json", {}, seed="7", plan=[])
