"""Writing sampled videos to files (GIF through Pillow, MP4 through imageio-ffmpeg or PyAV) with a JSON sidecar
holding everything needed to make them again."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

def write_video(frames: Any, path: str | os.PathLike, fps: float = 10) -> Path:
    """Writes frames (f, H, W, 3), floats in [0, 1] or uint8, as a looping .gif or an H.264 .mp4; returns the path."""
    path = Path(path)
    pixels = to_uint8(frames)
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in pixels]
        # GIF delays are whole milliseconds; disposal 2 keeps frames from piling up over each other.
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0,
                       disposal=2)
    elif suffix == ".mp4":
        _write_mp4(pixels, path, fps)
    else:
        raise ValueError(f"write_video writes .gif or .mp4 files, not {path.name!r}")
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


def _write_mp4(pixels: np.ndarray, path: Path, fps: float) -> None:
    if _importable("imageio") and _importable("imageio_ffmpeg"):
        import imageio.v2 as imageio

        imageio.mimwrite(path, list(pixels), fps=fps, codec="libx264", macro_block_size=1)
    elif _importable("av"):
        _write_mp4_av(pixels, path, fps)
    else:
        raise RuntimeError("writing .mp4 needs imageio with imageio-ffmpeg (pip install imageio imageio-ffmpeg) or "
                           "PyAV (pip install av); neither is installed. Pillow can write .gif instead.")


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _write_mp4_av(pixels: np.ndarray, path: Path, fps: float) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = pixels.shape[1:3]
        stream.pix_fmt = "yuv420p" if pixels.shape[1] % 2 == 0 and pixels.shape[2] % 2 == 0 else "yuv444p"
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_sidecar(path: str | os.PathLike, settings: Mapping[str, Any], seed: int | None,
                  plan: Sequence[int]) -> Path:
    """Writes {"settings", "seed", "plan"} as JSON to `path` (e.g. next to the video); returns the path.

    Settings must be JSON values; other objects (a selector, a dtype) are stored as their repr.
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping of names to values, got {type(settings).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    record = {"settings": {str(k): v for k, v in settings.items()}, "seed": seed, "plan": [int(k) for k in plan]}
    path = Path(path)
    path.write_text(json.dumps(record, indent=2, default=repr) + "\n")
    return path


__all__ = ["write_sidecar", "write_video"]
