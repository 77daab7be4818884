"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # later blocks build on earlier ones, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert len(namespace["result"].plan) == 50
    assert namespace["latents"].shape == (2, 8, 4, 8, 8)


def test_readme_command_lines_run(pipeline_folder, tmp_path, monkeypatch):
    """The `jvid sample` lines of the README, over the tiny pipeline laid out at the folders they name, with 2
    frames and 2 steps."""
    import shlex

    import av
    import numpy as np

    from jvid.cli import main

    section = README.read_text().split("## Pipeline and command line")[1].split("\n## ")[0]
    script = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in script.splitlines() if line.strip()]
    assert len(commands) == 4 and all(command[:2] == ["jvid", "sample"] for command in commands)
    links = {"models/jvid-64": "", "models/lvdm/unet": "video_unet", "models/lidm/unet": "image_unet",
             **{f"models/sd15/{part}": part for part in ("vae", "text_encoder", "tokenizer", "scheduler")}}
    for link, part in links.items():
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link).symlink_to(pipeline_folder / part)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        short = [] if "--from-sidecar" in command else ["--num-frames", "2", "--steps", "2", "--device", "cpu"]
        assert main(command[1:] + short) == 0, command

    def frames(name):
        with av.open(f"out/{name}") as container:
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]).astype(int)

    for index in (2, 3):
        assert np.abs(frames(f"part-{index}.mp4") - frames(f"makeup-{index}.mp4")).max() <= 2
    assert (tmp_path / "out/again.gif").read_bytes() == (tmp_path / "out/mix.gif").read_bytes()
