"""The `jvid` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jvid.samplers.selectors import TABLE6


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jvid", description="Compose diffusion models at sampling time.")
    commands = parser.add_subparsers(dest="command", required=True)
    _demo_parser(commands)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"jvid {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
