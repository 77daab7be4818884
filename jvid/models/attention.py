"""Cross-attention over text that all frames of a video share, computed once per video.

A 2-D network run per frame (the LIDM with frames folded into the batch, sec. 3.4) and diffusers' 3-D UNets see the
text embedding repeated per frame, `(b·f, n, d)`: every frame's cross-attention projects the same n tokens to keys
and values. With the Table-1 networks on 8x8 latents those projections are a quarter of the LVDM's FLOPs and a
third of the LIDM's, fifteen sixteenths of them redundant at 16 frames. Since the frames of a video attend to the
same keys, they can also be one attention batch entry: queries `(b, heads, f·n_q, d)` against keys `(b, heads, n, d)`
give each query row the softmax over the same keys, i.e. the same result up to summation order, with longer
sequences for the fused attention kernel.

`FrameSharedTextProcessor` does that in a layer whose processor call receives `frames=f`, which the denoiser adapters
pass through diffusers' `cross_attention_kwargs` only when they know the text rows repeat per frame, sample-major
(jvid's adapters repeat it themselves or the network does). Every other call, self-attention, and any layer whose
original processor is not diffusers' standard `AttnProcessor2_0` goes to the original processor unchanged.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from torch import Tensor


class FrameSharedTextProcessor:
    """An attention processor that computes cross-attention once per video when told the frame count.

    Wraps the layer's original processor, which handles everything it does not: calls without `frames`,
    self-attention, attention masks, and layers with spatial or group norms, q/k norms or 4-D input.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    @property
    def wraps_standard(self) -> bool:
        """Whether the wrapped processor is diffusers' AttnProcessor2_0, whose arithmetic `shared_text_attention`
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
        if frames is None or encoder_hidden_states is None or not self._standard(attn, hidden_states, attention_mask):
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, **kwargs)
        return shared_text_attention(attn, hidden_states, encoder_hidden_states, frames)

    def _standard(self, attn: Attention, hidden_states: Tensor, attention_mask: Tensor | None) -> bool:
        """Whether the layer is one that `shared_text_attention` computes exactly as the original processor does."""
        return (self.wraps_standard and attention_mask is None and hidden_states.ndim == 3
                and attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None
                and attn.norm_k is None)


def shared_text_attention(attn: Attention, hidden_states: Tensor, text: Tensor, frames: int) -> Tensor:
    """`attn`'s cross-attention of `(b·f, n_q, c)` hidden states to text `(b·f, n, d)` whose rows repeat per frame.

    Keys and values come from the first frame's text row of each video, and the video's frames form one query
    sequence. Same arithmetic as diffusers' AttnProcessor2_0 otherwise (which ignores `attn.scale`, as here).
    """
    rows = hidden_states.shape[0]
    if frames < 1 or rows % frames or text.shape[0] != rows:
        raise ValueError(f"shared text attention needs hidden states and text with the same batch, a multiple of "
                         f"frames={frames}; got hidden states {tuple(hidden_states.shape)} and text "
                         f"{tuple(text.shape)}")
    residual = hidden_states
    query = attn.to_q(hidden_states)
    text = text[::frames]
    if attn.norm_cross:
        text = attn.norm_encoder_hidden_states(text)
    key, value = attn.to_k(text), attn.to_v(text)
    heads = attn.heads
    query = rearrange(query, "(b f) n (h d) -> b h (f n) d", f=frames, h=heads)
    key, value = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (key, value))
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    out = rearrange(out, "b h (f n) d -> (b f) n (h d)", f=frames).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def share_text_across_frames(model: Any) -> int:
    """Wraps every attention processor of a diffusers model in `FrameSharedTextProcessor`; returns how many
    cross-attention layers can share text. Wrapping twice changes nothing, and the model's own calls (without
    `frames`) compute what they did before."""
    processors = getattr(model, "attn_processors", None)
    if not isinstance(processors, dict) or not hasattr(model, "set_attn_processor"):
        raise TypeError(f"sharing text across frames needs a diffusers model with attention processors "
                        f"(attn_processors and set_attn_processor); {type(model).__name__} has none")
    if not processors:
        return 0
    model.set_attn_processor({name: processor if isinstance(processor, FrameSharedTextProcessor)
                              else FrameSharedTextProcessor(processor) for name, processor in processors.items()})
    return sum(1 for module in model.modules()
               if isinstance(module, Attention) and module.is_cross_attention and module.processor.wraps_standard)


__all__ = ["FrameSharedTextProcessor", "share_text_across_frames", "shared_text_attention"]
