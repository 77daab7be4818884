"""Runs the GPU benchmark set in one go and writes BENCHMARKS.md: device, date, command, and the ratio tables.

    python benchmarks/report.py                      # all sections, writes BENCHMARKS.md at the project root
    python benchmarks/report.py --sizes 8 --out /tmp/B.md
    python benchmarks/report.py --sizes 8 16 --compile 8 16 --sections chain
    python benchmarks/report.py --sizes 32 --compile 32 --append   # more rows and sections, in a later run

Sections: the end-to-end chain at each latent size (bench_chain), the fused sampler step (bench_step), the temporal
smoothing kernel (bench_smoothing), the short-sequence attention kernel (bench_attention). With --append, a run on
the same device adds its chain rows and sections to an existing report, replacing the rows of sizes and the sections
it measures again: compiling networks at several sizes takes longer than some machines allow one command. The header
names, for each part, the command that measured it, its date and the rate measured in that run that its ratios use.
Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_attention  # noqa: E402
import bench_chain  # noqa: E402
import bench_smoothing  # noqa: E402
import bench_step  # noqa: E402


def header() -> str:
    import diffusers

    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    return "\n".join([
        "# Benchmarks",
        "",
        f"- device: {torch.cuda.get_device_name()} ({memory:.0f} GiB)",
        f"- software: torch {torch.__version__}, Triton {triton.__version__}, diffusers {diffusers.__version__}, "
        f"Python {platform.python_version()}",
    ])


CHAIN_NOTE = """\
Setting: Table-1 LVDM (3-D UNet) and LIDM (2-D UNet) at width 256 in bf16, 4 videos with classifier-free guidance
batched (8 in a network batch), 16 frames, 50 DDPM steps alternating the two models, 77 x 768 conditioning. Times are
medians of whole chains (wall clock, device synchronised). Speed-up: plain loop over graphed. Overheads: chain over
the bare network calls of the same plan, eagerly for the eager sampler and replayed from graphs for the graphed one.
Chain TFLOP: model FLOPs (FlopCounterMode) of the chain as jvid runs it, cross-attention keys and values once per
video (`jvid.models.attention`), and in brackets as the networks alone run it, once per frame. TFLOP/s: jvid's chain
FLOPs over the graphed chain's time; "of bf16 rate" sets that against the bf16 matrix rate measured in the same
run (listed above). Graphed vs eager: relative L2 distance of the final latents."""

STEP_NOTE = """\
One sampler step under classifier-free guidance: the guidance combine, the DDPM update and correlated noise with γ.
"fused": jvid's Triton kernel; "eager": jvid's PyTorch step (combine, noise combination, affine update);
"diffusers": the combine and `DDPMScheduler.step` of a plain loop (it synchronises with the host, so it has no graph
time). "ms": one call, L2 flushed; "(graph)": device time per call replayed from a CUDA graph. Floor: every input read
once and the output written once at the copy bandwidth measured in the same run (listed above)."""

SMOOTHING_NOTE = """\
Temporal latent smoothing, threshold 2. "ms": one call, L2 flushed (triton's do_bench median), host launch included
where it is longer than the flush; "(graph)": device time per call replayed from a CUDA graph over rotating inputs
(at least 256 MB, so large inputs come from memory). Floor: read x once and write once at the copy bandwidth
measured in the same run (listed above). Host µs: Python-side cost per call."""

ATTENTION_NOTE = """\
Self-attention over short sequences in bf16: the LVDM's temporal layers at 32x32 latents (each pixel's 16 frames a
sequence, 64 channels a head), level 1's for 32-frame videos, and a spatial layer of 16x16 latents, q, k and v read
as strided views of the projections. Device ms per call replayed from a CUDA graph over rotating inputs; "sdpa" is
PyTorch's own choice of backend, the others are forced. Floor: q, k, v read and o written once at the copy
bandwidth measured in the same run (listed above). Max error: against float64 attention, on values of unit scale."""

SECTIONS = ("chain", "step", "smoothing", "attention")
_STATE = "<!-- report state: {} -->"  # the measured chain rows, so that a later --append run can extend the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(bench_chain.GPU_SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", type=int, nargs="*", default=[], metavar="SIZE",
                        help="latent sizes at which to time torch.compile'd networks too (minutes each)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--append", action="store_true", help="extend the report at --out from an earlier run")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/report.py measures a GPU: no CUDA device here")
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/report.py", *sys.argv[1:]])
    report = Report.load(args.out) if args.append else Report(header())
    run = {"command": command, "date": datetime.date.today().isoformat()}
    if "chain" in args.sections:
        for size in args.sizes:
            row = bench_chain.measure(bench_chain.Setting(size=size), args.repeats, size in args.compile)
            report.chain_rows = [r for r in report.chain_rows if r["size"] != size] + [row]  # the newest per size
            report.measured_by[f"chain {size}x{size}"] = {**run, "rate": f"bf16 {row['bf16_rate'] / 1e12:.0f} TFLOP/s"}
            print(bench_chain.table([row]), flush=True)
            report.write(args.out)  # after each measurement, so a cut-off run keeps its tables
    for name, bench in (("step", bench_step), ("smoothing", bench_smoothing), ("attention", bench_attention)):
        if name in args.sections:
            report.sections[name] = bench.table(bench.rows())
            report.measured_by[name] = {**run, "rate": f"copy {bench_smoothing.copy_bandwidth() / 1e6:.0f} GB/s"}
            print(report.sections[name], flush=True)
            report.write(args.out)
    print(f"wrote {args.out}")


class Report:
    """BENCHMARKS.md's parts (the chain rows, and the step, smoothing and attention tables) and the run that
    measured each."""

    TITLES = {"step": ("## Fused sampler step", STEP_NOTE),
              "smoothing": ("## Temporal latent smoothing", SMOOTHING_NOTE),
              "attention": ("## Short-sequence attention", ATTENTION_NOTE)}

    def __init__(self, header: str) -> None:
        self.header, self.chain_rows, self.sections = header, [], {}
        self.measured_by: dict[str, dict[str, str]] = {}  # part -> the command, date and rate of its run

    @classmethod
    def load(cls, path: Path) -> Report:
        """The report an earlier run wrote at `path`, from this device only."""
        if not path.exists():
            raise SystemExit(f"--append extends an existing report, but {path} does not exist")
        text = path.read_text()
        marker = _STATE.split("{}")[0]
        if marker not in text:
            raise SystemExit(f"{path} has no report state to extend (not written by this version of report.py)")
        state = json.loads(text[text.index(marker) + len(marker):].split(" -->")[0])
        if set(state) != {"device", "header", "chain_rows", "sections", "measured_by"}:
            raise SystemExit(f"{path} has report state of another version of report.py: measure it anew")
        device = torch.cuda.get_device_name()
        if state["device"] != device:
            raise SystemExit(f"{path} was measured on {state['device']}; this run is on {device}, so their tables "
                             f"would not compare")
        report = cls(state["header"])
        report.chain_rows, report.sections, report.measured_by = (state["chain_rows"], state["sections"],
                                                                  state["measured_by"])
        return report

    def runs(self) -> str:
        """Each command whose results the report holds, with its date and the parts (and rates) it measured."""
        parts: dict[tuple[str, str], list[str]] = {}
        for part, run in self.measured_by.items():
            parts.setdefault((run["command"], run["date"]), []).append(f"{part} ({run['rate']})")
        lines = ["- measured by:"]
        lines += [f"  - `{command}` on {date}: {', '.join(names)}" for (command, date), names in parts.items()]
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        parts = [self.header + "\n" + self.runs()]
        if self.chain_rows:
            rows = sorted(self.chain_rows, key=lambda row: row["size"])
            parts += ["## End-to-end chain", CHAIN_NOTE, bench_chain.table(rows)]
        for name in SECTIONS[1:]:
            if name in self.sections:
                parts += [*self.TITLES[name], self.sections[name]]
        state = {"device": torch.cuda.get_device_name(), "header": self.header, "chain_rows": self.chain_rows,
                 "sections": self.sections, "measured_by": self.measured_by}
        parts.append(_STATE.format(json.dumps(state)))
        path.write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
