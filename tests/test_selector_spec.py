"""Selectors from text: each form of --selector, and a named error for each malformed one."""

from __future__ import annotations

import pytest

from jvid.samplers import FixedSelector, PiecewiseSelector
from jvid.selector_spec import parse_selector

BOTH = ("video_unet", "image_unet")


@pytest.mark.parametrize(("spec", "unets", "expected"), [
    ("auto", BOTH, None),
    ("video", BOTH, FixedSelector(0)),
    ("image", BOTH, FixedSelector(1)),
    ("image", ("image_unet",), FixedSelector(0)),
    ("128", BOTH, PiecewiseSelector.table6(128)),
    ("table6:256", BOTH, PiecewiseSelector.table6(256)),
    ("piecewise:0.1,0.6,0.4,0.2", BOTH, PiecewiseSelector(0.1, 0.6, 0.4, 0.2)),
    ("jvid.samplers:FixedSelector", ("image_unet",), FixedSelector(0)),
])
def test_selectors_from_text(spec, unets, expected):
    assert repr(parse_selector(spec, unets)) == repr(expected)


@pytest.mark.parametrize(("spec", "unets", "match"), [
    ("fancy", BOTH, "unknown selector 'fancy'"),
    ("512", BOTH, "Table 6 has presets for 64, 128, 256"),
    ("table6:x", BOTH, "Table 6 has presets"),
    ("piecewise:0.1,0.6", BOTH, "expected 4 numbers t_v,t_e,p_e,p_f"),
    ("piecewise:a,b,c,d", BOTH, "expected 4 numbers"),
    ("piecewise:0.7,0.2,0.3,0.3", BOTH, "t_v <= t_e"),
    ("video", ("image_unet",), "needs the video_unet, but the pipeline has only the image_unet"),
    ("64", ("video_unet",), "needs the image_unet"),
    ("no_such_module_xyz:Selector", BOTH, "no module named 'no_such_module_xyz'"),
    ("jvid.samplers:NoSuchSelector", BOTH, "module 'jvid.samplers' has no class 'NoSuchSelector'"),
    ("collections:OrderedDict", BOTH, "OrderedDict is not a Selector"),
    ("jvid.samplers:PiecewiseSelector", BOTH, "cannot be made with no arguments"),
])
def test_bad_selectors_are_named(spec, unets, match, unchecked):
    with pytest.raises(ValueError, match=match):
        parse_selector(spec, unets)
