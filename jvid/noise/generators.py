"""The noise z that the reverse chain adds back at each step: i.i.d., or shared across frames (paper sec. 3.5)."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
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


@dataclass(frozen=True)
class NoiseDraw:
    """One draw of eq. 8-9 before its parts are combined: z = √r·z_shared + √(1−r)·z_ind.

    A part whose weight is 0 is None: `independent` (z_ind) is there exactly when r < 1, `shared` (z_shared, one
    frame broadcast over all) exactly when r > 0. `frames` is f, needed by `combined` only when there is no z_ind.
    """

    independent: Float[Tensor, "b f c h w"] | None
    shared: Float[Tensor, "b 1 c h w"] | None
    shared_ratio: float
    frames: int | None = None

    def __post_init__(self) -> None:
        r = _check_ratio(self.shared_ratio)
        if (self.independent is not None) != (r < 1.0):
            raise ValueError(f"z_ind (the independent part) must be given exactly when shared_ratio r < 1, since "
                             f"√(1−r) weighs it; got r = {r!r} and z_ind {_presence(self.independent)}")
        if (self.shared is not None) != (r > 0.0):
            raise ValueError(f"z_shared (the shared part) must be given exactly when shared_ratio r > 0, since √r "
                             f"weighs it; got r = {r!r} and z_shared {_presence(self.shared)}")
        if self.shared is not None and (self.shared.ndim != 5 or self.shared.shape[1] != 1):
            raise ValueError(f"z_shared must have shape (b, 1, c, h, w), got {tuple(self.shared.shape)}")
        if self.independent is not None and self.shared is not None:
            b, _, c, h, w = self.independent.shape
            if self.shared.shape != (b, 1, c, h, w):
                raise ValueError(f"z_shared of shape {tuple(self.shared.shape)} does not match z_ind of shape "
                                 f"{tuple(self.independent.shape)}: it needs (b, 1, c, h, w) = {(b, 1, c, h, w)}")

    def combined(self, dtype: torch.dtype) -> Latents:
        """z of eq. 9 in `dtype`, combined in the parts' dtype on their device (as `sample` returns it)."""
        if self.shared is None:
            return self.independent.to(dtype)  # type: ignore[union-attr]
        if self.independent is None:
            if self.frames is None:
                raise ValueError("a draw with no independent part needs its frame count (frames=) to be combined")
            b, _, c, h, w = self.shared.shape
            return self.shared.expand(b, self.frames, c, h, w).contiguous().to(dtype)
        r = self.shared_ratio
        z = self.independent.mul(math.sqrt(1.0 - r)).add_(self.shared, alpha=math.sqrt(r))
        return z.to(dtype)


class _PartsNoise(ABC):
    """A generator that draws its noise in parts (`_parts`); `sample` combines them, `draw` hands them over."""

    @abstractmethod
    def _parts(self, shape: Shape, generator: torch.Generator | None, device: Device, dtype: torch.dtype) -> NoiseDraw:
        """The parts, on `generator`'s device when there is a generator, else on `device`."""

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
        return _move(self._parts(shape, generator, device, dtype).combined(dtype), device)

    def draw(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseDraw:
        """The same draw as `sample`, from the same generator calls, with its parts moved to `device` uncombined."""
        shape = _check_shape(shape)
        _check_dtype(dtype)
        parts = self._parts(shape, generator, device, dtype)
        independent, shared = (None if z is None else _move(z, device) for z in (parts.independent, parts.shared))
        return replace(parts, independent=independent, shared=shared)


class IndependentNoise(_PartsNoise):
    """z ~ N(0, I): every element independent, the plain DDPM noise of eq. 5."""

    def _parts(self, shape: Shape, generator: torch.Generator | None, device: Device, dtype: torch.dtype) -> NoiseDraw:
        return _independent(shape, generator, device, dtype)

    def __repr__(self) -> str:
        return "IndependentNoise()"


class CorrelatedNoise(_PartsNoise):
    """Eq. 8-9 with shared ratio r: z^f = √r·z_shared + √(1−r)·z_ind^f, each frame N(0, I), frames correlated by r."""

    def __init__(self, shared_ratio: float) -> None:
        self.shared_ratio = _check_ratio(shared_ratio)

    def _parts(self, shape: Shape, generator: torch.Generator | None, device: Device, dtype: torch.dtype) -> NoiseDraw:
        """z_shared of shape (b, 1, c, h, w), then z_ind of `shape`; a part whose weight is 0 is not drawn."""
        r = self.shared_ratio
        shared_shape = (shape[0], 1, *shape[2:])
        # At r = 0 or 1 one draw suffices, in `dtype`: at r = 0 exactly as IndependentNoise draws it, so the two are
        # bit-identical. Otherwise both parts are drawn in float32 or wider, and rounded to `dtype` once combined.
        if r == 0.0:
            return _independent(shape, generator, device, dtype)
        if r == 1.0:
            shared = _randn(shared_shape, generator, device, dtype)
            return NoiseDraw(independent=None, shared=shared, shared_ratio=r, frames=shape[1])
        work = torch.promote_types(dtype, torch.float32)
        shared = _randn(shared_shape, generator, device, work)
        return NoiseDraw(independent=_randn(shape, generator, device, work), shared=shared, shared_ratio=r)

    def __repr__(self) -> str:
        return f"CorrelatedNoise(shared_ratio={self.shared_ratio!r})"


def noise_draw(
    noise: NoiseGenerator,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> NoiseDraw:
    """`noise`'s draw in parts when it has a `draw` method, else its `sample` as the independent part (r = 0)."""
    kwargs = dict(generator=generator, device=device, dtype=dtype)
    draw = getattr(noise, "draw", None)
    if callable(draw):
        return draw(shape, **kwargs)
    return NoiseDraw(independent=noise.sample(shape, **kwargs), shared=None, shared_ratio=0.0)


def _independent(shape: Shape, generator: torch.Generator | None, device: Device, dtype: torch.dtype) -> NoiseDraw:
    return NoiseDraw(independent=_randn(shape, generator, device, dtype), shared=None, shared_ratio=0.0)


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


def _check_ratio(shared_ratio: float) -> float:
    valid = isinstance(shared_ratio, numbers.Real) and not isinstance(shared_ratio, bool)
    if not valid or not 0.0 <= shared_ratio <= 1.0:  # NaN fails the range test too
        raise ValueError(f"shared_ratio r must be a real number in [0, 1], got {shared_ratio!r}")
    return float(shared_ratio)


def _presence(part: Tensor | None) -> str:
    return "missing" if part is None else "given"
