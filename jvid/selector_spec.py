"""Selectors named by a line of text, as `jvid sample --selector` takes them (paper sec. 3.4, 4.3, Table 6)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from jvid.samplers import TABLE6, FixedSelector, PiecewiseSelector, Selector

SELECTOR_FORMS = ("auto", "video", "image", "64 | 128 | 256", "table6:RESOLUTION", "piecewise:t_v,t_e,p_e,p_f",
                  "package.module:ClassName")
"""The forms `parse_selector` reads."""


def parse_selector(spec: str, unets: Sequence[str]) -> Selector | None:
    """The selector `spec` names for a pipeline with these UNets (video first); None for "auto", the pipeline's
    default. Forms: "video"/"image" (that model alone), "64"/"128"/"256" or "table6:R" (Table 6's P_V), "piecewise:
    t_v,t_e,p_e,p_f" (sec. 4.3), or "package.module:ClassName", imported and made with no arguments."""
    if not isinstance(spec, str):
        raise TypeError(f"selector must be a str, got {spec!r}")
    if spec == "auto":
        return None
    if spec in ("video", "image"):
        return FixedSelector(_unet_index(spec, f"{spec}_unet", unets))
    kind, colon, arguments = spec.partition(":")
    if spec.isdigit() or kind == "table6":
        resolution = arguments if kind == "table6" else spec
        if not resolution.isdigit() or int(resolution) not in TABLE6:
            raise ValueError(f"selector {spec!r}: Table 6 has presets for {', '.join(map(str, TABLE6))}")
        return PiecewiseSelector.table6(int(resolution), *_both(spec, unets))
    if kind == "piecewise":
        return PiecewiseSelector(*_floats(spec, arguments, ("t_v", "t_e", "p_e", "p_f")), *_both(spec, unets))
    if colon and kind and arguments:
        return _import_selector(spec, kind, arguments)
    raise ValueError(f"unknown selector {spec!r}; expected one of: {', '.join(SELECTOR_FORMS)}")


def _unet_index(spec: str, role: str, unets: Sequence[str]) -> int:
    if role not in unets:
        raise ValueError(f"selector {spec!r} needs the {role}, but the pipeline has only the {' and '.join(unets)}")
    return list(unets).index(role)


def _both(spec: str, unets: Sequence[str]) -> tuple[int, int]:
    """(video, image) denoiser indices of a selector that mixes the two."""
    return _unet_index(spec, "video_unet", unets), _unet_index(spec, "image_unet", unets)


def _floats(spec: str, text: str, names: Sequence[str]) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != len(names):
        raise ValueError(f"selector {spec!r}: expected {len(names)} numbers {','.join(names)} after the colon")
    return values


def _import_selector(spec: str, module_name: str, class_name: str) -> Selector:
    """An instance of `module_name.class_name`, made with no arguments; it must have select(step, generator)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name + ".").startswith(error.name + "."):
            raise  # the module exists but one of its own imports failed: the user's traceback says more
        raise ValueError(f"selector {spec!r}: no module named {module_name!r} (is it installed or on "
                         f"PYTHONPATH?)") from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise ValueError(f"selector {spec!r}: module {module_name!r} has no class {class_name!r}")
    try:
        selector = cls()
    except TypeError as error:
        raise ValueError(f"selector {spec!r}: {class_name} cannot be made with no arguments ({error})") from None
    if not isinstance(selector, Selector):
        raise ValueError(f"selector {spec!r}: {class_name} is not a Selector; it needs a method "
                         f"select(step, generator) -> int")
    return selector


__all__ = ["SELECTOR_FORMS", "parse_selector"]
