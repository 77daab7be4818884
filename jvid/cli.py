"""The `jvid` command line: `jvid demo` and `jvid sample`. Every error, of the arguments or of a run's settings and
model folders, is one line `jvid COMMAND: error: ...` and exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jvid.samplers.graphed import COMPILE_MODES
from jvid.samplers.selectors import TABLE6


class UsageError(Exception):
    """A command line that does not parse; its message is the whole one-line error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage and exits; we report one line instead
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _demo_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="mix a small video and image model end to end (CPU, seconds)",
        description="Sample latent videos with a small LVDM and LIDM (random weights) mixed by the paper's "
        "selection policy, with correlated noise, gamma and temporal latent smoothing.",
    )
    demo.add_argument("--batch", type=int, default=2, help="videos per batch")
    demo.add_argument("--frames", type=int, default=8, help="frames F per video")
    demo.add_argument("--latent-size", type=int, default=8, help="latent height and width (pixels / 8)")
    demo.add_argument("--width", type=int, default=32, help="base channel count of both UNets (Table 1: 256)")
    demo.add_argument("--steps", type=int, default=50, help="DDPM steps (the paper uses 50)")
    demo.add_argument("--preset", type=int, choices=sorted(TABLE6), default=64,
                      help="Table-6 selection parameters (t_v, t_e, p_e, p_f) of this resolution")
    demo.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance g (eq. 4)")
    demo.add_argument("--gamma", type=float, default=1.0, help="γ, scale of the noise term (sec. 3.5)")
    demo.add_argument("--r-video", type=float, default=0.0, help="shared-noise ratio r_v on video steps (eq. 8-9)")
    demo.add_argument("--r-image", type=float, default=0.0, help="shared-noise ratio r_i on image steps (eq. 8-9)")
    demo.add_argument("--smoothing", type=float, default=2.0, help="temporal smoothing threshold c (sec. 3.6)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the models, the noise and the plan")
    demo.add_argument("--out", type=Path, default=Path("out/demo"),
                      help="folder for latents.pt and report.json")
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from jvid.demo import DemoSettings, run_demo

    settings = DemoSettings(
        batch=args.batch, frames=args.frames, latent_size=args.latent_size, width=args.width, steps=args.steps,
        preset=args.preset, guidance_scale=args.guidance_scale, gamma=args.gamma, r_video=args.r_video,
        r_image=args.r_image, smoothing_threshold=args.smoothing, seed=args.seed,
    )
    report = run_demo(settings, out=args.out)
    plan = "".join("V" if k == 0 else "I" for k in report["plan"])
    print(f"plan (V = video model, I = image model): {plan}")
    print(f"{report['video_steps']} video steps, {report['image_steps']} image steps; "
          f"sampling {report['sampling_seconds']:.2f} s, smoothing {report['smoothing_seconds'] * 1e3:.1f} ms; "
          f"{report['smoothed_fraction']:.1%} of latent vectors smoothed")
    print(f"wrote {args.out / 'latents.pt'} and {args.out / 'report.json'}")


MODEL_HELP = {
    "video_unet": "the video ε-model (LVDM, sec. 3.3): a UNet3DConditionModel or UNetMotionModel folder",
    "image_unet": "the image ε-model (LIDM, sec. 3.2): a UNet2DConditionModel folder",
    "vae": "the AutoencoderKL that decodes each frame's latents (sec. 3.2)",
    "text_encoder": "the CLIP text encoder (CLIPTextModel) of the image model, and of the video model unless "
                    "--video-text-encoder is given (sec. 4.1)",
    "tokenizer": "the CLIP tokenizer of --text-encoder",
    "scheduler": "a diffusers scheduler whose noise schedule both models share (sec. 3.4); sampling is always the "
                 "DDPM chain of eq. 5",
    "video_text_encoder": "the video model's own CLIP text encoder, for a video model conditioned on other "
                          "embeddings than the image model",
    "video_tokenizer": "the CLIP tokenizer of --video-text-encoder",
}


