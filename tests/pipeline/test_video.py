"""Video files (GIF, and MP4 read back with PyAV as a player would) and their JSON sidecars."""

from __future__ import annotations

import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from jvid.video import check_video_path, even_sized, read_sidecar, sidecar_path, to_uint8, write_sidecar, write_video


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


def read_mp4(path) -> tuple[np.ndarray, str, float]:
    """The decoded frames (f, H, W, 3), the codec and the frame rate of an .mp4, as a player sees them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pixels = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return pixels, stream.codec_context.name, float(stream.average_rate)


def test_an_mp4_plays_back_every_frame(tmp_path):
    path = write_video(frames(), tmp_path / "clip.mp4", fps=8)
    pixels, codec, fps = read_mp4(path)
    assert pixels.shape == (5, 12, 16, 3) and codec == "h264" and fps == 8
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)), np.linspace(0, 255, 5), atol=3)


def test_odd_sized_frames_are_padded_by_their_last_row_and_column(tmp_path):
    odd = frames(count=2, size=11)[:, :, :13]  # 11 x 13
    odd[:, -1], odd[:, :, -1] = 1.0, 0.0  # a white last row, then a black last column
    pixels, _, _ = read_mp4(write_video(odd, tmp_path / "odd.mp4"))
    assert pixels.shape == (2, 12, 14, 3)
    assert pixels[:, -2:, :-4].min() > 200 and pixels[:, :-4, -2:].max() < 50
    assert even_sized(to_uint8(odd)).shape == (2, 12, 14, 3)
    assert even_sized(to_uint8(frames())).shape == (5, 12, 16, 3)


def test_without_h264_the_mp4_is_mpeg4(tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libx264"})
    pixels, codec, _ = read_mp4(write_video(frames(), tmp_path / "clip.mp4"))
    assert codec == "mpeg4" and pixels.shape == (5, 12, 16, 3)


def test_mp4_without_pyav_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    with pytest.raises(ImportError, match=r'pip install "jvid\[video\]"'):
        write_video(frames(), tmp_path / "clip.mp4")
    with pytest.raises(ImportError, match="PyAV"):
        check_video_path("clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()
    assert check_video_path("clip.gif").name == "clip.gif"  # GIFs need only Pillow


@pytest.mark.parametrize(("video", "name", "error", "match"), [
    (frames(), "clip.avi", ValueError, ".mp4 or .gif, not 'clip.avi'"),
    (frames()[..., :2], "clip.gif", ValueError, "height, width, 3"),
    (frames() * 2, "clip.gif", ValueError, r"\[0, 1\]"),
    (frames().astype(np.int32), "clip.gif", TypeError, "uint8 or floats"),
])
def test_bad_frames_and_names_are_refused(tmp_path, video, name, error, match):
    with pytest.raises(error, match=match):
        write_video(video, tmp_path / name)


def test_the_sidecar_sits_beside_its_video_and_round_trips(tmp_path):
    record = {"settings": {"prompt": "a person apply eye makeup", "steps": 4, "smoothing": 0.0, "height": None},
              "plan": [0, 0, 1, 0], "seed": 2**64 - 1}
    path = write_sidecar(tmp_path / "clip.mp4", record)
    assert path == tmp_path / "clip.mp4.json" == sidecar_path(tmp_path / "clip.mp4")
    assert read_sidecar(path) == record
    assert sidecar_path("clip.gif").name == "clip.gif.json"  # an .mp4 and a .gif of one name keep their own


@pytest.mark.parametrize(("record", "error", "match"), [
    ({"dtype": torch.float16}, TypeError, "not JSON serializable"),
    ({"gamma": float("nan")}, ValueError, "JSON compliant"),
    ([1, 2], TypeError, "mapping"),
])
def test_a_sidecar_holds_json_values_only(tmp_path, record, error, match, unchecked):
    with pytest.raises(error, match=match):
        write_sidecar(tmp_path / "clip.mp4", record)


def test_unreadable_sidecars_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sidecar file"):
        read_sidecar(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json' is not valid JSON"):
        read_sidecar(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_sidecar(tmp_path / "list.json")
