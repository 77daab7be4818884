"""The noise z that the reverse chain adds back at each step: i.i.d., or shared across frames (paper sec. 3.5)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from jvid.shapes import Latents

Shape = tuple[int, int, int, int, int]
Device = torch.device | str | None


@runtime_checkable
class NoiseGenerator(Protocol):
    """Draws standard-normal-marginal noise z in the `(b, f, c, h, w)` layout; randomness only via `generator`."""

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> Latents: ...


class IndependentNoise:
    """z ~ N(0, I): every element independent, the plain DDPM noise of eq. 5."""

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> Latents:
        """Draws a fresh z of `shape`, on `generator`'s device first so a CPU generator gives the same z anywhere."""
        shape = _check_shape(shape)
        _check_dtype(dtype)
        return _move(_randn(shape, generator, device, dtype), device)

    def __repr__(self) -> str:
        return "IndependentNoise()"


class CorrelatedNoise:
    """Eq. 8-9 with shared ratio r: z^f = √r·z_shared + √(1−r)·z_ind^f, each frame N(0, I), frames correlated by r."""

    def __init__(self, shared_ratio: float) -> None:
        valid = isinstance(shared_ratio, numbers.Real) and not isinstance(shared_ratio, bool)
        if not valid or not 0.0 <= shared_ratio <= 1.0:  # NaN fails the range test too
            raise ValueError(f"shared_ratio r must be a real number in [0, 1], got {shared_ratio!r}")
        self.shared_ratio = float(shared_ratio)

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> Latents:
        """Draws z_shared of shape (b, 1, c, h, w), then z_ind of `shape`; a part whose weight is 0 is not drawn."""
        shape = _check_shape(shape)
        _check_dtype(dtype)
        r = self.shared_ratio
        shared_shape = (shape[0], 1, *shape[2:])
        # At r = 0 or 1 one draw suffices; drawing it exactly as IndependentNoise does keeps the two bit-identical.
        if r == 0.0:
            return _move(_randn(shape, generator, device, dtype), device)
        if r == 1.0:
            return _move(_randn(shared_shape, generator, device, dtype).expand(shape).contiguous(), device)
        work = torch.promote_types(dtype, torch.float32)
        shared = _randn(shared_shape, generator, device, work)
        independent = _randn(shape, generator, device, work)
        z = independent.mul_(math.sqrt(1.0 - r)).add_(shared, alpha=math.sqrt(r))
        return _move(z.to(dtype), device)

    def __repr__(self) -> str:
        return f"CorrelatedNoise(shared_ratio={self.shared_ratio!r})"


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: Device, dtype: torch.dtype) -> Tensor:
    """Standard normal draw on the generator's device when there is a generator, else on `device`."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype)


def _move(z: Tensor, device: Device) -> Tensor:
    return z if device is None else z.to(device)


def _check_shape(shape: Sequence[int]) -> Shape:
    dims = tuple(shape)
    if len(dims) != 5 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"shape must be 5 positive ints (b, f, c, h, w), got {shape!r}")
    return dims  # type: ignore[return-value]


def _check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise TypeError(f"noise dtype must be a floating-point dtype, got {dtype}")
