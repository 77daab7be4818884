"""UCF-101 prompts and the cached CLIP text encoder, on a tiny random CLIP saved to a temporary folder."""

from collections import Counter

import pytest
import torch
from tiny_components import tiny_clip, tiny_tokenizer
from transformers import CLIPTextModel, CLIPTokenizer

from jvid.models import TextEncoder, ucf101_prompt
from jvid.models.text import PROMPT_PREFIXES, split_class_name

HIDDEN = 32


@pytest.mark.parametrize(("name", "words"), [
    ("ApplyEyeMakeup", "apply eye makeup"),
    ("ParallelBars", "parallel bars"),
    ("YoYo", "yo yo"),
    ("PlayingDaf", "playing daf"),
    ("Skijet", "skijet"),
    ("HandstandPushups", "handstand pushups"),
    ("TaiChi", "tai chi"),
    ("Punch", "punch"),
    ("TVShow", "tv show"),  # not in UCF-101: a run of capitals stays one word
    ("Jump3D", "jump 3 d"),
    ("walking_with-Dog", "walking with dog"),
])
def test_class_names_split_on_capitals(name, words):
    assert " ".join(split_class_name(name)) == words
    prompt = ucf101_prompt(name, torch.Generator().manual_seed(0))
    prefix = next(p for p in PROMPT_PREFIXES if prompt.startswith(p + " "))
    assert prompt == f"{prefix} {words}"


def test_the_three_prefixes_come_equally_often():
    generator = torch.Generator().manual_seed(1)
    counts = Counter(ucf101_prompt("ApplyEyeMakeup", generator).rsplit(" apply", 1)[0] for _ in range(3000))
    assert set(counts) == set(PROMPT_PREFIXES)
    assert all(900 < n < 1100 for n in counts.values()), counts  # ±100 is about four standard deviations


def test_same_seed_same_prompts():
    first = [ucf101_prompt("YoYo", torch.Generator().manual_seed(7)) for _ in range(3)]
    generator_a, generator_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert len(set(first)) == 1
    assert [ucf101_prompt("YoYo", generator_a) for _ in range(20)] == [ucf101_prompt("YoYo", generator_b)
                                                                       for _ in range(20)]


@pytest.mark.parametrize("name", ["", "   ", "123", "_-_", "Apply!Eye", "Café"])
def test_names_without_letters_or_with_odd_characters_are_refused(name):
    with pytest.raises(ValueError, match="class_name"):
        ucf101_prompt(name)


def write_tiny_clip(folder):
    """A tiny CLIP saved as a pipeline folder's tokenizer/ and text_encoder/ subfolders."""
    tokenizer = tiny_tokenizer(folder / "vocab", max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    tiny_clip(tokenizer, hidden=HIDDEN).save_pretrained(folder / "text_encoder")
    return tokenizer


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    write_tiny_clip(folder)
    return folder


@pytest.fixture
def encoder(clip_folder):
    return TextEncoder.from_pretrained(clip_folder)


def count_calls(encoder):
    calls = []
    encoder.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(args))
    return calls


def test_the_tiny_tokenizer_knows_the_words(clip_folder):
    tokenizer = CLIPTokenizer.from_pretrained(clip_folder / "tokenizer")
    assert tokenizer.tokenize("A person apply eye makeup") == ["a</w>", "person</w>", "apply</w>", "eye</w>",
                                                               "makeup</w>"]


def test_encode_gives_one_77_token_sequence_per_prompt(encoder):
    embeddings = encoder.encode(["A person apply eye makeup", "Someone parallel bars", "A human yo yo"])
    assert embeddings.shape == (3, 77, HIDDEN) and encoder.embedding_dim == HIDDEN
    assert torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])  # the prompts matter
    # The start token sees only itself under CLIP's causal mask, so it is the same for every prompt.
    torch.testing.assert_close(embeddings[:, 0], embeddings[:1, 0].expand(3, -1))


def test_encode_matches_clip_called_directly(encoder):
    ids = encoder.tokenizer(["Someone apply eye makeup"], padding="max_length", max_length=77,
                            return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder.text_encoder(ids).last_hidden_state
    torch.testing.assert_close(encoder.encode(["Someone apply eye makeup"]), expected)


def test_unconditional_is_the_empty_prompt(encoder):
    null = encoder.unconditional(batch=2)
    assert null.shape == (2, 77, HIDDEN)
    torch.testing.assert_close(null[0], null[1])
    torch.testing.assert_close(null, encoder.encode(["", ""]))
    assert not torch.allclose(null[0], encoder.encode(["A person"])[0])


def test_cached_prompts_do_not_run_clip_again(encoder):
    calls = count_calls(encoder)
    first = encoder.encode(["A person apply eye makeup", "A human yo yo"])
    assert len(calls) == 1
    again = encoder.encode(["A human yo yo", "A person apply eye makeup", "A human yo yo"])
    assert len(calls) == 1
    torch.testing.assert_close(again, first[[1, 0, 1]])
    encoder.encode(["A human yo yo", "Someone parallel bars", "Someone parallel bars"])
    assert len(calls) == 2 and calls[-1][0].shape[0] == 1  # only the new prompt, once


def test_changing_a_returned_embedding_leaves_the_cache_intact(encoder):
    first = encoder.encode(["Someone apply eye makeup"])
    kept = first.clone()
    first.zero_()
    encoder.unconditional().fill_(3.0)
    torch.testing.assert_close(encoder.encode(["Someone apply eye makeup"]), kept)
    assert not torch.equal(encoder.unconditional(), torch.full_like(kept, 3.0))


def test_the_cache_keeps_only_the_most_recent_prompts(clip_folder):
    encoder = TextEncoder(CLIPTokenizer.from_pretrained(clip_folder / "tokenizer"),
                          CLIPTextModel.from_pretrained(clip_folder / "text_encoder"), cache_size=2)
    calls = count_calls(encoder)
    for prompt in ["a", "human", "a", "person"]:  # "human" is the least recently used when "person" arrives
        encoder.encode([prompt])
    assert len(calls) == 3
    encoder.encode(["a"])
    assert len(calls) == 3
    encoder.encode(["human"])
    assert len(calls) == 4


def test_dtype_is_passed_to_the_encoder(clip_folder):
    encoder = TextEncoder.from_pretrained(clip_folder, dtype=torch.bfloat16, device="cpu")
    assert encoder.encode(["A person"]).dtype == torch.bfloat16


def test_missing_folders_are_named(tmp_path, clip_folder):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TextEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="text_encoder_v2"):
        TextEncoder.from_pretrained(clip_folder, subfolder_encoder="text_encoder_v2")


def test_bad_inputs_are_refused(encoder, unchecked):
    with pytest.raises(ValueError, match="empty"):
        encoder.encode([])
    with pytest.raises(TypeError, match="str"):
        encoder.encode(["A person", 3])
    with pytest.raises(TypeError, match="list"):
        encoder.encode("A person")
    with pytest.raises(ValueError, match="batch"):
        encoder.unconditional(0)
    with pytest.raises(TypeError, match="CLIPTokenizer"):
        TextEncoder(encoder.text_encoder, encoder.text_encoder)
