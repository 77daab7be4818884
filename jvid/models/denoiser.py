"""The ε-model interface that samplers call, and adapters that put 2-D and 3-D networks behind it (paper sec. 3.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel
from einops import rearrange, repeat
from torch import Tensor

from jvid.models.attention import wrap_attention_processors
from jvid.models.convolution import fold_temporal_convolutions
from jvid.models.normalization import split_group_norms
from jvid.schedule import NoiseSchedule
from jvid.shapes import Latents, Timesteps

CANONICAL_LAYOUT = "b f c h w"


@runtime_checkable
class Denoiser(Protocol):
    """An ε-model ε_θ(s_t, t, y) over jvid's latent layout, trained on `schedule`: returns ε in x's shape and dtype.

    Samplers see only this call, so any network, layout or conditioning can join a mixture behind a small adapter.
    """

    schedule: NoiseSchedule

    def __call__(self, x: Latents, t: Timesteps, cond: Any) -> Latents: ...


@runtime_checkable
class CompilableDenoiser(Denoiser, Protocol):
    """A Denoiser that builds its own `torch.compile`d call, e.g. after putting its network in a form the compiler
    handles better. Samplers that compile (`jvid.samplers.CUDAGraphSampler`) use `compiled` when a denoiser has it."""

    def compiled(self, mode: str) -> Callable[..., Latents]:
        """A call with `__call__`'s signature and results, compiled with `torch.compile(mode=mode)`."""
        ...


# diffusers networks whose attention layers see the text repeated per frame, sample-major, behind jvid's adapters.
_VIDEO_ATTENTION = (UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel)