def _sample_parser(commands: argparse._SubParsersAction) -> None:
    from jvid.sample import DTYPES, SampleSettings

    defaults = {f.name: f.default for f in SampleSettings.__dataclass_fields__.values()}
    sample = commands.add_parser(
        "sample",
        argument_default=argparse.SUPPRESS,  # only the flags given reach the settings, which hold the defaults
        help="make videos with a video and an image model from local folders",
        description="Sample videos with the JVID mixture: a video and an image ε-model take turns in one reverse "
        "DDPM chain. Writes each video (.mp4 or .gif) with a JSON sidecar holding everything needed to make it "
        "again. Models load from local folders only; either UNet may be left out for a plain one-model chain.",
    )
    models = sample.add_argument_group("models (local folders written by save_pretrained)")
    models.add_argument("--pipeline", metavar="DIR",
                        help="a JVIDPipeline folder; the component folders below replace its parts")
    for role, text in MODEL_HELP.items():
        models.add_argument(f"--{role.replace('_', '-')}", metavar="DIR", help=text)

    prompt = sample.add_argument_group("prompt (give one)")
    prompt.add_argument("--prompt", metavar="TEXT", help="the text y the videos show")
    prompt.add_argument("--ucf-class", metavar="NAME",
                        help="a UCF-101 class such as ApplyEyeMakeup, made into the prompt of sec. 4.1 ('A person "
                        "apply eye makeup', the subject drawn from --seed)")

    chain = sample.add_argument_group("chain")
    chain.add_argument("--num-frames", type=int, metavar="F",
                       help=f"frames per video (default {defaults['num_frames']})")
    chain.add_argument("--height", type=int, help="frame height in pixels (default: the first UNet's sample size "
                       "times the VAE's scale factor)")
    chain.add_argument("--width", type=int, help="frame width in pixels (default as --height)")
    chain.add_argument("--steps", type=int, help=f"DDPM steps (eq. 5; default {defaults['steps']}, as the paper)")
    chain.add_argument("--guidance-scale", type=float, metavar="G",
                       help=f"classifier-free guidance scale g of eq. 4 (default {defaults['guidance_scale']})")
    chain.add_argument("--selector", metavar="SPEC",
                       help="which model denoises each step (sec. 3.4): auto (Table 6's P_V for the resolution "
                       "nearest the frame size when both UNets are given, else the one UNet), video or image (that "
                       "model alone), 64, 128, 256 or table6:R (Table 6's t_v,t_e,p_e,p_f), "
                       "piecewise:t_v,t_e,p_e,p_f (P_V of sec. 4.3: video only until progress t_v, then down to p_e "
                       "at t_e and to p_f at the end), or package.module:ClassName, a class with a method "
                       "select(step, generator) -> int made with no arguments (default auto)")
    chain.add_argument("--gamma", type=float, help=f"γ, the scale of the noise term σ_t z (sec. 3.5; default "
                       f"{defaults['gamma']})")
    chain.add_argument("--r-video", type=float, metavar="R", help="shared-noise ratio r_v of the video model's steps "
                       f"(eq. 8-9, in [0, 1]; default {defaults['r_video']})")
    chain.add_argument("--r-image", type=float, metavar="R", help="shared-noise ratio r_i of the image model's steps "
                       f"(eq. 8-9, in [0, 1]; default {defaults['r_image']})")
    chain.add_argument("--smoothing", type=float, metavar="C", help="threshold c of temporal latent smoothing (sec. "
                       f"3.6); 0 switches smoothing off (default {defaults['smoothing']})")

    run = sample.add_argument_group("run")
    run.add_argument("--seed", type=int, help="seed of the plan, the prompt's subject and every video's noise; video "
                     f"i's noise depends only on the seed and i (default {defaults['seed']})")
    run.add_argument("--batch", type=int, metavar="N", help=f"videos of the prompt (default {defaults['batch']})")
    run.add_argument("--first-index", type=int, metavar="I",
                     help="index of the first video: --first-index 2 --batch 2 makes videos 2 and 3 of --batch 4, "
                     f"so a batch can be split across processes (default {defaults['first_index']})")
    run.add_argument("--device", help="torch device, e.g. cuda or cuda:1 (default: cuda if available, else cpu)")
    run.add_argument("--dtype", choices=list(DTYPES), help=f"weights' dtype (default {defaults['dtype']})")
    run.add_argument("--out", metavar="PATH", help="the video file; .mp4 (PyAV) or .gif picks the format. With "
                     "--batch N > 1, video i goes to PATH's name with -i added (clip.mp4 -> clip-0.mp4, ...). A "
                     f"sidecar .json goes beside each video (default {defaults['out']})")
    run.add_argument("--cuda-graphs", action="store_true",
                     help="replay each UNet's step from a CUDA graph captured on first use: the same chain, several "
                     "times faster at small sizes (captured on CUDA devices; elsewhere the same steps run uncaptured)")
    run.add_argument("--compile", dest="compile_mode", nargs="?", const="default", choices=COMPILE_MODES,
                     help="with --cuda-graphs, compile the UNets with torch.compile first (MODE default: default): "
                     "minutes on the first call, faster networks")
    run.add_argument("--fps", type=float, help=f"frames per second of the file (default {defaults['fps']}, as "
                     "the paper's UCF-101 videos)")
    run.add_argument("--from-sidecar", metavar="FILE",
                     help="take every setting from a sidecar .json; flags given as well replace its settings, and "
                     "--out is required")
    sample.set_defaults(run=_run_sample)


def _run_sample(args: argparse.Namespace) -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from jvid.sample import ModelFolders, SampleSettings, sample, write
    from jvid.video import read_sidecar

    given = {name: value for name, value in vars(args).items() if name not in ("run", "command", "from_sidecar")}
    folders = {name: given.pop(name) for name in [*given] if name in ModelFolders.__dataclass_fields__}
    if "from_sidecar" in args:
        if "out" not in given:
            raise ValueError("--from-sidecar needs --out for the new video, so that the sidecar's video stays")
        settings = SampleSettings.from_record(read_sidecar(args.from_sidecar), models=folders, **given)
    else:
        settings = SampleSettings(models=ModelFolders(**folders), **given)
    for library in (diffusers_logging, transformers_logging):  # the sampler's bar is the one that matters
        library.disable_progress_bar()
    sampled = sample(settings)
    letters = "".join(sampled.record["unets"][k][0].upper() for k in sampled.record["plan"])
    print(f"prompt: {sampled.record['prompt']!r}")
    print(f"plan (V = video model, I = image model): {letters}")
    for video, sidecar in write(sampled, settings):
        print(f"wrote {video} and {sidecar}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="jvid", description="Compose diffusion models at sampling time.")
    commands = parser.add_subparsers(dest="command", required=True)
    _demo_parser(commands)
    _sample_parser(commands)
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"jvid {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
