"""Sampling videos from local model folders: the settings of a run, the videos it makes and a sidecar for each.

A run of seed s draws every random choice from its own stream of s (numpy's `SeedSequence` with a spawn key):
the prompt's subject from stream (0,), the plan from (1,) and the noise of video i from (2, i). So video i does not
depend on which batch makes it: `batch=4` gives the videos 0..3 that four runs with `batch=1` and
`first_index=0..3` give, up to the floating-point rounding of batched network calls.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from jvid._checks import finite_real, int_at_least
from jvid.models.text import split_class_name, ucf101_prompt
from jvid.noise import CorrelatedNoise
from jvid.pipeline import JVIDPipeline
from jvid.postproc import TemporalLatentSmoother
from jvid.samplers.graphed import COMPILE_MODES
from jvid.selector_spec import parse_selector
from jvid.video import check_video_path, write_sidecar, write_video

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPT_STREAM, PLAN_STREAM, VIDEO_STREAM = 0, 1, 2


def default_device() -> str:
    """The first GPU where there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelFolders:
    """Local folders of a JVIDPipeline (see `JVIDPipeline.from_folders`), kept as absolute path strings."""

    pipeline: str | os.PathLike | None = None
    video_unet: str | os.PathLike | None = None
    image_unet: str | os.PathLike | None = None
    vae: str | os.PathLike | None = None
    text_encoder: str | os.PathLike | None = None
    tokenizer: str | os.PathLike | None = None
    scheduler: str | os.PathLike | None = None
    video_text_encoder: str | os.PathLike | None = None
    video_tokenizer: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        for name, folder in asdict(self).items():
            if folder is not None and not isinstance(folder, (str, os.PathLike)):
                raise TypeError(f"the {name} folder must be a path, got {folder!r}")
            if folder is not None:
                object.__setattr__(self, name, os.path.abspath(folder))
        if not any(asdict(self).values()):
            raise ValueError("no model folders: give a pipeline folder, or folders for the UNets, vae, "
                             "text_encoder, tokenizer and scheduler")

    def load(self, dtype: torch.dtype | None = None) -> JVIDPipeline:
        return JVIDPipeline.from_folders(**asdict(self), dtype=dtype)


@dataclass(frozen=True)
class SampleSettings:
    """Everything that determines a run: the models, the prompt (`prompt`, or a UCF-101 class turned into the
    sec. 4.1 prompt), the chain (eq. 4 guidance g, the selector, γ of sec. 3.5, r_v/r_i of eq. 8-9, threshold c of
    sec. 3.6, where 0 switches smoothing off), the seed and the videos' indices, and the output file."""

    models: ModelFolders
    out: str = "out/sample.mp4"
    prompt: str | None = None
    ucf_class: str | None = None
    num_frames: int = 16
    height: int | None = None
    width: int | None = None
    steps: int = 50
    guidance_scale: float = 2.0
    selector: str = "auto"
    gamma: float = 1.0
    r_video: float = 0.0
    r_image: float = 0.0
    smoothing: float = 2.0
    seed: int = 0
    first_index: int = 0
    batch: int = 1
    device: str = field(default_factory=default_device)
    dtype: str = "float32"
    fps: float = 10.0
    cuda_graphs: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.models, ModelFolders):
            raise TypeError(f"models must be ModelFolders, got {type(self.models).__name__}")
        if (self.prompt is None) == (self.ucf_class is None):
            raise ValueError(f"give exactly one of prompt and ucf_class, got {'both' if self.prompt else 'neither'}")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be a str, got {self.prompt!r}")
        if self.ucf_class is not None:
            split_class_name(self.ucf_class)
        for name in ("num_frames", "steps", "batch"):
            int_at_least(name, getattr(self, name), 1)
        for name in ("height", "width"):  # None: the pipeline's default size
            if getattr(self, name) is not None:
                int_at_least(name, getattr(self, name), 1)
        for name in ("seed", "first_index"):
            int_at_least(name, getattr(self, name), 0)
        finite_real("guidance_scale", self.guidance_scale)
        if finite_real("gamma", self.gamma) < 0:
            raise ValueError(f"gamma (γ, sec. 3.5) scales the noise and must be >= 0, got {self.gamma!r}")
        if finite_real("fps", self.fps) <= 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")
        for name, check in (("r_video", CorrelatedNoise), ("r_image", CorrelatedNoise),
                            ("smoothing", TemporalLatentSmoother)):
            _check_with(name, check, getattr(self, name))  # the classes that take r and c validate them
        parse_selector(self.selector, ("video_unet", "image_unet"))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_device(self.device)
        if not isinstance(self.cuda_graphs, bool):
            raise TypeError(f"cuda_graphs must be a bool, got {self.cuda_graphs!r}")
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
            if not self.cuda_graphs:
                raise ValueError("compile_mode compiles the UNets of the CUDA-graph runner: set cuda_graphs too")
        check_video_path(self.out)

    @classmethod
    def from_record(cls, record: dict[str, Any], **changes: Any) -> SampleSettings:
        """The settings of a sidecar record with `changes` applied: `models` is a dict of folders that replace the
        stored ones, and a new `prompt` or `ucf_class` replaces both stored ones."""
        stored = record.get("settings")
        if not isinstance(stored, dict) or not isinstance(stored.get("models"), dict):
            raise ValueError("the sidecar holds no settings with models; was it written by jvid sample?")
        unknown = sorted(set(stored) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"the sidecar has settings this version of jvid does not know: {', '.join(unknown)}")
        stored = dict(stored)
        if "prompt" in changes or "ucf_class" in changes:
            stored.update(prompt=None, ucf_class=None)
        models = ModelFolders(**{**stored.pop("models"), **changes.pop("models", {})})
        return cls(**{**stored, **changes, "models": models})


