"""Text conditioning y of paper sec. 3.1/4.1: UCF-101 class names as prompts, and a cached CLIP text encoder."""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from jvid._checks import int_at_least

PROMPT_PREFIXES = ("A human", "A person", "Someone")
"""The subjects that sec. 4.1 prepends at random to a split class name."""

# One word is: a run of capitals not followed by a lower-case letter (an acronym, 'TV' in 'TVShow'), or an optional
# capital and its lower-case tail ('Yo', 'jet'), or a run of digits.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SEPARATORS = re.compile(r"[\s_\-]+")
_ALLOWED = re.compile(r"[A-Za-z0-9\s_\-]*")


def ucf101_prompt(class_name: str, generator: torch.Generator | None = None) -> str:
    """The sec. 4.1 prompt for a UCF-101 class: 'ApplyEyeMakeup' -> 'A person apply eye makeup', the subject drawn
    uniformly from `PROMPT_PREFIXES` with `generator` (torch's global generator when None).

    Words break at each capital ('YoYo' -> 'yo yo'; 'Skijet' and 'PlayingDaf' stay 'skijet', 'playing daf'), runs
    of capitals stay one word ('TVShow' -> 'tv show'), digits form their own words and spaces, '_' and '-' separate.
    """
    words = split_class_name(class_name)
    device = generator.device if generator is not None else None
    index = int(torch.randint(len(PROMPT_PREFIXES), (1,), generator=generator, device=device))
    return " ".join([PROMPT_PREFIXES[index], *words])


def split_class_name(class_name: str) -> list[str]:
    """A UCF-101 class name as lower-case words, split on capitals as in `ucf101_prompt`."""
    if not isinstance(class_name, str):
        raise TypeError(f"class_name must be a str, got {type(class_name).__name__}")
    if not _ALLOWED.fullmatch(class_name):
        bad = sorted({char for char in class_name if not _ALLOWED.fullmatch(char)})
        raise ValueError(f"class_name {class_name!r} has characters other than ASCII letters, digits, spaces, '_' "
                         f"and '-': {bad}")
    if not re.search(r"[A-Za-z]", class_name):
        raise ValueError(f"class_name {class_name!r} has no letters; expected a UCF-101 name like 'ApplyEyeMakeup'")
    return [word.lower() for part in _SEPARATORS.split(class_name) for word in _WORD.findall(part)]


class TextEncoder:
    """CLIP's tokenizer and text encoder as Stable Diffusion uses them: prompts -> last hidden states (b, n, d).

    Embeddings are cached per prompt (least recently used dropped beyond `cache_size`); `encode` returns new
    tensors, so callers may modify them without touching the cache.
    """

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, cache_size: int = 512) -> None:
        if not isinstance(tokenizer, CLIPTokenizer):
            raise TypeError(f"tokenizer must be a transformers CLIPTokenizer, got {type(tokenizer).__name__}")
        if not isinstance(text_encoder, CLIPTextModel):
            raise TypeError(f"text_encoder must be a transformers CLIPTextModel, got {type(text_encoder).__name__}")
        int_at_least("cache_size", cache_size, 0)
        self.tokenizer, self.text_encoder, self.cache_size = tokenizer, text_encoder.eval(), cache_size
        # Tokenizers saved without a length report a huge model_max_length; the position table caps it (77 for CLIP).
        self.max_length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        subfolder_tokenizer: str = "tokenizer",
        subfolder_encoder: str = "text_encoder",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TextEncoder:
        """Loads both parts from a local folder laid out like a diffusers pipeline (never from the network)."""
        folders = [Path(path) / subfolder_tokenizer, Path(path) / subfolder_encoder]
        for folder in [Path(path), *folders]:
            if not folder.is_dir():
                raise FileNotFoundError(f"no folder {str(folder)!r} to load the CLIP text encoder from")
        tokenizer = CLIPTokenizer.from_pretrained(folders[0], local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(folders[1], local_files_only=True, dtype=dtype)
        return cls(tokenizer, text_encoder.to(device) if device is not None else text_encoder)

    @property
    def embedding_dim(self) -> int:
        """d, the width of each token embedding (768 for Stable Diffusion 1.5's CLIP)."""
        return self.text_encoder.config.hidden_size

    def encode(self, prompts: list[str]) -> Float[Tensor, "b n d"]:
        """The CLIP embeddings of `prompts`, padded or truncated to `max_length` tokens; only new prompts run CLIP."""
        if not isinstance(prompts, list):
            raise TypeError(f"prompts must be a list of str, got {type(prompts).__name__}")
        if not prompts:
            raise ValueError("prompts is empty; pass at least one prompt ('' for no conditioning)")
        bad = [prompt for prompt in prompts if not isinstance(prompt, str)]
        if bad:
            raise TypeError(f"prompts must all be str, got {type(bad[0]).__name__} ({bad[0]!r})")
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in self._cache]
        fresh = dict(zip(missing, self._run(missing))) if missing else {}
        embeddings = torch.stack([fresh[prompt] if prompt in fresh else self._cache[prompt] for prompt in prompts])
        for prompt in dict.fromkeys(prompts):  # store the new ones and mark all as recently used
            self._remember(prompt, fresh.get(prompt))
        return embeddings

    def unconditional(self, batch: int = 1) -> Float[Tensor, "b n d"]:
        """The empty prompt's embedding, repeated `batch` times: the paper's null condition ∅ (sec. 4.1)."""
        int_at_least("batch", batch, 1)
        return self.encode([""] * batch)

    def clear_cache(self) -> None:
        """Forgets every cached embedding, e.g. after changing the encoder's weights."""
        self._cache.clear()

    @torch.no_grad()
    def _run(self, prompts: list[str]) -> Tensor:
        """One batched tokenizer + CLIP call."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        # Like Stable Diffusion 1.5, no attention mask: CLIP's causal mask already hides the padding that follows.
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device)).last_hidden_state

    def _remember(self, prompt: str, embedding: Tensor | None) -> None:
        """Caches a new embedding, or refreshes an old one, dropping the least recently used past `cache_size`."""
        if embedding is not None:
            self._cache[prompt] = embedding.clone()  # not a view that would keep its whole batch alive
        if prompt in self._cache:
            self._cache.move_to_end(prompt)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


__all__ = ["PROMPT_PREFIXES", "TextEncoder", "split_class_name", "ucf101_prompt"]
