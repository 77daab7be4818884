"""The mixture chain on static buffers, each denoiser's step captured once as a CUDA graph and replayed.

The plan is drawn before the first step (sec. 3.4), so the loop is static: step i runs denoiser plan[i] over the same
buffers. One step of denoiser k is a fixed program: the network call (conditional and unconditional halves in one
batch, eq. 4), then one fused kernel for the guidance combine, the DDPM/DDIM update and the correlated noise with γ
(eq. 5, 8-9), then the step counter's advance. The counter, the per-step coefficients and timesteps live in device
memory, so one graph per (denoiser, shape) replays every step of that denoiser. Per step the host only draws the
noise, from the same generators in the same order as the eager loop, and launches one graph.

On the CPU the same program runs uncaptured (the fused kernel in Triton's interpreter when TRITON_INTERPRET=1, else
its PyTorch reference), so the path is tested everywhere; only the capture needs CUDA.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from jvid.models.denoiser import CompilableDenoiser
from jvid.noise import NoiseDraw, noise_draw
from jvid.samplers.guidance import guidance_context, paired_eps
from jvid.samplers.mixture import Generators, MixtureSampler, PlannedChain, SampleResult, StepCallback
from jvid.samplers.selectors import StepInfo
from jvid.samplers.solvers import AffineRun
from jvid.shapes import Latents

WARMUP_CALLS = 2
"""Eager calls of a step program before its capture: lazy initialisation and cuDNN's algorithm search happen here."""

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
"""`torch.compile` modes that can run inside jvid's own graphs (reduce-overhead would capture graphs of its own)."""


@dataclass
class _Buffers:
    """Device memory that every step program of one latent shape reads and writes, allocated once."""

    x: Latents
    step: Tensor  # int64 (1,): index of the current step, advanced by each program
    coefficients: Tensor  # float32 (T, 3): (a_i, b_i, σ_i) of step i in the first n rows
    timesteps: Tensor  # int64 (T,): training timestep of step i in the first n entries
    nonfinite: Tensor  # int32 (T,): set at step i when the latents became NaN or Inf there

    @classmethod
    def like(cls, x: Latents, max_steps: int) -> _Buffers:
        return cls(
            x=torch.empty_like(x, memory_format=torch.contiguous_format),
            step=torch.zeros(1, dtype=torch.int64, device=x.device),
            coefficients=torch.zeros(max_steps, 3, dtype=torch.float32, device=x.device),
            timesteps=torch.zeros(max_steps, dtype=torch.int64, device=x.device),
            nonfinite=torch.zeros(max_steps, dtype=torch.int32, device=x.device),
        )

    def load(self, chain: PlannedChain) -> None:
        """Starts `chain`: its x_T, coefficients and timesteps in place, the counter and flags at zero."""
        run = chain.run
        n = len(run.timesteps)
        table = torch.tensor([run.x_coef, run.eps_coef, run.noise_std], dtype=torch.float64).T
        self.coefficients[:n].copy_(table)
        self.timesteps[:n].copy_(torch.tensor(run.timesteps, dtype=torch.int64))
        self.x.copy_(chain.x)
        self.step.zero_()
        self.nonfinite[:n].zero_()

    def state(self) -> tuple[Tensor, ...]:
        """What a program writes: saved and restored around the warm-up calls before a capture."""
        return self.x, self.step, self.nonfinite


@dataclass
class _StepProgram:
    """One step of one denoiser over the static buffers, with its own conditioning and noise buffers."""

    denoiser: Callable[..., Latents]
    buffers: _Buffers
    guidance_scale: float
    context: Tensor | None  # [∅; y] under guidance, else y (None for an unconditional model)
    noise: NoiseDraw  # buffers for the draw of each step, in the layout of this denoiser's noise generator
    step_fn: Callable[..., Latents]
    check_eps: Callable[[Latents], None]
    replay: Callable[[], None] | None = field(default=None)

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def __call__(self) -> None:
        x, buffers = self.buffers.x, self.buffers
        t = buffers.timesteps.index_select(0, buffers.step).expand(len(x))
        eps = paired_eps(self.denoiser, x, t, self.context) if self.guided else self.denoiser(x, t, self.context)
        self.check_eps(eps[: len(x)])
        self.step_fn(
            x,
            eps,
            buffers.coefficients,
            buffers.step,
            guidance_scale=self.guidance_scale if self.guided else None,
            noise=self.noise.independent,
            shared_noise=self.noise.shared,
            shared_ratio=self.noise.shared_ratio,
            out=x,
            nonfinite=buffers.nonfinite,
        )
        buffers.step.add_(1)

    def load(self, context: Tensor | None) -> None:
        """This run's conditioning (as `_context` makes it) into the program's buffer."""
        if self.context is not None:
            self.context.copy_(context)

    def set_noise(self, draw: NoiseDraw) -> None:
        """This step's z into the program's noise buffers."""
        for name in ("independent", "shared"):
            target, value = getattr(self.noise, name), getattr(draw, name)
            if (target is None) != (value is None) or draw.shared_ratio != self.noise.shared_ratio:
                raise ValueError(f"the noise generator changed the layout of its draws between steps ({name} part "
                                 f"{'missing' if value is None else 'new'}, shared ratio {draw.shared_ratio})")
            if target is not None:
                target.copy_(value)

    def run(self) -> None:
        (self.replay or self)()


