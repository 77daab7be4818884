"""Tiny random components, built offline: a CLIP with its own BPE vocabulary, Table-1 UNets at width 32,
a two-level VAE (scale factor 2) and DDPM schedulers; pipelines of them, in memory or saved to a folder.

Not a conftest.py: the test folders share the one `conftest` module name of tests/conftest.py."""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from jvid.models import lidm_unet, lvdm_unet
from jvid.pipeline import JVIDPipeline

WORDS = ["a", "human", "person", "someone", "apply", "eye", "makeup", "parallel", "bars", "yo"]
LATENT = 8  # latent pixels per side; frames are LATENT * 2 = 16 pixels
FRAMES = 3


def tiny_tokenizer(folder, max_length: int = 16) -> CLIPTokenizer:
    """A BPE vocabulary of the letters, CLIP's two special tokens and WORDS (each merged into one token)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = {}, []
    letters = [c + end for c in string.ascii_lowercase for end in ("", "</w>")]
    for token in ["<|startoftext|>", "<|endoftext|>", *letters]:
        vocab.setdefault(token, len(vocab))
    for word in WORDS:
        symbols = [*word[:-1], word[-1] + "</w>"]
        for symbol in symbols[1:]:
            merges.append(f"{symbols[0]} {symbol}")
            symbols[0] += symbol
            vocab.setdefault(symbols[0], len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                         model_max_length=max_length)


def tiny_clip(tokenizer: CLIPTokenizer, hidden: int = 32, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                            vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(config).eval()


def tiny_unets(context: int = 32, video_context: int | None = None, seed: int = 0):
    """(video UNet3DConditionModel, image UNet2DConditionModel) of Table 1 at width 32."""
    small = dict(width=32, head_dim=8, norm_num_groups=8, sample_size=LATENT)
    torch.manual_seed(seed)
    video = lvdm_unet(cross_attention_dim=video_context or context, **small)
    image = lidm_unet(cross_attention_dim=context, **small)
    return video, image


def assert_rewrite_keeps_the_unet(rewrite) -> torch.nn.Module:
    """Applies `rewrite` (in place) to a float64 copy of the tiny video UNet; checks that the state dict and the
    function are unchanged (to 1e-10) and returns the rewritten UNet."""
    video = tiny_unets()[0].double()
    rewritten = copy.deepcopy(video)
    rewrite(rewritten)
    assert rewritten.state_dict().keys() == video.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(rewritten.state_dict().values(), video.state_dict().values()))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, LATENT, LATENT, generator=generator, dtype=torch.float64)
    cond = torch.randn(2, 7, video.config.cross_attention_dim, generator=generator, dtype=torch.float64)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x, t, encoder_hidden_states=cond).sample,
                                   video(x, t, encoder_hidden_states=cond).sample, rtol=1e-10, atol=1e-10)
    return rewritten


def tiny_vae(latent_channels: int = 4, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
                         sample_size=2 * LATENT).eval()


def sd_scheduler(**overrides) -> DDPMScheduler:
    """Stable Diffusion 1.5's training schedule."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", **overrides)


def tiny_pipeline(tmp_path_factory, *, video=True, image=True, video_context=None) -> JVIDPipeline:
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    video_unet, image_unet = tiny_unets(video_context=video_context)
    extra = {}
    if video_context is not None:
        extra = dict(video_tokenizer=tokenizer, video_text_encoder=tiny_clip(tokenizer, video_context, seed=1))
    return JVIDPipeline(video_unet=video_unet if video else None, image_unet=image_unet if image else None,
                        vae=tiny_vae(), text_encoder=tiny_clip(tokenizer), tokenizer=tokenizer,
                        scheduler=sd_scheduler(), **extra)


def saved_pipeline(tmp_path_factory, name: str = "pipeline", **kwargs) -> Path:
    """A `tiny_pipeline` written by save_pretrained: each component's folder is one of its subfolders."""
    folder = tmp_path_factory.mktemp(name)
    tiny_pipeline(tmp_path_factory, **kwargs).save_pretrained(folder)
    return folder


def run(pipe: JVIDPipeline, seed: int = 0, **kwargs):
    """A short call with the test defaults: 3 frames, 4 steps, no progress bar."""
    settings = dict(prompt="a person apply eye makeup", num_frames=FRAMES, num_inference_steps=4, progress=False,
                    generator=torch.Generator().manual_seed(seed))
    return pipe(**{**settings, **kwargs})