class _NetworkDenoiser:
    """Calls `model(sample, timestep, encoder_hidden_states=cond)` in the network's layout and maps ε back.

    Subclasses name the network's layout as einops axes over jvid's `b f c h w`, and say how per-sample inputs
    (t and cond) follow that layout.

    The attention processors of diffusers' UNet2DConditionModel, UNet3DConditionModel and UNetMotionModel are
    wrapped in `jvid.models.attention.VideoAttentionProcessor` (same ε up to summation order): on CUDA their short
    self-attention sequences (temporal layers) run jvid's Triton kernel, and with `share_text` (on by default) their
    cross-attention layers compute keys and values once per video rather than once per frame. Pass share_text=True
    for another diffusers network only if its cross-attention layers see hidden states and text batched
    `(b·f, ...)`, sample-major.
    """

    network_layout: ClassVar[str]
    model: Callable[..., Any]
    schedule: NoiseSchedule

    def __init__(self, model: Any, schedule: Any, *, share_text: bool | None = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(sample, timestep, encoder_hidden_states=cond), "
                            f"got {type(model).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if share_text is not None and not isinstance(share_text, bool):
            raise TypeError(f"share_text must be True, False or None (automatic), got {share_text!r}")
        self.model, self.schedule = model, schedule
        wrapped = isinstance(model, _VIDEO_ATTENTION) or bool(share_text)
        sharing_layers = wrap_attention_processors(model) if wrapped else 0
        if share_text and not sharing_layers:
            raise ValueError(f"share_text=True, but {type(model).__name__} has no cross-attention layer with "
                             f"diffusers' standard processor to share text in")
        self.share_text = sharing_layers > 0 if share_text is None else share_text

    def __call__(self, x: Latents, t: Timesteps, cond: Any) -> Latents:
        """ε for latents x at training timesteps t, from one network call."""
        batch, frames = x.shape[:2]
        dtype = getattr(self.model, "dtype", None)  # diffusers models have one; plain callables may not
        dtype = dtype if isinstance(dtype, torch.dtype) else None
        sample = _cast(rearrange(x, f"{CANONICAL_LAYOUT} -> {self.network_layout}"), dtype)
        timestep = self._per_sample(t, batch, frames)
        cond = _cast(self._per_sample_cond(cond, batch, frames), dtype)
        extra = {"cross_attention_kwargs": {"frames": frames}} if self.share_text else {}
        out = self.model(sample, timestep, encoder_hidden_states=cond, **extra)
        eps = getattr(out, "sample", out)
        if not isinstance(eps, Tensor):
            raise TypeError(f"{type(self.model).__name__} returned {type(eps).__name__}; expected a tensor or an "
                            f"output with a .sample tensor")
        if eps.shape != sample.shape:
            raise ValueError(f"{type(self.model).__name__} returned ε of shape {tuple(eps.shape)}; expected "
                             f"{tuple(sample.shape)}, the shape of its input in layout '{self.network_layout}'")
        return rearrange(eps, f"{self.network_layout} -> {CANONICAL_LAYOUT}", b=batch, f=frames).to(x.dtype)

    def compiled(self, mode: str) -> Callable[..., Latents]:
        """`torch.compile` of this denoiser's call (static shapes), after two rewrites of the network that Inductor
        compiles into faster kernels: frame-only Conv3d folded into 2-D convolutions (`jvid.models.convolution`),
        which it lays out without cuDNN's layout conversions, and GroupNorm statistics of video activations reduced
        per frame first (`jvid.models.normalization`), rather than in one long strided reduction.

        The rewrites change the network in place, for its eager calls too: the same parameters, state dict and
        function, up to summation order.
        """
        if isinstance(self.model, torch.nn.Module):
            fold_temporal_convolutions(self.model)
            split_group_norms(self.model)
        return torch.compile(self.__call__, mode=mode, dynamic=False)

    def _per_sample(self, value: Any, batch: int, frames: int) -> Any:
        """A per-sample input (t or cond) as the network expects it; unchanged unless a subclass folds frames."""
        return value

    def _per_sample_cond(self, cond: Any, batch: int, frames: int) -> Any:
        """The conditioning as the network expects it; by default laid out as t is."""
        return self._per_sample(cond, batch, frames)


class VideoDenoiser(_NetworkDenoiser):
    """Adapts a 3-D network (the LVDM, e.g. diffusers' UNet3DConditionModel) that takes `(b, c, f, h, w)`.

    Some video networks (AnimateDiff's UNetMotionModel) take one text embedding per frame, `(b*f, n, d)`: with
    `text_per_frame` (detected for UNetMotionModel when None) a tensor cond is repeated per frame, sample-major.
    """

    network_layout = "b c f h w"

    def __init__(self, model: Any, schedule: Any, *, text_per_frame: bool | None = None,
                 share_text: bool | None = None) -> None:
        super().__init__(model, schedule, share_text=share_text)
        self.text_per_frame = isinstance(model, UNetMotionModel) if text_per_frame is None else text_per_frame

    def _per_sample_cond(self, cond: Any, batch: int, frames: int) -> Any:
        if self.text_per_frame and isinstance(cond, Tensor):
            return repeat(cond, "b ... -> (b f) ...", f=frames)
        return cond


class ImageDenoiser(_NetworkDenoiser):
    """Adapts a 2-D network (the LIDM) by folding frames into the batch, `(b*f, c, h, w)`, as paper sec. 3.4 does.

    t and a tensor cond are repeated per frame in the same sample-major order; a cond of None stays None.
    """

    network_layout = "(b f) c h w"

    def _per_sample(self, value: Any, batch: int, frames: int) -> Any:
        if value is None:
            return None
        if not isinstance(value, Tensor):
            raise TypeError(f"ImageDenoiser repeats cond per frame, so it must be a tensor or None, "
                            f"got {type(value).__name__}")
        if value.ndim == 0 or value.shape[0] != batch:
            raise ValueError(f"ImageDenoiser needs t and cond with a leading batch axis of {batch}, "
                             f"got shape {tuple(value.shape)}")
        return repeat(value, "b ... -> (b f) ...", f=frames)


def _cast(value: Any, dtype: torch.dtype | None) -> Any:
    """A floating tensor in the network's dtype; anything else unchanged."""
    if dtype is not None and isinstance(value, Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


__all__ = ["CompilableDenoiser", "Denoiser", "ImageDenoiser", "VideoDenoiser"]