class CUDAGraphSampler:
    """`sampler`'s chain with each denoiser's step captured as a CUDA graph: same plan, schedule, noise draws.

    The results equal the eager `sampler.sample` up to rounding: the fused step keeps the guidance combine and the
    update in float32 where the eager loop rounds ε̂ and z to the latents' dtype. Graphs are captured on the first
    use of a (denoiser, latent shape, dtype, conditioning shape, guidance) and kept for later calls; capture takes
    about two eager steps per denoiser. `compile_mode` passes each denoiser through `torch.compile` first
    (minutes of compilation on first use, for faster networks; see `COMPILE_MODES`): a `CompilableDenoiser` (jvid's
    adapters) compiles itself, after rewriting its network for the compiler; any other is compiled as it is. Each
    network compiles once per shape of its inputs, and the adapters' compilations count together against
    `torch._dynamo.config.recompile_limit`, beyond which torch runs further shapes uncompiled (with a warning).

    Runs the graphs for CUDA latents with jvid's DDPM or DDIM solver and tensor (or no) conditioning; on the CPU the
    same program runs uncaptured. Other solvers or conditioning fall back to the eager loop (with a warning on CUDA).
    """

    def __init__(self, sampler: MixtureSampler, *, compile_mode: str | None = None) -> None:
        if not isinstance(sampler, MixtureSampler):
            raise TypeError(f"CUDAGraphSampler wraps a MixtureSampler, got {type(sampler).__name__}")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be None or one of {COMPILE_MODES}, got {compile_mode!r}")
        self.sampler = sampler
        self.compile_mode = compile_mode
        self._buffers: dict[tuple[Any, ...], _Buffers] = {}
        self._programs: dict[tuple[Any, ...], _StepProgram] = {}
        self._denoisers: dict[int, Callable[..., Latents]] = {}
        self._pool: Any = None

    def plan(self, num_steps: int, generator: torch.Generator | None = None) -> list[int]:
        """The wrapped sampler's plan (`MixtureSampler.plan`)."""
        return self.sampler.plan(num_steps, generator)

    @torch.no_grad()
    def sample(
        self,
        x_T: Latents,
        *,
        num_steps: int,
        cond: Any = None,
        uncond: Any = None,
        guidance_scale: float = 1.0,
        generator: Generators = None,
        plan: Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = True,
    ) -> SampleResult:
        """`MixtureSampler.sample` with the same arguments; `callback` sees the live buffer (clone to keep it)."""
        chain = self.sampler._prepare(x_T, num_steps, cond, uncond, guidance_scale, generator, plan)
        reason = self._unsupported(chain)
        if reason is not None:
            if x_T.is_cuda:
                warnings.warn(f"CUDAGraphSampler runs the eager loop: {reason}", stacklevel=2)
            return self.sampler.sample(x_T, num_steps=num_steps, cond=cond, uncond=uncond,
                                       guidance_scale=guidance_scale, generator=generator, plan=chain.plan,
                                       callback=callback, progress=progress)
        buffers = self._buffers_for(chain.x)
        buffers.load(chain)
        programs = {}
        for k in sorted(set(chain.plan)):
            context = _context(chain.conds[k], chain.unconds[k], len(chain.x), guidance_scale)
            programs[k] = self._program(k, context, chain, buffers, guidance_scale)
            programs[k].load(context)
        run: AffineRun = chain.run  # type: ignore[assignment]
        n = len(chain.plan)
        for i in tqdm(range(n), desc="jvid", disable=not progress):
            k = chain.plan[i]
            program = programs[k]
            if run.adds_noise(i):
                program.set_noise(self._draw(k, buffers.x, generator))
            if program.replay is None and buffers.x.is_cuda:
                program.replay = self._capture(program)
            program.run()
            if callback is not None:
                callback(StepInfo(index=i, num_steps=n, timestep=run.timesteps[i]), k, buffers.x)
        if self.sampler.check_finite:
            self.sampler._raise_if_not_finite(chain, buffers.nonfinite[:n].bool())
        return chain.result(buffers.x.clone())

    def _unsupported(self, chain: PlannedChain) -> str | None:
        """Why `chain` cannot run on static buffers, or None."""
        if not isinstance(chain.run, AffineRun):
            return f"{self.sampler.solver!r} is not one of jvid's affine solvers (ddpm, ddim)"
        for name, values in (("cond", chain.conds), ("uncond", chain.unconds)):
            for k, value in enumerate(values):
                if value is not None and not isinstance(value, Tensor):
                    return f"{name} of denoiser {k} is a {type(value).__name__}, not a tensor"
        return None

    def _buffers_for(self, x: Latents) -> _Buffers:
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self._buffers:
            self._buffers[key] = _Buffers.like(x, self.sampler.schedule.num_train_timesteps)
        return self._buffers[key]

    def _program(
        self, k: int, context: Tensor | None, chain: PlannedChain, buffers: _Buffers, guidance_scale: float
    ) -> _StepProgram:
        """Denoiser k's step program for these buffers and a conditioning laid out as `context`, built once."""
        x = buffers.x
        layout = None if context is None else (tuple(context.shape), context.dtype)
        key = (k, tuple(x.shape), x.dtype, x.device, float(guidance_scale), layout)
        if key not in self._programs:
            probe = self._draw(k, x[:1], torch.Generator(x.device).manual_seed(0))
            noise = NoiseDraw(
                independent=_empty_like_rows(probe.independent, len(x)),
                shared=_empty_like_rows(probe.shared, len(x)),
                shared_ratio=probe.shared_ratio,
            )
            first_step = chain.plan.index(k)
            self._programs[key] = _StepProgram(
                denoiser=self._denoiser(k),
                buffers=buffers,
                guidance_scale=float(guidance_scale),
                context=None if context is None else context.clone(memory_format=torch.contiguous_format),
                noise=noise,
                step_fn=_step_function(x),
                check_eps=lambda eps: self.sampler._check_eps(k, first_step, eps, x),
            )
        return self._programs[key]

    def _denoiser(self, k: int) -> Callable[..., Latents]:
        if k not in self._denoisers:
            denoiser = self.sampler.denoisers[k]
            if self.compile_mode is None:
                self._denoisers[k] = denoiser
            elif isinstance(denoiser, CompilableDenoiser):
                self._denoisers[k] = denoiser.compiled(self.compile_mode)
            else:
                self._denoisers[k] = torch.compile(denoiser.__call__, mode=self.compile_mode, dynamic=False)
        return self._denoisers[k]

    def _draw(self, k: int, x: Latents, generator: Generators) -> NoiseDraw:
        """Denoiser k's noise for one step, drawn exactly as the eager loop draws it."""
        generator_k = self.sampler.noise[k]
        if isinstance(generator, list):
            one = (1, *x.shape[1:])
            draws = [noise_draw(generator_k, one, generator=g, device=x.device, dtype=x.dtype) for g in generator]
            return NoiseDraw(
                independent=_cat([d.independent for d in draws]),
                shared=_cat([d.shared for d in draws]),
                shared_ratio=draws[0].shared_ratio,
            )
        return noise_draw(generator_k, tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)

    def _capture(self, program: _StepProgram) -> Callable[[], None]:
        """A CUDA graph of `program`, after warm-up calls whose effects on the buffers are undone."""
        device = program.buffers.x.device
        saved = [t.clone() for t in program.buffers.state()]
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                program()
        torch.cuda.current_stream(device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # The programs share one memory pool: they never run at once, and all that outlives a replay (latents,
        # counter, flags, noise and conditioning) lives outside the pool.
        with torch.cuda.graph(graph, pool=self._pool):
            program()
        for target, value in zip(program.buffers.state(), saved):
            target.copy_(value)
        return graph.replay

    def __repr__(self) -> str:
        return f"CUDAGraphSampler({self.sampler!r}, compile_mode={self.compile_mode!r})"


def _context(cond: Any, uncond: Any, batch: int, guidance_scale: float) -> Tensor | None:
    """What a step program hands the denoiser as conditioning: [∅; y] under guidance, else y."""
    return guidance_context(cond, uncond, batch) if guidance_scale != 1.0 else cond


def _step_function(x: Latents) -> Callable[..., Latents]:
    """The fused Triton step where Triton can run on x (its dtypes, on CUDA or in the CPU interpreter), else its
    PyTorch reference (any floating dtype; capturable too)."""
    if importlib.util.find_spec("triton") is not None:
        from jvid.kernels import SUPPORTED_DTYPES, fused_sampler_step, is_interpreted

        if x.dtype in SUPPORTED_DTYPES and (x.is_cuda or is_interpreted()):
            return fused_sampler_step
    from jvid.samplers.step import sampler_step_reference

    return sampler_step_reference


def _empty_like_rows(part: Tensor | None, batch: int) -> Tensor | None:
    return None if part is None else part.new_zeros((batch, *part.shape[1:]))


def _cat(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.cat(parts)  # type: ignore[arg-type]
