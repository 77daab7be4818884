import json

import pytest
import torch

from jvid.cli import main


def test_demo_mixes_two_models_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--steps", "6", "--frames", "3", "--batch", "1", "--seed", "5", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    saved = torch.load(out / "latents.pt")
    assert saved["latents"].shape == (1, 3, 4, 8, 8) and torch.isfinite(saved["latents"]).all()
    assert len(report["plan"]) == 6 and report["plan"][0] == 0  # Table 6 starts with the video model
    assert report["video_steps"] + report["image_steps"] == 6
    assert "plan (V = video model, I = image model)" in capsys.readouterr().out
    # Same seed, same run: the report's plan and the latents repeat exactly.
    assert main([*args[:-1], str(tmp_path / "again")]) == 0
    assert torch.equal(torch.load(tmp_path / "again" / "latents.pt")["latents"], saved["latents"])


@pytest.mark.parametrize(
    "flag, value, message",
    [("--gamma", "-1", "gamma"), ("--r-image", "1.5", "shared_ratio"), ("--steps", "0", "num_steps"),
     ("--smoothing", "-2", "threshold")],
)
def test_demo_bad_values_give_one_line_errors(flag, value, message, tmp_path, capsys, unchecked):
    assert main(["demo", "--steps", "2", flag, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jvid demo: error:") and message in err and "\n" not in err


def test_unknown_preset_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--preset", "512"])
    assert "invalid choice" in capsys.readouterr().err
