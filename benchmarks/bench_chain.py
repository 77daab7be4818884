"""The whole sampling chain in the paper's setting, four ways over the same networks, plan and conditioning.

    python benchmarks/bench_chain.py --sizes 8 16 32       # a markdown table (Table-1 width 256 on a GPU)
    python -m pytest benchmarks/bench_chain.py             # the same chains through pytest-benchmark

Setting (sec. 4.1 and Table 1): 4 videos with classifier-free guidance batched (8 in a network batch), 16 frames,
50 DDPM steps alternating the LVDM and the LIDM, CLIP-sized conditioning (77 x 768), bf16 on a GPU.

- plain: a diffusers-style loop, eager UNets in their own layouts and `DDPMScheduler.step`;
- eager: jvid's `MixtureSampler.sample`;
- graphed: jvid's `CUDAGraphSampler` (capture on the first call, timed apart);
- bare: the network calls of the plan and nothing else, eagerly and replayed from CUDA graphs. Chain time over bare
  time is the sampler's own overhead.

Model FLOPs come from torch's FlopCounterMode over one guided call of each network, summed over the plan, and are
set against the chip's bf16 matrix rate measured in the same run (a large bf16 matrix product). Without CUDA a
small version (width 32, 4 frames, 4 steps) runs on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch
from diffusers import DDPMScheduler
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from jvid import MixtureSampler, NoiseSchedule, PatternSelector
from jvid.models import ImageDenoiser, VideoDenoiser, lidm_unet, lvdm_unet
from jvid.samplers.graphed import CUDAGraphSampler
from jvid.samplers.guidance import guidance_context, paired_eps

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration; the defaults are the paper's sampling setting with Table-1 networks."""

    size: int = 8  # latent height and width (pixels / 8)
    videos: int = 4
    frames: int = 16
    steps: int = 50
    guidance_scale: float = 2.0
    width: int = 256
    dtype: torch.dtype = torch.bfloat16

    @property
    def small(self) -> dict[str, int]:
        """UNet options of a reduced network (narrow heads and conditioning) below Table-1 width."""
        return {} if self.width == 256 else {"head_dim": 8, "norm_num_groups": 8, "cross_attention_dim": 16}


GPU_SIZES = (8, 16, 32)
CPU_SETTING = Setting(size=4, videos=1, frames=4, steps=4, width=32, dtype=torch.float32)


def synchronize() -> None:
    if CUDA:
        torch.cuda.synchronize()


