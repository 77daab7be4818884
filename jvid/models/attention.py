"""Attention processors for video networks: text shared across frames, and short temporal sequences in one kernel.

**Text shared across frames.** A 2-D network run per frame (the LIDM with frames folded into the batch, sec. 3.4)
and diffusers' 3-D UNets see the text embedding repeated per frame, `(b·f, n, d)`: every frame's cross-attention
projects the same n tokens to keys and values. With the Table-1 networks on 8x8 latents those projections are a
quarter of the LVDM's FLOPs and a third of the LIDM's, fifteen sixteenths of them redundant at 16 frames. Since the
frames of a video attend to the same keys, they can also be one attention batch entry: queries `(b, heads, f·n_q, d)`
against keys `(b, heads, n, d)` give each query row the softmax over the same keys, i.e. the same result up to
summation order, with longer sequences for the fused attention kernel. A layer does that when its processor call
receives `frames=f`, which the denoiser adapters pass through diffusers' `cross_attention_kwargs` only when they know
the text rows repeat per frame, sample-major (jvid's adapters repeat it themselves or the network does).

**Short sequences.** A temporal layer attends over the f frames of each pixel: thousands of sequences of 16 tokens,
which `scaled_dot_product_attention`'s kernels handle at a fifth of the memory-bandwidth floor on an H100
(benchmarks/bench_attention.py). On CUDA, attention whose queries, keys and values share one shape of at
most `jvid.kernels.short_attention.MAX_LENGTH` tokens (self-attention over short sequences) runs that module's kernel
instead: the same function up to rounding.

`VideoAttentionProcessor` does both for layers with diffusers' standard `AttnProcessor2_0`; every call it cannot
compute exactly as that processor does (attention masks, spatial or group norms, q/k norms, 4-D input) and every
layer with another processor goes to the original processor unchanged.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from jaxtyping import Float
from torch import Tensor


class VideoAttentionProcessor:
    """An attention processor that shares text across frames when told the frame count, and runs short
    self-attention sequences in jvid's kernel.

    Wraps the layer's original processor, which handles every call this one does not compute exactly as diffusers'
    AttnProcessor2_0: attention masks, layers with spatial or group norms or q/k norms, 4-D input, and every call
    of a layer whose original processor is not AttnProcessor2_0. `short_kernel` says where short self-attention uses
    the kernel: None on CUDA tensors, True also on the CPU (Triton's interpreter), False never.
    """

    def __init__(self, original: Any, short_kernel: bool | None = None) -> None:
        self.original = original
        self.short_kernel = short_kernel

    @property
    def wraps_standard(self) -> bool:
        """Whether the wrapped processor is diffusers' AttnProcessor2_0, whose arithmetic `standard_attention`
        follows; layers with any other processor always use it."""
        return type(self.original) is AttnProcessor2_0

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        frames: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if kwargs or not self._standard(attn, hidden_states, attention_mask):
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, **kwargs)
        return standard_attention(attn, hidden_states, encoder_hidden_states, frames, self.short_kernel)

    def _standard(self, attn: Attention, hidden_states: Tensor, attention_mask: Tensor | None) -> bool:
        """Whether the layer is one that `standard_attention` computes exactly as the original processor does."""
        return (self.wraps_standard and attention_mask is None and hidden_states.ndim == 3
                and attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None
                and attn.norm_k is None)


def standard_attention(
    attn: Attention,
    hidden_states: Float[Tensor, "rows tokens channels"],
    text: Float[Tensor, "rows text_tokens text_channels"] | None = None,
    frames: int | None = None,
    short_kernel: bool | None = None,
) -> Float[Tensor, "rows tokens channels"]:
    """diffusers' AttnProcessor2_0 arithmetic for `attn` (which ignores `attn.scale`, as here): self-attention when
    `text` is None, cross-attention to `text` otherwise.

    With `frames`, cross-attention takes `(b·f, n_q, c)` hidden states and text `(b·f, n, d)` whose rows repeat per
    frame: keys and values come from the first frame's text row of each video, and the video's frames form one query
    sequence. The attention itself goes through `attend` (`short_kernel` as there).
    """
    shared = text is not None and frames is not None
    if shared:
        rows = hidden_states.shape[0]
        if frames < 1 or rows % frames or text.shape[0] != rows:
            raise ValueError(f"shared text attention needs hidden states and text with the same batch, a multiple "
                             f"of frames={frames}; got hidden states {tuple(hidden_states.shape)} and text "
                             f"{tuple(text.shape)}")
        text = text[::frames].contiguous()  # one copy, where to_k and to_v would each copy the strided rows
    residual = hidden_states
    query = attn.to_q(hidden_states)
    if text is None:
        source = hidden_states
    else:
        source = attn.norm_encoder_hidden_states(text) if attn.norm_cross else text
    key, value = attn.to_k(source), attn.to_v(source)
    heads = attn.heads
    sizes = {"f": frames} if shared else {}
    query = rearrange(query, "(b f) n (h d) -> b h (f n) d" if shared else "b n (h d) -> b h n d", h=heads, **sizes)
    key, value = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (key, value))
    out = attend(query, key, value, short_kernel)
    out = rearrange(out, "b h (f n) d -> (b f) n (h d)" if shared else "b h n d -> b n (h d)", **sizes)
    out = out.to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def attend(
    query: Float[Tensor, "batch heads length head_dim"],
    key: Float[Tensor, "batch heads keys head_dim"],
    value: Float[Tensor, "batch heads keys value_dim"],
    short_kernel: bool | None = None,
) -> Float[Tensor, "batch heads length value_dim"]:
    """`F.scaled_dot_product_attention(query, key, value)`, through `jvid.kernels.short_attention` where that takes
    the tensors (one shape for all three, short sequences; its `unfit` says which): on CUDA where Triton is installed
    (`short_kernel` None), also on the CPU under Triton's interpreter (True), or never (False)."""
    wanted = query.is_cuda if short_kernel is None else short_kernel
    if wanted:
        try:
            from jvid.kernels.short_attention import short_attention, unfit
        except ImportError:  # Triton is a dependency only where it is built (Linux x86-64)
            if short_kernel:
                raise
        else:
            if unfit(query, key, value) is None:
                return short_attention(query, key, value)
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


def wrap_attention_processors(model: Any, short_kernel: bool | None = None) -> int:
    """Wraps every attention processor of a diffusers model in `VideoAttentionProcessor`; returns how many
    cross-attention layers can share text. Wrapping again keeps each wrapper and sets its `short_kernel`; the model's
    own calls (without `frames`) compute what they did before, up to the short kernel's rounding."""
    processors = getattr(model, "attn_processors", None)
    if not isinstance(processors, dict) or not hasattr(model, "set_attn_processor"):
        raise TypeError(f"jvid's attention processors need a diffusers model with attention processors "
                        f"(attn_processors and set_attn_processor); {type(model).__name__} has none")
    if not processors:
        return 0
    for processor in processors.values():
        if isinstance(processor, VideoAttentionProcessor):
            processor.short_kernel = short_kernel
    model.set_attn_processor({name: processor if isinstance(processor, VideoAttentionProcessor)
                              else VideoAttentionProcessor(processor, short_kernel)
                              for name, processor in processors.items()})
    return sum(1 for module in model.modules()
               if isinstance(module, Attention) and module.is_cross_attention and module.processor.wraps_standard)


__all__ = ["VideoAttentionProcessor", "attend", "standard_attention", "wrap_attention_processors"]
