"""The test run checks jvid's jaxtyping annotations with beartype (pyproject's --jaxtyping-packages)."""

import jaxtyping
import pytest
import torch
from conftest import FunctionDenoiser, smooth_eps

from jvid import MixtureSampler, PiecewiseSelector
from jvid.samplers import FixedSelector
from jvid.samplers.guidance import guided_eps


def test_shape_annotations_are_enforced(schedule):
    sampler = MixtureSampler([FunctionDenoiser(smooth_eps(), schedule)], FixedSelector())
    with pytest.raises(jaxtyping.TypeCheckError, match="x_T"):
        sampler.sample(torch.zeros(2, 3, 4, 4), num_steps=2, progress=False)
    # A denoiser that drops the frame axis breaks the "b f c h w" binding of guided_eps's return value.
    bad = FunctionDenoiser(lambda x, t, c: x[:, :1], schedule)
    with pytest.raises(jaxtyping.TypeCheckError):
        guided_eps(bad, torch.zeros(1, 3, 1, 2, 2), torch.zeros(1, dtype=torch.long), None, None, 1.0)


def test_int_is_accepted_where_float_is_annotated():
    assert PiecewiseSelector(0, 0, 1, 1).video_probability(1) == 1.0
    with pytest.raises(jaxtyping.TypeCheckError):
        PiecewiseSelector("0.1", 0.5, 0.3, 0.3)
