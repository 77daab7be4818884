"""Loading one pipeline component from a local folder, with the class that the folder's config names.

Folders are those `save_pretrained` writes (a diffusers model or scheduler, a transformers CLIP text encoder or
tokenizer). Nothing is fetched from the network; a folder that is missing, unreadable or of the wrong kind is a
one-line error naming the folder and what was expected there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, ModelMixin, SchedulerMixin, UNet2DConditionModel, UNet3DConditionModel, \
    UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass(frozen=True)
class _Kind:
    """Where a folder names its class (`key` in the JSON file `config`) and the classes a role accepts by name;
    `classes` None accepts any diffusers scheduler."""

    config: str
    key: str
    classes: Mapping[str, type] | None


_TEXT_ENCODER = _Kind("config.json", "model_type", {"clip_text_model": CLIPTextModel})
_TOKENIZER = _Kind("tokenizer_config.json", "tokenizer_class",
                   {"CLIPTokenizer": CLIPTokenizer, "CLIPTokenizerFast": CLIPTokenizer})
KINDS: dict[str, _Kind] = {
    "video_unet": _Kind("config.json", "_class_name",
                        {"UNet3DConditionModel": UNet3DConditionModel, "UNetMotionModel": UNetMotionModel}),
    "image_unet": _Kind("config.json", "_class_name", {"UNet2DConditionModel": UNet2DConditionModel}),
    "vae": _Kind("config.json", "_class_name", {"AutoencoderKL": AutoencoderKL}),
    "text_encoder": _TEXT_ENCODER,
    "tokenizer": _TOKENIZER,
    "scheduler": _Kind("scheduler_config.json", "_class_name", None),
    "video_text_encoder": _TEXT_ENCODER,
    "video_tokenizer": _TOKENIZER,
}
"""The components of a JVIDPipeline by role, in the pipeline's order."""


def load_component(role: str, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Any:
    """The `role` component (a key of `KINDS`) saved in `folder`, loaded from local files only; networks in `dtype`
    (None: as the library loads them by default)."""
    if role not in KINDS:
        raise ValueError(f"unknown component {role!r}; the components are {', '.join(KINDS)}")
    kind = KINDS[role]
    config = read_config(folder, kind.config, what=role)
    cls = _class_for(kind, config.get(kind.key))
    if cls is None:
        raise ValueError(f"{role} folder {str(folder)!r} holds {_describe(config)}; expected {_expected(kind)}")
    options = {} if dtype is None or not issubclass(cls, torch.nn.Module) else \
        {"torch_dtype" if issubclass(cls, ModelMixin) else "dtype": dtype}  # diffusers' and transformers' names
    try:
        return cls.from_pretrained(folder, local_files_only=True, **options)
    except (OSError, ValueError, RuntimeError) as error:  # unreadable weights, configs that do not fit the class
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise ValueError(f"cannot load {role} from {str(folder)!r}: {lines[0]}") from error


def read_config(folder: str | os.PathLike, filename: str, what: str) -> dict[str, Any]:
    """The JSON object in `folder/filename`; errors name the folder and `what` it should have held."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist or is not a folder")
    if not (path / filename).is_file():
        raise ValueError(f"{what} folder {str(folder)!r} has no {filename}; expected a folder written by "
                         f"save_pretrained")
    try:
        config = json.loads((path / filename).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} folder {str(folder)!r}: {filename} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{what} folder {str(folder)!r}: {filename} holds a {type(config).__name__}, not an object")
    return config


def _class_for(kind: _Kind, name: Any) -> type | None:
    if not isinstance(name, str):
        return None
    if kind.classes is not None:
        return kind.classes.get(name)
    cls = getattr(diffusers, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, SchedulerMixin) else None


def _expected(kind: _Kind) -> str:
    if kind.classes is None:
        return "a diffusers scheduler"
    return " or ".join(dict.fromkeys(cls.__name__ for cls in kind.classes.values()))


def _describe(config: dict[str, Any]) -> str:
    """What a config says it is: a diffusers class, a transformers architecture or model type, a tokenizer class."""
    architectures = config.get("architectures") or [None]
    for name in (config.get("_class_name"), architectures[0], config.get("model_type"), config.get("tokenizer_class")):
        if isinstance(name, str):
            return name
    return "a config that names no class"


__all__ = ["KINDS", "load_component", "read_config"]
