"""jvid's attention processors: cross-attention computed once per video (the same ε as per-frame attention, with one
text row per video), and short self-attention sequences through the Triton kernel (the same ε as diffusers' processor).
"""

import copy

import pytest
import torch
from diffusers import MotionAdapter, UNetMotionModel
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from jvid.models import ImageDenoiser, VideoDenoiser
from jvid.kernels import short_attention as kernel_module
from jvid.models.attention import VideoAttentionProcessor, attend, standard_attention, wrap_attention_processors
from jvid.schedule import NoiseSchedule
from tiny_components import tiny_unets

CONTEXT = 32


def motion_unet(image):
    adapter = MotionAdapter(block_out_channels=image.config.block_out_channels,
                            motion_layers_per_block=image.config.layers_per_block, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=8, use_motion_mid_block=False)
    return UNetMotionModel.from_unet2d(image, motion_adapter=adapter).eval()


def networks():
    video, image = tiny_unets(context=CONTEXT)
    return {"UNet3DConditionModel": (VideoDenoiser, video), "UNet2DConditionModel": (ImageDenoiser, image),
            "UNetMotionModel": (VideoDenoiser, motion_unet(copy.deepcopy(image)))}


NETWORKS = networks()


def inputs(batch, frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 4, 8, 8, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    return x, t, torch.randn(batch, 7, CONTEXT, generator=generator)


def cross_attention_layers(model):
    return [m for m in model.modules() if isinstance(m, Attention) and m.is_cross_attention]


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("batch, frames", [(1, 1), (2, 3), (3, 5)])
def test_shared_text_gives_the_epsilon_of_per_frame_attention(name, batch, frames):
    adapter, network = NETWORKS[name]
    per_frame = adapter(copy.deepcopy(network), NoiseSchedule.linear(), share_text=False)
    shared = adapter(copy.deepcopy(network), NoiseSchedule.linear())
    assert shared.share_text and not per_frame.share_text
    x, t, cond = inputs(batch, frames)
    with torch.no_grad():
        expected, got = per_frame(x, t, cond), shared(x, t, cond)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("name", NETWORKS)
def test_keys_and_values_are_projected_from_one_text_row_per_video(name):
    adapter, network = NETWORKS[name]
    batch, frames = 2, 3
    rows = {}
    for share in (False, True):
        denoiser = adapter(copy.deepcopy(network), NoiseSchedule.linear(), share_text=share)
        layer = cross_attention_layers(denoiser.model)[0]
        handle = layer.to_k.register_forward_pre_hook(lambda m, args, share=share: rows.update({share: args[0]}))
        with torch.no_grad():
            denoiser(*inputs(batch, frames))
        handle.remove()
    assert rows[False].shape[0] == batch * frames and rows[True].shape[0] == batch


def test_the_networks_own_calls_are_unchanged_after_wrapping():
    _, network = NETWORKS["UNet2DConditionModel"]
    wrapped = copy.deepcopy(network)
    assert wrap_attention_processors(wrapped) == len(cross_attention_layers(wrapped)) > 0
    x, t, cond = inputs(6, 1)
    with torch.no_grad():
        assert torch.equal(wrapped(x[:, 0], t, encoder_hidden_states=cond).sample,
                           network(x[:, 0], t, encoder_hidden_states=cond).sample)


def test_wrapping_twice_wraps_each_processor_once():
    _, network = NETWORKS["UNet3DConditionModel"]
    model = copy.deepcopy(network)
    first = wrap_attention_processors(model)
    processors = dict(model.attn_processors)
    assert wrap_attention_processors(model) == first
    assert all(model.attn_processors[name] is processor for name, processor in processors.items())
    assert all(type(p) is VideoAttentionProcessor and type(p.original) is not VideoAttentionProcessor
               for p in processors.values())
    wrap_attention_processors(model, short_kernel=False)
    assert all(model.attn_processors[name] is p and p.short_kernel is False for name, p in processors.items())


def test_layers_with_another_processor_keep_it():
    _, network = NETWORKS["UNet2DConditionModel"]
    model = copy.deepcopy(network)
    model.set_attn_processor(AttnProcessor())
    reference = copy.deepcopy(model)
    assert ImageDenoiser(model, NoiseSchedule.linear()).share_text is False
    with pytest.raises(ValueError, match="has no cross-attention layer with diffusers' standard processor"):
        ImageDenoiser(model, NoiseSchedule.linear(), share_text=True)
    x, t, cond = inputs(2, 3)
    model.set_attn_processor({name: VideoAttentionProcessor(p) for name, p in model.attn_processors.items()})
    extra = {"cross_attention_kwargs": {"frames": 3}}
    folded = x.flatten(0, 1), t.repeat_interleave(3), cond.repeat_interleave(3, dim=0)
    with torch.no_grad():
        got = model(folded[0], folded[1], encoder_hidden_states=folded[2], **extra).sample
        assert torch.equal(got, reference(folded[0], folded[1], encoder_hidden_states=folded[2]).sample)


def test_share_text_needs_a_diffusers_model_with_attention_processors(unchecked):
    with pytest.raises(TypeError, match="need a diffusers model with attention processors"):
        VideoDenoiser(lambda sample, t, encoder_hidden_states=None: sample, NoiseSchedule.linear(), share_text=True)
    plain = ImageDenoiser(lambda sample, t, encoder_hidden_states=None: sample, NoiseSchedule.linear())
    assert plain.share_text is False
    with pytest.raises(TypeError, match="share_text must be True, False or None"):
        ImageDenoiser(NETWORKS["UNet2DConditionModel"][1], NoiseSchedule.linear(), share_text=1)


def test_shared_text_attention_names_a_batch_that_frames_do_not_divide(unchecked):
    layer = cross_attention_layers(NETWORKS["UNet2DConditionModel"][1])[0]
    hidden = torch.randn(4, 5, layer.to_q.in_features)
    with pytest.raises(ValueError, match=r"a multiple of frames=3; got hidden states \(4, 5, \d+\) and text"):
        standard_attention(layer, hidden, torch.randn(4, 7, CONTEXT), 3)
    with pytest.raises(ValueError, match="the same batch"):
        standard_attention(layer, hidden, torch.randn(2, 7, CONTEXT), 2)


def test_the_shared_layer_matches_diffusers_per_frame_processor_in_float64():
    layer = copy.deepcopy(cross_attention_layers(NETWORKS["UNet3DConditionModel"][1])[0]).double()
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(6, 10, layer.to_q.in_features, generator=generator, dtype=torch.float64)
    text = torch.randn(2, 7, CONTEXT, generator=generator, dtype=torch.float64).repeat_interleave(3, dim=0)
    expected = AttnProcessor2_0()(layer, hidden, encoder_hidden_states=text)
    torch.testing.assert_close(standard_attention(layer, hidden, text, 3), expected, rtol=1e-12, atol=1e-12)


KERNEL_DEVICE = "cpu" if kernel_module.is_interpreted() else "cuda"


@pytest.fixture
def kernel_calls(monkeypatch, kernel_can_run):
    """The query shapes of every short-attention kernel launch while the test runs."""
    calls = []
    launch = kernel_module.short_attention
    monkeypatch.setattr(kernel_module, "short_attention", lambda *a, **k: calls.append(a[0].shape) or launch(*a, **k))
    return calls


@pytest.mark.parametrize("name", ["UNet3DConditionModel", "UNetMotionModel"])
def test_temporal_layers_through_the_short_kernel_give_diffusers_epsilon(name, monkeypatch, kernel_calls):
    """Every self-attention layer of the video networks, temporal ones included, through the kernel (in Triton's
    interpreter on the CPU) against diffusers' own processors, with per-frame text in both. On CUDA the convolutions
    run in float32, not TF32, whose input rounding would magnify the kernel's rounding differences."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    _, network = NETWORKS[name]
    reference = copy.deepcopy(network)
    model = copy.deepcopy(network)
    wrap_attention_processors(model, short_kernel=True)
    device = KERNEL_DEVICE
    model, reference = model.to(device), reference.to(device)
    x, t, cond = inputs(2, 3)
    sample = x[..., :4, :4].transpose(1, 2).to(device)  # 16 pixels: the interpreter runs a program per sequence
    text = cond.to(device)
    if name == "UNetMotionModel":
        text = text.repeat_interleave(3, dim=0)
    with torch.no_grad():
        expected = reference(sample, t.to(device), encoder_hidden_states=text).sample
        got = model(sample, t.to(device), encoder_hidden_states=text).sample
    assert any(shape[-2] == 3 for shape in kernel_calls)  # the temporal layers' sequences of the 3 frames
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_attend_takes_the_kernel_only_where_it_applies(kernel_calls):
    generator = torch.Generator().manual_seed(3)
    device = KERNEL_DEVICE
    short = [torch.randn(2, 3, 16, 8, generator=generator).to(device) for _ in range(3)]
    long = [torch.randn(1, 2, kernel_module.MAX_LENGTH + 1, 8, generator=generator).to(device) for _ in range(3)]
    for tensors in (short, long):
        expected = torch.nn.functional.scaled_dot_product_attention(*tensors)
        torch.testing.assert_close(attend(*tensors, short_kernel=True), expected, rtol=1e-5, atol=1e-5)
    assert kernel_calls == [short[0].shape]
    attend(*short, short_kernel=False)
    if device == "cpu":  # automatic: CUDA only
        attend(*short)
    assert len(kernel_calls) == 1
