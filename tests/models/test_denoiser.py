"""The adapters against fake networks that record how they were called and mark every position of their output."""

import re
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jvid.models import Denoiser, ImageDenoiser, VideoDenoiser
from jvid.schedule import NoiseSchedule

B, F, C, H, W = 2, 3, 4, 5, 6
WRAPPERS = {"tensor": lambda eps: eps, "sample": lambda eps: SimpleNamespace(sample=eps)}


class Probe:
    """A network that records its inputs and returns sample + mark(sample), mark depending only on position."""

    def __init__(self, mark, wrap=WRAPPERS["tensor"], dtype=None):
        self.mark, self.wrap, self.calls = mark, wrap, []
        if dtype is not None:
            self.dtype = dtype

    def __call__(self, sample, timestep, encoder_hidden_states=None):
        self.calls.append(SimpleNamespace(sample=sample, timestep=timestep, cond=encoder_hidden_states))
        return self.wrap(sample + self.mark(sample))


def batch_mark(sample):
    """10 · (index along the network's batch axis)."""
    return 10.0 * torch.arange(sample.shape[0], dtype=sample.dtype).view(-1, 1, 1, 1)


def channel_frame_mark(sample):
    """10 · channel + 1000 · frame, for a network in (b, c, f, h, w)."""
    channels = torch.arange(sample.shape[1], dtype=sample.dtype).view(1, -1, 1, 1, 1)
    frames = torch.arange(sample.shape[2], dtype=sample.dtype).view(1, 1, -1, 1, 1)
    return 10.0 * channels + 1000.0 * frames


def zero_mark(sample):
    return torch.zeros_like(sample)


