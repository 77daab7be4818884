import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jvid.samplers.selectors import (
    TABLE6,
    FixedSelector,
    NoiseLevelSelector,
    PatternSelector,
    PiecewiseSelector,
    Selector,
    StepInfo,
)

unit = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def piecewise(draw):
    t_v = draw(st.floats(min_value=0.0, max_value=0.98))
    t_e = draw(st.floats(min_value=t_v, max_value=0.99))
    return PiecewiseSelector(t_v, t_e, draw(unit), draw(unit))


def test_step_info_progress():
    assert StepInfo(index=0, num_steps=50, timestep=980).progress == 0.0
    assert StepInfo(index=49, num_steps=50, timestep=0).progress == 1.0
    assert StepInfo(index=10, num_steps=41, timestep=0).progress == 0.25
    assert StepInfo(index=0, num_steps=1, timestep=0).progress == 0.0


@given(piecewise(), unit)
def test_video_probability_is_a_probability(selector, progress):
    assert 0.0 <= selector.video_probability(progress) <= 1.0


@given(piecewise())
def test_video_probability_is_continuous_with_the_right_anchors(selector):
    p = selector.video_probability
    assert p(1.0) == pytest.approx(selector.p_f, abs=1e-12)
    assert p(selector.t_e) == pytest.approx(selector.p_e, abs=1e-12)
    if selector.t_v > 0:
        assert p(0.0) == 1.0
    if selector.t_e > selector.t_v:
        assert p(selector.t_v) == 1.0
    # Lipschitz on each side of the knots: a tiny step never jumps.
    slope = abs(1 - selector.p_e) / max(selector.t_e - selector.t_v, 1e-300) + abs(selector.p_f - selector.p_e) / (
        1 - selector.t_e
    )
    for knot in (selector.t_v, selector.t_e):
        for delta in (1e-7, 1e-9):
            if knot - delta >= 0 and selector.t_e - selector.t_v > 1e-6:
                assert abs(p(knot - delta) - p(knot)) <= slope * delta + 1e-12


def test_video_probability_follows_the_affine_pieces():
    selector = PiecewiseSelector(0.2, 0.7, 0.3, 0.1)
    assert selector.video_probability(0.1) == 1.0
    assert selector.video_probability(0.45) == pytest.approx(1 + 0.5 * (0.3 - 1))
    assert selector.video_probability(0.85) == pytest.approx(0.3 + 0.5 * (0.1 - 0.3))


@pytest.mark.parametrize("progress", [0.0, 0.3, 0.55, 0.8, 1.0])
def test_empirical_video_frequency_matches_probability(progress):
    selector = PiecewiseSelector.table6(128)
    gen = torch.Generator().manual_seed(7)
    step = StepInfo(index=round(progress * 1000), num_steps=1001, timestep=0)
    n = 20_000
    hits = sum(selector.select(step, gen) == 0 for _ in range(n))
    p = selector.video_probability(step.progress)
    assert abs(hits / n - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_same_seed_same_choices_and_coupled_sweeps():
    steps = [StepInfo(index=i, num_steps=50, timestep=980 - 20 * i) for i in range(50)]
    a = PiecewiseSelector.table6(64)
    gen1, gen2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [a.select(s, gen1) for s in steps] == [a.select(s, gen2) for s in steps]
    # One draw per step: a selector with a higher P_V everywhere picks video at least wherever a lower one does.
    low, high = PiecewiseSelector(0.1, 0.5, 0.2, 0.1), PiecewiseSelector(0.1, 0.5, 0.6, 0.5)
    g_low, g_high = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    picks_low = [low.select(s, g_low) for s in steps]
    picks_high = [high.select(s, g_high) for s in steps]
    assert all(h == 0 for lo, h in zip(picks_low, picks_high) if lo == 0)
    assert picks_low != picks_high


def test_table6_presets():
    for resolution, params in TABLE6.items():
        selector = PiecewiseSelector.table6(resolution)
        assert (selector.t_v, selector.t_e, selector.p_e, selector.p_f) == params
    assert TABLE6[64] == (0.2, 0.7, 0.3, 0.3) and TABLE6[256] == (0.1, 0.6, 0.2, 0.1)
    with pytest.raises(ValueError, match="Table 6"):
        PiecewiseSelector.table6(512)


@pytest.mark.parametrize(
    "args, message",
    [
        ((-0.1, 0.5, 0.3, 0.3), "t_v"),
        ((0.6, 0.5, 0.3, 0.3), "t_v <= t_e"),
        ((0.2, 1.0, 0.3, 0.3), "t_e < 1"),
        ((0.2, 0.5, 1.3, 0.3), "p_e"),
        ((0.2, 0.5, 0.3, -0.01), "p_f"),
        ((0.2, float("nan"), 0.3, 0.3), "t_e"),
    ],
)
def test_piecewise_rejects_bad_parameters(args, message):
    with pytest.raises(ValueError, match=message):
        PiecewiseSelector(*args)


def test_piecewise_rejects_bad_indices():
    with pytest.raises(ValueError, match="different"):
        PiecewiseSelector(0.1, 0.5, 0.3, 0.3, video=1, image=1)
    with pytest.raises(ValueError, match="video"):
        PiecewiseSelector(0.1, 0.5, 0.3, 0.3, video=-1)


def test_simple_selectors():
    steps = [StepInfo(index=i, num_steps=6, timestep=900 - 150 * i) for i in range(6)]
    assert [FixedSelector(2).select(s, None) for s in steps] == [2] * 6
    assert [PatternSelector([0, 1, 1]).select(s, None) for s in steps] == [0, 1, 1, 0, 1, 1]
    # timesteps 900 750 600 450 300 150 against boundaries 700 > 300
    assert [NoiseLevelSelector([700, 300]).select(s, None) for s in steps] == [0, 0, 1, 1, 1, 2]
    assert [NoiseLevelSelector([500], models=[1, 0]).select(s, None) for s in steps] == [1, 1, 1, 0, 0, 0]
    for selector in (FixedSelector(), PatternSelector([0]), NoiseLevelSelector([1]), PiecewiseSelector(0, 0, 1, 1)):
        assert isinstance(selector, Selector)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FixedSelector(-1), "index"),
        (lambda: FixedSelector(1.5), "index"),
        (lambda: PatternSelector([]), "non-empty"),
        (lambda: PatternSelector([0, -2]), "pattern entry"),
        (lambda: NoiseLevelSelector([300, 700]), "strictly decreasing"),
        (lambda: NoiseLevelSelector([500], models=[0]), "2 ranges"),
    ],
)
def test_simple_selectors_reject_bad_arguments(make, message, unchecked):
    with pytest.raises(ValueError, match=message):
        make()
