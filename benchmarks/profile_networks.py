"""Where a guided network call of the chain spends device time, and what text sharing, layouts and compilation buy.

    python benchmarks/profile_networks.py --sizes 8 32               # kernel breakdown and variant timings
    python benchmarks/profile_networks.py --sizes 8 --compile        # also torch.compile (minutes per network)
    python benchmarks/profile_networks.py --sizes 16 --compile --inductor freezing=True   # with Inductor options

For each Table-1 network at each latent size, in the chain's setting (bench_chain.Setting): the device time of one
guided call replayed from a CUDA graph for each variant (cross-attention per frame, as the network alone computes
it; text shared across frames, jvid's default; the LVDM's temporal convolutions folded into 2-D ones
(`jvid.models.convolution`); optionally the adapters' compiled calls, which fold before compiling, as jvid's
compiled chain runs them, with any `--inductor` options in force while they compile; channels-last weights), and
each variant's kernels grouped by name (count and total device time, from torch.profiler), heaviest first.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench_chain import Chains, Setting
from jvid.models.convolution import fold_temporal_convolutions


def replay_ms(call, t: torch.Tensor, calls: int = 10) -> float:
    """Device ms per call of `call(t)` replayed from one graph of `calls` calls."""
    from triton.testing import do_bench

    call(t), call(t)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            call(t)
    return do_bench(graph.replay, warmup=50, rep=300, return_mode="median") / calls


def kernel_table(call, t: torch.Tensor, top: int) -> str:
    """The eager call's CUDA kernels grouped by name: count and device ms, heaviest `top` first."""
    call(t)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call(t)
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name][0] += 1
            totals[event.name][1] += event.device_time_total / 1e3
    busy = sum(ms for _, ms in totals.values())
    count = sum(n for n, _ in totals.values())
    rows = sorted(totals.items(), key=lambda item: -item[1][1])[:top]
    lines = [f"    {count} kernels, {busy:.2f} ms busy"]
    lines += [f"    {ms:8.3f} ms {n:5d}x  {name[:110]}" for name, (n, ms) in rows]
    return "\n".join(lines)


def channels_last(net: torch.nn.Module) -> None:
    """Every 4-D weight in channels-last and every 5-D one in channels-last-3d order (convolutions' NHWC)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    for param in net.parameters():
        if param.ndim in formats:
            param.data = param.data.contiguous(memory_format=formats[param.ndim])


def inductor_option(text: str) -> tuple[str, bool | int | float | str]:
    """KEY=VALUE as an Inductor config entry: True/False as booleans, numbers as numbers, anything else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value in ("True", "False"):
        return key, value == "True"
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (default mode)")
    parser.add_argument("--inductor", type=inductor_option, action="append", default=[], metavar="KEY=VALUE",
                        help="a torch._inductor.config setting in force while --compile compiles (repeatable)")
    args = parser.parse_args()
    if args.inductor and not args.compile:
        parser.error("--inductor sets options of the compiled variant: add --compile")
    for size in args.sizes:
        chains = Chains(Setting(size=size))
        t = torch.tensor([chains.timesteps[0]], device="cuda")
        with torch.no_grad():
            report(chains, t, "text attended per frame", args.top, [chains.per_frame_text(k) for k in range(2)])
            report(chains, t, "text shared across frames", args.top, chains.denoisers)
            if fold_temporal_convolutions(chains.video_net):
                report(chains, t, "text shared, temporal convolutions folded", 6, chains.denoisers, networks=[0])
            if args.compile:  # the adapters' own compiled calls, as CUDAGraphSampler(compile_mode="default") makes
                compiled = [d.compiled("default") for d in chains.denoisers]
                options = dict(args.inductor)
                with torch._inductor.config.patch(options):  # compilation happens at each call's first run
                    report(chains, t, f"text shared, temporal convolutions folded, compiled {options or ''}".rstrip(),
                           args.top, compiled, first_call=True)
            for net in (chains.video_net, chains.image_net):
                channels_last(net)
            report(chains, t, "text shared, channels-last weights", 6, chains.denoisers)
        del chains
        torch.cuda.empty_cache()


def report(chains: Chains, t: torch.Tensor, variant: str, top: int, denoisers: list, first_call: bool = False,
           networks: list[int] | None = None) -> None:
    """Graph-replay time and kernel table of one guided call of each network (or of `networks`) through
    `denoisers`; with `first_call`, also the first call's seconds (compilation)."""
    size = chains.setting.size
    names = ["LVDM (video)", "LIDM (image)"]
    for k in range(2) if networks is None else networks:
        name = names[k]
        call = chains._network_call(k, denoisers[k])
        note = ""
        if first_call:
            start = time.perf_counter()
            call(t)
            torch.cuda.synchronize()
            note = f"; first call {time.perf_counter() - start:.0f} s"
        print(f"{size}x{size} {name}: graph replay {replay_ms(call, t):.2f} ms ({variant}{note})", flush=True)
        print(kernel_table(call, t, top), flush=True)


if __name__ == "__main__":
    main()
