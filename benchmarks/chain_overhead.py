"""Times the eager mixture chain against the bare network calls of the same plan: what the sampler itself costs.

Setting of the paper's sampling (Table-1 networks, classifier-free guidance batched, 16 frames, 50 DDPM steps,
alternating models). Run on a GPU: `python benchmarks/chain_overhead.py --sizes 8 16 32`; `--width 32` runs a
small version anywhere.
"""

from __future__ import annotations

import argparse
import time

import torch

from jvid import MixtureSampler, NoiseSchedule, PatternSelector
from jvid.models import ImageDenoiser, VideoDenoiser, lidm_unet, lvdm_unet
from jvid.samplers.guidance import guided_eps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of `fn()` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8], help="latent sizes (pixels / 8)")
    parser.add_argument("--width", type=int, default=256, help="UNet base width (Table 1: 256)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    schedule = NoiseSchedule.linear(1000)
    small = {} if args.width == 256 else dict(head_dim=8, norm_num_groups=8, cross_attention_dim=16)
    context = small.get("cross_attention_dim", 768)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, dtype {dtype}, "
          f"width {args.width}, {args.videos} videos x CFG, {args.frames} frames, {args.steps} steps")
    print("| latent | chain (s) | bare network calls (s) | sampler overhead |")
    print("|---|---|---|---|")
    for size in args.sizes:
        nets = [lvdm_unet(width=args.width, sample_size=size, **small), lidm_unet(width=args.width, sample_size=size,
                                                                                  **small)]
        nets = [n.to(device=device, dtype=dtype) for n in nets]
        denoisers = [VideoDenoiser(nets[0], schedule), ImageDenoiser(nets[1], schedule)]
        sampler = MixtureSampler(denoisers, PatternSelector([0, 1]))
        x_T = torch.randn(args.videos, args.frames, 4, size, size, device=device, dtype=dtype)
        cond = torch.randn(args.videos, 77, context, device=device, dtype=dtype)
        uncond = torch.zeros(1, 77, context, device=device, dtype=dtype)
        run = sampler.solver.start(schedule, args.steps, gamma=1.0)
        plan = sampler.plan(args.steps)
        ts = torch.tensor(run.timesteps, device=device)

        def chain() -> None:
            sampler.sample(x_T, num_steps=args.steps, cond=cond, uncond=uncond, guidance_scale=2.0, progress=False)

        def bare() -> None:
            with torch.no_grad():
                for i, k in enumerate(plan):
                    guided_eps(denoisers[k], x_T, ts[i].expand(len(x_T)), cond, uncond, 2.0)

        with torch.no_grad():
            t_chain, t_bare = timed(chain, device, args.repeats), timed(bare, device, args.repeats)
        print(f"| {size}x{size} | {t_chain:.3f} | {t_bare:.3f} | {(t_chain - t_bare) / t_bare:+.1%} |")
        del nets, denoisers, sampler
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
