"""In-place replacement of a network's submodules, the step shared by jvid's network rewrites."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_modules(model: nn.Module, matches: Callable[[nn.Module], bool],
                    replacement: Callable[[nn.Module], nn.Module]) -> int:
    """Sets every submodule of `model` for which `matches` holds to `replacement` of it; returns how many."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if matches(child)]
    for parent, name, child in targets:
        setattr(parent, name, replacement(child))
    return len(targets)