def _check_with(name: str, make: Callable[[Any], Any], value: Any) -> None:
    """Raises `make(value)`'s ValueError with `name` in front."""
    try:
        make(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def check_device(device: Any) -> None:
    """Raises ValueError unless `device` names a torch device this machine has."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"device {device!r} is not usable here: {str(error).splitlines()[0]}") from None


def stream_seed(seed: int, *key: int) -> int:
    """The 64-bit seed of stream `key` of run seed `seed`; distinct keys give independent streams."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


def seeded(seed: int) -> torch.Generator:
    """A CPU generator: noise drawn on the CPU is the same on every device."""
    return torch.Generator().manual_seed(seed)


def video_indices(settings: SampleSettings) -> range:
    """The indices of the run's videos: first_index, first_index + 1, ..."""
    return range(settings.first_index, settings.first_index + settings.batch)


def video_seeds(settings: SampleSettings) -> list[int]:
    """The noise seed of each video of the run, from the run's seed and the video's index."""
    return [stream_seed(settings.seed, VIDEO_STREAM, index) for index in video_indices(settings)]


def prompt_of(settings: SampleSettings) -> str:
    """The run's prompt: `prompt`, or the sec. 4.1 prompt of `ucf_class` with its subject drawn from the seed."""
    if settings.prompt is not None:
        return settings.prompt
    return ucf101_prompt(settings.ucf_class, seeded(stream_seed(settings.seed, PROMPT_STREAM)))


def video_paths(settings: SampleSettings) -> list[Path]:
    """`out` for a single video; else out's name with each video's index: clip.mp4 -> clip-0.mp4, clip-1.mp4, ..."""
    out = Path(settings.out)
    if settings.batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index}{out.suffix}") for index in video_indices(settings)]


@dataclass(frozen=True)
class Sampled:
    """The frames of a run, (b, f, H, W, 3) floats in [0, 1], and the record its sidecars hold."""

    frames: Float[np.ndarray, "b f h w c"]
    record: dict[str, Any]


def sample(settings: SampleSettings, progress: bool = True) -> Sampled:
    """Loads the pipeline from `settings.models`, samples `settings.batch` videos of the one prompt, returns them."""
    pipe = settings.models.load(DTYPES[settings.dtype]).to(settings.device)
    selector = parse_selector(settings.selector, [name for name, _ in pipe.unets()])
    prompt = prompt_of(settings)
    seeds = video_seeds(settings)
    plan_seed = stream_seed(settings.seed, PLAN_STREAM)
    output = pipe(prompt=prompt, num_frames=settings.num_frames, height=settings.height, width=settings.width,
                  num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale, selector=selector,
                  gamma=settings.gamma, noise_r_video=settings.r_video, noise_r_image=settings.r_image,
                  smoothing_threshold=settings.smoothing or None, generator=[seeded(s) for s in seeds],
                  plan_generator=seeded(plan_seed), output_type="np", num_videos_per_prompt=settings.batch,
                  progress=progress, cuda_graphs=settings.cuda_graphs, compile_mode=settings.compile_mode)
    height, width = output.frames.shape[2:4]
    record = {
        "settings": asdict(settings),
        "prompt": prompt,
        "selector": repr(selector if selector is not None else pipe.default_selector(height, width)),
        "unets": [name for name, _ in pipe.unets()],
        "frame_size": [int(height), int(width)],
        "plan_seed": plan_seed,
        "plan": output.plan,
        "timesteps": output.timesteps,
        "videos": [{"index": index, "seed": seed, "file": path.name}
                   for index, seed, path in zip(video_indices(settings), seeds, video_paths(settings), strict=True)],
        "environment": environment(settings.device, settings.dtype),
    }
    return Sampled(frames=output.frames, record=record)


def write(sampled: Sampled, settings: SampleSettings) -> list[tuple[Path, Path]]:
    """Writes each video to its path of `video_paths` with its sidecar; returns the (video, sidecar) paths.

    Each sidecar holds the run's record and, under "video", which of the run's videos it describes.
    """
    written = []
    for frames, path, video in zip(sampled.frames, video_paths(settings), sampled.record["videos"], strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(frames, path, fps=settings.fps)
        written.append((path, write_sidecar(path, {**sampled.record, "video": video})))
    return written


def environment(device: str, dtype: str) -> dict[str, Any]:
    """What besides the settings decides the bits of a video: package versions, the device and the dtype."""
    versions = {}
    for package in ("jvid", "torch", "diffusers", "transformers", "numpy", "av", "pillow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    where = torch.device(device)
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else platform.processor() or platform.machine()
    return {"versions": {"python": platform.python_version(), **versions}, "device": device, "device_name": name,
            "dtype": dtype, "torch_threads": torch.get_num_threads()}


__all__ = ["DTYPES", "ModelFolders", "SampleSettings", "Sampled", "prompt_of", "sample",
           "stream_seed", "video_indices", "video_paths", "video_seeds", "write"]
