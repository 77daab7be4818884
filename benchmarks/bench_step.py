"""One reverse step (guidance, correlated noise, DDPM update): the fused Triton kernel against jvid's eager torch
path and a plain diffusers loop's step, beside the memory floor.

    python benchmarks/bench_step.py                 # a markdown table
    python -m pytest benchmarks/bench_step.py       # the same cases through pytest-benchmark

The step is step 25 of a 50-step DDPM run with classifier-free guidance g = 2 (ε of the doubled batch [ε_∅; ε_y],
as one network call returns it) and correlated noise r = 0.5 (z_ind and z_shared drawn in float32), γ = 1:

- fused: `fused_sampler_step`, one kernel;
- eager: jvid's torch path: the guidance combine, `NoiseDraw.combined` (eq. 9) and `AffineRun.step`;
- diffusers: a plain diffusers loop's step: `eps_u + g·(eps_c − eps_u)` then `DDPMScheduler.step`, which draws its
  own (independent) noise with the generator; jvid's paths take their parts already drawn.

On CUDA, "ms" is a `triton.testing.do_bench` median (CUDA events, L2 flushed before every call; at launch-bound
sizes it includes the host's launch cost where that outlasts the flush); "(graph)" is device time per call replayed
from a CUDA graph, as a graphed sampling loop runs the step (diffusers' step synchronises with the host and cannot be
captured); host µs is the Python side's cost per call. pytest-benchmark's own numbers are host wall time per call
including a synchronize. The floor is the bytes the fused step must move (x, [ε_∅; ε_y], z_ind and z_shared read
once, x written once) over the bandwidth of a measured device-to-device copy. Without CUDA the torch paths (and the
kernel, when Triton runs interpreted) run at one tiny size, so the file stays quick.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch
from bench_smoothing import (  # noqa: F401 (unchecked: the autouse fixture, active here once imported)
    case_id,
    copy_bandwidth,
    device_ms,
    host_us,
    replay_ms,
    unchecked,
)
from diffusers import DDPMScheduler

from jvid.noise import CorrelatedNoise, NoiseDraw
from jvid.samplers import AffineRun, DDPMSolver
from jvid.samplers.guidance import combine_guidance
from jvid.schedule import NoiseSchedule

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
SIZES = [
    (4, 16, 4, 32, 32),  # one guided batch of the demo's size: launch-bound
    (256, 16, 4, 32, 32),  # 256 videos of 256x256 pixels: metric generation, memory-bound
]
CPU_SIZE = (1, 4, 4, 8, 8)
DTYPES = [torch.bfloat16, torch.float32]
GUIDANCE_SCALE = 2.0  # sec. 4.2
SHARED_RATIO = 0.5
NUM_STEPS, STEP = 50, 25


@dataclass
class StepInputs:
    """Everything one step of each implementation reads, allocated once on DEVICE."""

    x: torch.Tensor
    eps: torch.Tensor  # [ε_∅; ε_y], batch 2b
    draw: NoiseDraw
    run: AffineRun
    coefficients: torch.Tensor
    step: torch.Tensor
    out: torch.Tensor
    scheduler: DDPMScheduler
    generator: torch.Generator

    @property
    def bytes_moved(self) -> int:
        """Each input of the fused step read once and x written once."""
        tensors = [self.x, self.eps, self.draw.independent, self.draw.shared, self.out]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def step_inputs(shape: tuple[int, ...], dtype: torch.dtype) -> StepInputs:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(DEVICE, dtype)
    eps = torch.randn((2 * shape[0], *shape[1:]), generator=generator).to(DEVICE, dtype)
    draw = CorrelatedNoise(SHARED_RATIO).draw(shape, generator=generator, device=DEVICE, dtype=dtype)
    run = DDPMSolver().start(NoiseSchedule.linear(1000), NUM_STEPS, gamma=1.0)
    table = torch.tensor([run.x_coef, run.eps_coef, run.noise_std], dtype=torch.float64).T
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    scheduler.set_timesteps(NUM_STEPS, device=DEVICE)
    return StepInputs(
        x=x,
        eps=eps,
        draw=draw,
        run=run,
        coefficients=table.to(DEVICE, torch.float32).contiguous(),
        step=torch.tensor(STEP, device=DEVICE),
        out=torch.empty_like(x),
        scheduler=scheduler,
        generator=torch.Generator(DEVICE).manual_seed(1),
    )


def fused(inputs: StepInputs) -> torch.Tensor:
    from jvid.kernels import fused_sampler_step

    draw = inputs.draw
    return fused_sampler_step(
        inputs.x, inputs.eps, inputs.coefficients, inputs.step, guidance_scale=GUIDANCE_SCALE,
        noise=draw.independent, shared_noise=draw.shared, shared_ratio=draw.shared_ratio, out=inputs.out,
    )


def eager(inputs: StepInputs) -> torch.Tensor:
    eps = combine_guidance(*inputs.eps.chunk(2), GUIDANCE_SCALE)
    return inputs.run.step(STEP, inputs.x, eps, inputs.draw.combined(inputs.x.dtype))


def diffusers_step(inputs: StepInputs) -> torch.Tensor:
    eps_uncond, eps_cond = inputs.eps.chunk(2)
    eps = eps_uncond + GUIDANCE_SCALE * (eps_cond - eps_uncond)
    timestep = inputs.scheduler.timesteps[STEP]
    return inputs.scheduler.step(eps, timestep, inputs.x, generator=inputs.generator).prev_sample


IMPLEMENTATIONS: dict[str, Callable[[StepInputs], torch.Tensor]] = {
    "fused": fused, "eager": eager, "diffusers": diffusers_step,
}


def on_latents(fn: Callable[[StepInputs], torch.Tensor], inputs: StepInputs) -> Callable[[torch.Tensor], torch.Tensor]:
    """`fn` over `inputs` with x taken as the argument: the form bench_smoothing's timers call."""
    return lambda x: fn(replace(inputs, x=x))


