"""Runs the GPU benchmark set in one go and writes BENCHMARKS.md: device, date, command, and the ratio tables.

    python benchmarks/report.py                      # all sections, writes BENCHMARKS.md at the project root
    python benchmarks/report.py --sizes 8 --out /tmp/B.md

Sections: the end-to-end chain at each latent size (bench_chain), the fused sampler step (bench_step), the temporal
smoothing kernel (bench_smoothing). Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chain  # noqa: E402
import bench_smoothing  # noqa: E402
import bench_step  # noqa: E402


def header(command: str) -> str:
    import diffusers

    return "\n".join([
        "# Benchmarks",
        "",
        f"- device: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)",
        f"- date: {datetime.date.today().isoformat()}",
        f"- software: torch {torch.__version__}, Triton {triton.__version__}, diffusers {diffusers.__version__}, "
        f"Python {platform.python_version()}",
        f"- command: `{command}`",
        f"- measured rates: device-to-device copy {bench_smoothing.copy_bandwidth() / 1e6:.0f} GB/s, "
        f"bf16 matrix product {bench_chain.bf16_matmul_flops_per_second() / 1e12:.0f} TFLOP/s",
    ])


CHAIN_NOTE = """\
Setting: Table-1 LVDM (3-D UNet) and LIDM (2-D UNet) at width 256 in bf16, 4 videos with classifier-free guidance
batched (8 in a network batch), 16 frames, 50 DDPM steps alternating the two models, 77 x 768 conditioning. Times are
medians of whole chains (wall clock, device synchronised). Speed-up: plain loop over graphed. Overheads: chain over
the bare network calls of the same plan, eagerly for the eager sampler and replayed from graphs for the graphed one.
TFLOP/s: model FLOPs (FlopCounterMode) of the chain over the graphed chain's time; "of bf16 rate" sets that against the
measured matrix rate above. Graphed vs eager: relative L2 distance of the final latents."""

STEP_NOTE = """\
One sampler step under classifier-free guidance: the guidance combine, the DDPM update and correlated noise with γ.
"fused": jvid's Triton kernel; "eager": jvid's PyTorch step (combine, noise combination, affine update);
"diffusers": the combine and `DDPMScheduler.step` of a plain loop (it synchronises with the host, so it has no graph
time). "ms": one call, L2 flushed; "(graph)": device time per call replayed from a CUDA graph. Floor: every input read
once and the output written once at the measured copy bandwidth."""

SMOOTHING_NOTE = """\
Temporal latent smoothing, threshold 2. "ms": one call, L2 flushed (triton's do_bench median), host launch included
where it is longer than the flush; "(graph)": device time per call replayed from a CUDA graph over rotating inputs
(at least 256 MB, so large inputs come from memory). Floor: read x once and write once at the measured copy
bandwidth. Host µs: Python-side cost per call."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(bench_chain.GPU_SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", type=int, nargs="*", default=[], metavar="SIZE",
                        help="latent sizes at which to time torch.compile'd networks too (minutes each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/report.py measures a GPU: no CUDA device here")
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/report.py", *sys.argv[1:]])
    sections = [header(command)]
    chain_rows = []
    for size in args.sizes:
        chain_rows.append(bench_chain.measure(bench_chain.Setting(size=size), args.repeats, size in args.compile))
        print(bench_chain.table(chain_rows[-1:]), flush=True)
    sections += ["## End-to-end chain", CHAIN_NOTE, bench_chain.table(chain_rows)]
    args.out.write_text("\n\n".join(sections) + "\n")  # written after each section, so a cut-off run keeps its tables
    sections += ["## Fused sampler step", STEP_NOTE, bench_step.table(bench_step.rows())]
    print(sections[-1], flush=True)
    args.out.write_text("\n\n".join(sections) + "\n")
    sections += ["## Temporal latent smoothing", SMOOTHING_NOTE, bench_smoothing.table(bench_smoothing.rows())]
    print(sections[-1], flush=True)
    args.out.write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