@pytest.fixture
def x():
    return torch.randn(B, F, C, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def t():
    return torch.tensor([17, 503])


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_video_denoiser_calls_the_network_in_b_c_f_h_w_and_restores_the_layout(schedule, x, t, wrap):
    probe = Probe(channel_frame_mark, WRAPPERS[wrap])
    cond = torch.randn(B, 7, 8)
    eps = VideoDenoiser(probe, schedule)(x, t, cond)
    (call,) = probe.calls
    assert torch.equal(call.sample, x.permute(0, 2, 1, 3, 4))
    assert torch.equal(call.timestep, t) and call.cond is cond
    expected = x + 10.0 * torch.arange(C).view(1, 1, -1, 1, 1) + 1000.0 * torch.arange(F).view(1, -1, 1, 1, 1)
    assert eps.shape == x.shape and torch.allclose(eps, expected)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_image_denoiser_folds_frames_into_the_batch_sample_major(schedule, x, t, wrap):
    probe = Probe(batch_mark, WRAPPERS[wrap])
    eps = ImageDenoiser(probe, schedule)(x, t, None)
    (call,) = probe.calls
    assert call.sample.shape == (B * F, C, H, W) and call.cond is None
    for i in range(B):
        for j in range(F):
            assert torch.equal(call.sample[i * F + j], x[i, j])
            assert torch.allclose(eps[i, j], x[i, j] + 10.0 * (i * F + j))


def test_image_denoiser_gives_frame_j_of_sample_i_the_t_and_cond_of_sample_i(schedule, x, t):
    probe = Probe(zero_mark)
    cond = torch.randn(B, 7, 8)
    ImageDenoiser(probe, schedule)(x, t, cond)
    (call,) = probe.calls
    assert call.timestep.shape == (B * F,) and call.cond.shape == (B * F, 7, 8)
    for i in range(B):
        for j in range(F):
            assert call.timestep[i * F + j] == t[i]
            assert torch.equal(call.cond[i * F + j], cond[i])


def test_video_denoiser_passes_any_cond_through(schedule, x, t):
    probe = Probe(zero_mark)
    cond = {"class_labels": torch.tensor([3, 4])}
    VideoDenoiser(probe, schedule)(x, t, cond)
    assert probe.calls[0].cond is cond


@pytest.mark.parametrize("adapter", [VideoDenoiser, ImageDenoiser])
def test_a_bf16_network_gets_bf16_inputs_and_the_caller_gets_its_own_dtype_back(schedule, x, t, adapter):
    probe = Probe(zero_mark, dtype=torch.bfloat16)
    eps = adapter(probe, schedule)(x, t, torch.randn(B, 7, 8))
    (call,) = probe.calls
    assert call.sample.dtype == torch.bfloat16 and call.cond.dtype == torch.bfloat16
    assert call.timestep.dtype == t.dtype
    assert eps.dtype == torch.float32
    assert torch.allclose(eps, x, rtol=1e-2, atol=1e-2) and not torch.equal(eps, x)  # rounded through bf16


@pytest.mark.parametrize("adapter", [VideoDenoiser, ImageDenoiser])
def test_a_network_without_dtype_gets_the_callers_dtype(schedule, x, t, adapter):
    probe = Probe(zero_mark)
    eps = adapter(probe, schedule)(x.double(), t, None)
    assert probe.calls[0].sample.dtype == torch.float64 and eps.dtype == torch.float64
    assert torch.equal(eps, x.double())


@pytest.mark.parametrize("adapter, got, expected", [
    (VideoDenoiser, (B, C, F, H, W - 1), (B, C, F, H, W)),
    (ImageDenoiser, (B * F, C, H, W - 1), (B * F, C, H, W)),
])
def test_a_wrong_output_shape_names_expected_and_got(schedule, x, t, adapter, got, expected):
    denoiser = adapter(lambda sample, timestep, encoder_hidden_states=None: sample[..., :-1], schedule)
    with pytest.raises(ValueError, match=re.escape(f"returned ε of shape {got}; expected {expected}")):
        denoiser(x, t, None)


def test_a_non_tensor_output_is_a_type_error(schedule, x, t):
    denoiser = VideoDenoiser(lambda sample, timestep, encoder_hidden_states=None: [sample], schedule)
    with pytest.raises(TypeError, match="returned list"):
        denoiser(x, t, None)


def test_image_denoiser_rejects_a_cond_it_cannot_repeat_per_frame(schedule, x, t):
    denoiser = ImageDenoiser(Probe(zero_mark), schedule)
    with pytest.raises(ValueError, match=r"leading batch axis of 2, got shape \(3, 7\)"):
        denoiser(x, t, torch.randn(3, 7))
    with pytest.raises(TypeError, match="must be a tensor or None, got dict"):
        denoiser(x, t, {"text": torch.randn(B, 7)})


@pytest.mark.parametrize("adapter", [VideoDenoiser, ImageDenoiser])
def test_constructor_rejects_a_non_callable_model_and_a_foreign_schedule(schedule, adapter):
    with pytest.raises(TypeError, match="model must be callable .* got int"):
        adapter(42, schedule)
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule, got str"):
        adapter(Probe(zero_mark), "linear")


def test_both_adapters_are_denoisers(schedule):
    assert isinstance(VideoDenoiser(Probe(zero_mark), schedule), Denoiser)
    assert isinstance(ImageDenoiser(Probe(zero_mark), schedule), Denoiser)
    assert not isinstance(Probe(zero_mark), Denoiser)  # no schedule


@given(
    shape=st.tuples(*(st.integers(1, 3) for _ in range(5))),
    adapter=st.sampled_from([VideoDenoiser, ImageDenoiser]),
)
def test_an_identity_network_round_trips_any_shape_exactly(shape, adapter):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    t = torch.arange(shape[0])
    denoiser = adapter(lambda sample, timestep, encoder_hidden_states=None: sample.clone(), NoiseSchedule.linear(10))
    assert torch.equal(denoiser(x, t, None), x)


def test_video_denoiser_repeats_text_per_frame_when_asked(schedule):
    seen = []

    def network(sample, timestep, encoder_hidden_states=None):
        seen.append(encoder_hidden_states)
        return sample

    cond = torch.arange(2.0).view(2, 1, 1).expand(2, 5, 3)
    x = torch.randn(2, 4, 1, 2, 2)
    t = torch.zeros(2, dtype=torch.long)
    VideoDenoiser(network, schedule)(x, t, cond)
    VideoDenoiser(network, schedule, text_per_frame=True)(x, t, cond)
    assert seen[0].shape == (2, 5, 3)
    assert seen[1].shape == (8, 5, 3) and torch.equal(seen[1][:, 0, 0], torch.tensor([0.0] * 4 + [1.0] * 4))
