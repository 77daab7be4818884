"""The device a kernel launches on: Triton launches on the current CUDA device, whatever device the tensors it is
given live on, so every launcher makes its tensors' device current first. A process may hold tensors on several
GPUs (one model a device, or a sampler on a device other than the default)."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


def on_device_of(tensor: Tensor) -> contextlib.AbstractContextManager:
    """`tensor`'s CUDA device made current for the block; nothing for CPU tensors (Triton's interpreter)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()