def wall_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call, device work included."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class Chains:
    """The networks, inputs and plan of one setting, and each way of running the chain over them."""

    def __init__(self, setting: Setting) -> None:
        self.setting = s = setting
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        with torch.device(DEVICE):
            nets = [net(width=s.width, sample_size=s.size, **s.small) for net in (lvdm_unet, lidm_unet)]
        self.video_net, self.image_net = (net.to(dtype=s.dtype) for net in nets)
        self.schedule = NoiseSchedule.scaled_linear(1000)
        self.denoisers = [VideoDenoiser(self.video_net, self.schedule), ImageDenoiser(self.image_net, self.schedule)]
        self.sampler = MixtureSampler(self.denoisers, PatternSelector([0, 1]))
        self.graphed = CUDAGraphSampler(self.sampler)
        self._compiled: CUDAGraphSampler | None = None  # built on first use: compiling takes minutes
        context = self.video_net.config.cross_attention_dim
        self.x_T = torch.randn(s.videos, s.frames, 4, s.size, s.size, generator=generator).to(DEVICE, s.dtype)
        self.cond = torch.randn(s.videos, 77, context, generator=generator).to(DEVICE, s.dtype)
        self.uncond = torch.randn(1, 77, context, generator=generator).to(DEVICE, s.dtype)
        self.plan = self.sampler.plan(s.steps)
        self.timesteps = self.sampler.solver.start(self.schedule, s.steps, gamma=1.0).timesteps

    def _sample(self, sampler: MixtureSampler | CUDAGraphSampler) -> torch.Tensor:
        generator = torch.Generator(DEVICE).manual_seed(1)
        return sampler.sample(self.x_T, num_steps=self.setting.steps, cond=self.cond, uncond=self.uncond,
                              guidance_scale=self.setting.guidance_scale, generator=generator,
                              progress=False).latents

    def eager(self) -> torch.Tensor:
        return self._sample(self.sampler)

    def fast(self) -> torch.Tensor:
        return self._sample(self.graphed)

    def compiled(self) -> torch.Tensor:
        """The graphed chain over the adapters' compiled calls (`compile_mode="default"`), built on first use."""
        if self._compiled is None:
            self._compiled = CUDAGraphSampler(self.sampler, compile_mode="default")
        return self._sample(self._compiled)

    @torch.no_grad()
    def plain(self) -> torch.Tensor:
        """What a diffusers user writes: latents in the video network's (b, c, f, h, w), frames folded for the LIDM."""
        s = self.setting
        scheduler = DDPMScheduler(trained_betas=self.schedule.betas.tolist(), clip_sample=False,
                                  variance_type="fixed_small")
        scheduler.set_timesteps(s.steps)
        generator = torch.Generator(DEVICE).manual_seed(1)
        x = rearrange(self.x_T, "b f c h w -> b c f h w")
        text = torch.cat([self.uncond.expand_as(self.cond), self.cond])
        for k, t in zip(self.plan, scheduler.timesteps):
            pair = torch.cat([x, x])
            if k == 0:
                eps = self.video_net(pair, t, encoder_hidden_states=text).sample
            else:
                frames = rearrange(pair, "b c f h w -> (b f) c h w")
                per_frame = text.repeat_interleave(s.frames, dim=0)
                eps = self.image_net(frames, t, encoder_hidden_states=per_frame).sample
                eps = rearrange(eps, "(b f) c h w -> b c f h w", f=s.frames)
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + s.guidance_scale * (eps_cond - eps_uncond)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return rearrange(x, "b c f h w -> b f c h w")

    def _network_call(self, k: int, denoiser: Callable | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """One guided call of network k (or of `denoiser` in its place) at training timestep t (a 1-element tensor),
        as the chain makes it."""
        context = guidance_context(self.cond, self.uncond, len(self.x_T))
        x = self.x_T.clone()
        denoiser = self.denoisers[k] if denoiser is None else denoiser
        return lambda t: paired_eps(denoiser, x, t.expand(len(x)), context)

    def per_frame_text(self, k: int) -> VideoDenoiser | ImageDenoiser:
        """Denoiser k attending to the text once per frame, as its network alone does (`share_text=False`)."""
        denoiser = self.denoisers[k]
        return type(denoiser)(denoiser.model, denoiser.schedule, share_text=False)

    @torch.no_grad()
    def bare_eager(self) -> None:
        calls = [self._network_call(k) for k in range(2)]
        steps = torch.tensor(self.timesteps, device=DEVICE)
        for i, k in enumerate(self.plan):
            calls[k](steps[i : i + 1])

    @torch.no_grad()
    def bare_graphed(self) -> Callable[[], None]:
        """Replays of one CUDA graph per network, in plan order: the network calls alone, without launch overhead."""
        t = torch.tensor([self.timesteps[0]], device=DEVICE)
        replays = []
        for k in range(2):
            call = self._network_call(k)
            call(t), call(t)  # warm-up, as before any capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                call(t)
            replays.append(graph.replay)

        def run() -> None:
            for k in self.plan:
                replays[k]()

        return run

    @torch.no_grad()
    def chain_flops(self, share_text: bool = True) -> int:
        """Model FLOPs of the whole chain: one guided call of each network, counted, times its steps in the plan.
        Without `share_text`, as the networks compute cross-attention alone: once per frame."""
        t = torch.tensor([self.timesteps[0]], device=DEVICE)
        per_network = []
        for k in range(2):
            with FlopCounterMode(display=False) as counter:
                self._network_call(k, None if share_text else self.per_frame_text(k))(t)
            per_network.append(counter.get_total_flops())
        return sum(per_network[k] for k in self.plan)


_matmul_rate: list[float] = []


def bf16_matmul_flops_per_second() -> float:
    """The chip's bf16 matrix rate, from a timed 8192³ product (measured once)."""
    if not _matmul_rate:
        from triton.testing import do_bench

        n = 8192
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        _matmul_rate.append(2 * n**3 / (do_bench(lambda: a @ b, warmup=50, rep=500, return_mode="median") * 1e-3))
    return _matmul_rate[0]


def measure(setting: Setting, repeats: int = 3, compiled: bool = False) -> dict[str, float]:
    """Seconds of each way of running the chain, capture time, FLOPs, and the ratios the benchmarks report; with
    `compiled`, also the graphed chain over torch.compile'd networks and its compile-and-capture time."""
    chains = Chains(setting)
    start = time.perf_counter()
    chains.fast()  # the first call captures the graphs
    synchronize()
    row: dict[str, float] = {"size": setting.size, "capture_s": time.perf_counter() - start}
    eager = chains.eager().float()
    row["difference"] = float((chains.fast().float() - eager).norm() / eager.norm())
    row["plain_s"] = wall_seconds(chains.plain, repeats)
    row["eager_s"] = wall_seconds(chains.eager, repeats)
    row["graphed_s"] = wall_seconds(chains.fast, repeats)
    row["bare_eager_s"] = wall_seconds(chains.bare_eager, repeats)
    if CUDA:
        row["bare_graphed_s"] = wall_seconds(chains.bare_graphed(), repeats)
        row["flops"] = chains.chain_flops()
        row["per_frame_flops"] = chains.chain_flops(share_text=False)
        row["bf16_rate"] = bf16_matmul_flops_per_second()
        row["tflop_per_s"] = row["flops"] / row["graphed_s"] / 1e12
        row["bf16_fraction"] = row["flops"] / row["graphed_s"] / row["bf16_rate"]
    if compiled:
        start = time.perf_counter()
        out = chains.compiled().float()
        synchronize()
        row["compile_s"] = time.perf_counter() - start
        row["compiled_difference"] = float((out - eager).norm() / eager.norm())
        row["compiled_s"] = wall_seconds(chains.compiled, repeats)
    return row


def table(rows: list[dict[str, float]]) -> str:
    """Markdown: times, speed-ups over the plain loop, sampler overhead over bare calls, model FLOP rate."""
    lines = [
        "| latent | plain loop s | jvid eager s | jvid graphed s | speed-up | eager overhead | graphed overhead "
        "| capture s | chain TFLOP (text per frame) | TFLOP/s | of bf16 rate | graphed vs eager |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bare = r.get("bare_graphed_s")
        graphed_overhead = "n/a" if bare is None else f"{r['graphed_s'] / bare - 1:+.1%}"
        lines.append(
            f"| {r['size']}x{r['size']} | {r['plain_s']:.3f} | {r['eager_s']:.3f} | {r['graphed_s']:.3f} "
            f"| {r['plain_s'] / r['graphed_s']:.1f}x | {r['eager_s'] / r['bare_eager_s'] - 1:+.1%} "
            f"| {graphed_overhead} | {r['capture_s']:.1f} "
            f"| {r.get('flops', float('nan')) / 1e12:.1f} ({r.get('per_frame_flops', float('nan')) / 1e12:.1f}) "
            f"| {r.get('tflop_per_s', float('nan')):.0f} | {r.get('bf16_fraction', float('nan')):.0%} "
            f"| {r['difference']:.1e} |"
        )
    compiled = [r for r in rows if "compiled_s" in r]
    if compiled:
        lines += ["", "With torch.compile (default mode) under the same graphs:", "",
                  "| latent | plain loop s | graphed + compiled s | speed-up | compile + capture s | TFLOP/s "
                  "| of bf16 rate | vs eager |", "|---|---|---|---|---|---|---|---|"]
        for r in compiled:
            rate = r["flops"] / r["compiled_s"]
            lines.append(
                f"| {r['size']}x{r['size']} | {r['plain_s']:.3f} | {r['compiled_s']:.3f} "
                f"| {r['plain_s'] / r['compiled_s']:.1f}x | {r['compile_s']:.0f} | {rate / 1e12:.0f} "
                f"| {rate / r['bf16_rate']:.0%} | {r['compiled_difference']:.1e} |"
            )
    return "\n".join(lines)


def cases() -> list[Setting]:
    return [Setting(size=size) for size in GPU_SIZES] if CUDA else [CPU_SETTING]


_chains: dict[Setting, Chains] = {}


def chains_for(setting: Setting) -> Chains:
    """One set of networks per setting, shared by its benchmarks (building Table-1 networks takes seconds)."""
    if setting not in _chains:
        _chains.clear()
        if CUDA:
            torch.cuda.empty_cache()
        _chains[setting] = Chains(setting)
    return _chains[setting]


@pytest.fixture(autouse=True)
def unchecked():
    """Times jvid as users run it, without the test run's jaxtyping/beartype annotation checks."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.mark.parametrize("setting", cases(), ids=lambda s: f"{s.size}x{s.size}")
@pytest.mark.parametrize("way", ["plain", "eager", "fast"])
def test_chain(benchmark, setting: Setting, way: str) -> None:
    chains = chains_for(setting)
    run = getattr(chains, way)
    out = run()  # the graphed chain captures here, before timing
    assert out.shape == chains.x_T.shape and bool(torch.isfinite(out).all())
    benchmark.group = f"chain {setting.size}x{setting.size}"

    def call() -> None:
        run()
        synchronize()

    benchmark.pedantic(call, rounds=3 if CUDA else 2, warmup_rounds=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GPU_SIZES), help="latent sizes (pixels / 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", type=int, nargs="*", default=[], metavar="SIZE",
                        help="latent sizes at which to time torch.compile'd networks too (minutes of compilation each)")
    args = parser.parse_args()
    if not CUDA:
        print("no CUDA device: the small CPU setting")
        print(table([measure(CPU_SETTING, args.repeats)]))
        return
    print(f"{torch.cuda.get_device_name()}, bf16 rate {bf16_matmul_flops_per_second() / 1e12:.0f} TFLOP/s")
    print(table([measure(replace(Setting(), size=size), args.repeats, size in args.compile) for size in args.sizes]))


if __name__ == "__main__":
    main()