def kernel_runs_here() -> bool:
    if CUDA:
        return True
    from jvid.kernels import is_interpreted

    return is_interpreted()


def cases() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    names = [name for name in IMPLEMENTATIONS if name != "fused" or kernel_runs_here()]
    if not CUDA:
        return [(name, CPU_SIZE, torch.float32) for name in names]
    return [(name, shape, dtype) for shape in SIZES for dtype in DTYPES for name in names]


@pytest.mark.parametrize(("name", "shape", "dtype"), cases(), ids=case_id)
def test_sampler_step(benchmark, name, shape, dtype):
    fn = IMPLEMENTATIONS[name]
    inputs = step_inputs(shape, dtype)
    out = fn(inputs)  # compiles the kernel before timing
    assert out.shape == inputs.x.shape and out.dtype == dtype
    benchmark.group = f"{case_id(shape)} {case_id(dtype)}"
    if not CUDA:
        benchmark.pedantic(fn, args=(inputs,), rounds=20, warmup_rounds=2)
        return
    benchmark.extra_info.update(
        device_ms=device_ms(fn, inputs), floor_ms=inputs.bytes_moved / copy_bandwidth(),
        copy_gb_per_s=copy_bandwidth() / 1e6,
    )
    if name == "fused":
        benchmark.extra_info["relative_difference_to_eager"] = relative_difference(inputs)
        assert benchmark.extra_info["relative_difference_to_eager"] < 1e-2

    def call():
        fn(inputs)
        torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=100, warmup_rounds=10)


def relative_difference(inputs: StepInputs) -> float:
    """‖fused − eager‖ / ‖eager‖: rounding only (the eager path rounds ε̂ and z to the latents' dtype)."""
    a, b = fused(inputs).double(), eager(inputs).double()
    return float((a - b).norm() / b.norm())


def rows() -> list[dict]:
    """Per size and dtype on CUDA: each implementation's device ms (do_bench median), the jvid paths' device ms
    replayed from a graph, host µs per call, the floor, and how far the fused result lies from the eager one."""
    out = []
    for shape in SIZES:
        for dtype in DTYPES:
            inputs = step_inputs(shape, dtype)
            row = {
                "shape": case_id(shape), "dtype": case_id(dtype), "bytes": inputs.bytes_moved,
                "floor_ms": inputs.bytes_moved / copy_bandwidth(), "relative_difference": relative_difference(inputs),
            }
            for name, fn in IMPLEMENTATIONS.items():
                row[f"{name}_ms"] = device_ms(fn, inputs)
                row[f"{name}_host_us"] = host_us(on_latents(fn, inputs), inputs.x)
                if name != "diffusers":
                    row[f"{name}_graph_ms"] = replay_ms(on_latents(fn, inputs), inputs.x)
            out.append(row)
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| latents | dtype | fused ms | eager ms | diffusers ms | diffusers / fused | fused ms (graph) "
        "| eager ms (graph) | eager / fused (graph) | floor ms | floor / fused (graph) "
        "| host µs fused / eager / diffusers | ‖fused − eager‖ / ‖eager‖ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['fused_ms']:.4f} | {r['eager_ms']:.4f} | {r['diffusers_ms']:.4f} "
            f"| {r['diffusers_ms'] / r['fused_ms']:.1f}x | {r['fused_graph_ms']:.4f} | {r['eager_graph_ms']:.4f} "
            f"| {r['eager_graph_ms'] / r['fused_graph_ms']:.1f}x | {r['floor_ms']:.4f} "
            f"| {r['floor_ms'] / r['fused_graph_ms']:.0%} "
            f"| {r['fused_host_us']:.0f} / {r['eager_host_us']:.0f} / {r['diffusers_host_us']:.0f} "
            f"| {r['relative_difference']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    if not CUDA:
        inputs = step_inputs(CPU_SIZE, torch.float32)
        names = [name for name, _, _ in cases()]
        times = {name: min(timeit.repeat(lambda fn=IMPLEMENTATIONS[name]: fn(inputs), number=10, repeat=5)) / 10
                 for name in names}
        listed = ", ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in times.items())
        print(f"no CUDA device: {case_id(CPU_SIZE)} float32, wall time per step: {listed}")
        return
    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy_bandwidth() / 1e6:.0f} GB/s")
    print(table(rows()))


if __name__ == "__main__":
    main()
