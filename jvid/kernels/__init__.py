"""Triton kernels for jvid's hot loops, each beside a plain PyTorch reference elsewhere in jvid.

Importing this package imports Triton; with TRITON_INTERPRET=1 set beforehand the kernels run on CPU tensors too.
"""

from jvid.kernels.sampler_step import fused_sampler_step
from jvid.kernels.temporal_smoothing import SUPPORTED_DTYPES, fused_temporal_smoothing, is_interpreted

__all__ = ["SUPPORTED_DTYPES", "fused_sampler_step", "fused_temporal_smoothing", "is_interpreted"]
