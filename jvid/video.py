"""Writing sampled videos to files, GIF through Pillow and MP4 through PyAV, with a JSON sidecar beside each."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".gif")
MP4_CODECS = ("libx264", "mpeg4")
"""H.264 where PyAV's ffmpeg has it, else MPEG-4 part 2, which every ffmpeg build can encode."""


def write_video(frames: Any, path: str | os.PathLike, fps: float = 10) -> Path:
    """Writes frames (f, H, W, 3), floats in [0, 1] or uint8, as a looping .gif or a yuv420p .mp4; returns the path.

    yuv420p, the pixel format every player reads, stores colour at half resolution and so needs an even width and
    height: an .mp4 of odd-sized frames repeats their last row or column once to make them even.
    """
    path = check_video_path(path)
    pixels = to_uint8(frames)
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(frame) for frame in pixels]
        # GIF delays are whole milliseconds; disposal 2 keeps frames from piling up over each other.
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0,
                       disposal=2)
    else:
        _write_mp4(even_sized(pixels), path, fps)
    return path


def check_video_path(path: str | os.PathLike) -> Path:
    """`path` as a Path when `write_video` can write it: a .mp4 or .gif name, with PyAV installed for .mp4."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"a video file name ends in {' or '.join(VIDEO_SUFFIXES)}, not {path.name!r}")
    if path.suffix.lower() == ".mp4":
        _import_av()
    return path


def to_uint8(frames: Any) -> np.ndarray:
    """Frames (f, H, W, 3) as uint8 pixels: uint8 arrays pass through, floats in [0, 1] are scaled and rounded."""
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"frames must be a non-empty (frames, height, width, 3) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"frames must be uint8 or floats in [0, 1], got dtype {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"float frames must lie in [0, 1], got values in [{array.min()}, {array.max()}]")
    return np.round(array * 255).astype(np.uint8)


def even_sized(pixels: np.ndarray) -> np.ndarray:
    """Pixels (f, H, W, 3) with the last row and column repeated where H or W is odd."""
    _, height, width, _ = pixels.shape
    return np.pad(pixels, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError('writing .mp4 needs PyAV: pip install "jvid[video]" (or pip install av); .gif needs only '
                          'Pillow') from None
    return av


def _write_mp4(pixels: np.ndarray, path: Path, fps: float) -> None:
    av = _import_av()
    codec = next(name for name in MP4_CODECS if name in av.codecs_available)
    # faststart puts the index first, so browsers play the file while it downloads.
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = pixels.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # visually near-lossless
        else:
            stream.codec_context.qscale = 2  # MPEG-4's finest practical quantiser
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def sidecar_path(video: str | os.PathLike) -> Path:
    """Where the sidecar of `video` goes: its name with .json added, so clip.mp4 and clip.gif keep their own."""
    video = Path(video)
    return video.with_name(video.name + ".json")


def write_sidecar(video: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Writes `record` (JSON values only) as the sidecar of `video`; returns the sidecar's path."""
    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a mapping of names to JSON values, got {type(record).__name__}")
    path = sidecar_path(video)
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The record of a sidecar written by `write_sidecar`."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no sidecar file {str(path)!r}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"sidecar {str(path)!r} is not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"sidecar {str(path)!r} holds a {type(record).__name__}, not a JSON object")
    return record


__all__ = ["VIDEO_SUFFIXES", "check_video_path", "even_sized", "read_sidecar", "sidecar_path", "to_uint8",
           "write_sidecar", "write_video"]
