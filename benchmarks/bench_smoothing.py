"""Temporal latent smoothing (sec. 3.6): the fused Triton kernel against the eager reference, beside the memory floor.

    python benchmarks/bench_smoothing.py                 # a table: eager, fused, floor, agreement
    python benchmarks/bench_smoothing.py --sweep         # every launch configuration at every size, fastest first
    python benchmarks/bench_smoothing.py --sweep videos  # only the launches of the named kinds
    python -m pytest benchmarks/bench_smoothing.py       # the same cases through pytest-benchmark

On CUDA both implementations run at each size in SIZES. Device times come from `triton.testing.do_bench` (CUDA
events, L2 flushed before every call, median; a host launch longer than the flush shows in them) and from replays of
a CUDA graph over rotating inputs (`replay_ms`: device time alone). pytest-benchmark's own numbers are host wall time
per call including a synchronize, i.e. what a caller waits. The floor is the bytes any implementation must move (read
x once, write the result once: 2·N·s) over the bandwidth of a measured device-to-device copy. Without CUDA only the
reference runs, at one tiny size, so the file stays quick.
"""

from __future__ import annotations

import sys
import time
import timeit

import pytest
import torch

from jvid.kernels.temporal_smoothing import LaunchConfig
from jvid.postproc import temporal_latent_smoothing

THRESHOLD = 2.0  # sec. 4.2's best c
CUDA = torch.cuda.is_available()
SIZES = [
    (256, 16, 4, 32, 32),  # 256 videos of 256x256 pixels: metric generation
    (4, 16, 4, 32, 32),  # one guided batch of the demo's size
    (256, 16, 4, 8, 8),  # 64x64 videos
    (8, 16, 4, 64, 64),  # 512x512 videos
    (8, 16, 4, 128, 128),  # 1024x1024 videos
    (16, 16, 16, 32, 32),  # 16-channel latents
    (2, 128, 4, 16, 16),  # two 128-frame videos of 128x128 pixels
]
CPU_SIZE = (2, 8, 4, 16, 16)
DTYPES = [torch.bfloat16, torch.float32]


def eager(x: torch.Tensor) -> torch.Tensor:
    return temporal_latent_smoothing(x, THRESHOLD)


def fused(x: torch.Tensor) -> torch.Tensor:
    from jvid.kernels import fused_temporal_smoothing

    return fused_temporal_smoothing(x, THRESHOLD)


IMPLEMENTATIONS = {"eager": eager, "fused": fused}


def cases() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    if not CUDA:
        return [("eager", CPU_SIZE, torch.float32)]
    return [(name, shape, dtype) for shape in SIZES for dtype in DTYPES for name in IMPLEMENTATIONS]


def latents(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator).to("cuda" if CUDA else "cpu", dtype)


def device_ms(fn, x: torch.Tensor, rep: int = 200) -> float:
    from triton.testing import do_bench

    return do_bench(lambda: fn(x), warmup=25, rep=rep, return_mode="median")


_copy_bandwidth: list[float] = []


def copy_bandwidth() -> float:
    """Bytes per ms of a 1 GiB device-to-device copy (read + write), measured once."""
    if not _copy_bandwidth:
        src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        _copy_bandwidth.append(2 * src.numel() / device_ms(lambda s: dst.copy_(s), src))
        del src, dst
    return _copy_bandwidth[0]


def floors_ms(x: torch.Tensor) -> tuple[float, float]:
    """(read x and write once, the kernel's read x twice and write once) over the copy bandwidth, in ms."""
    nbytes = x.numel() * x.element_size()
    return 2 * nbytes / copy_bandwidth(), 3 * nbytes / copy_bandwidth()


def disagreement(x: torch.Tensor) -> float:
    """Share of elements where fused and eager differ beyond float rounding (ties at the threshold can differ)."""
    a, b = fused(x).float(), eager(x).float()
    return float((~torch.isclose(a, b, rtol=1e-2, atol=1e-5)).float().mean())


@pytest.fixture(autouse=True)
def unchecked():
    """Times jvid as users run it, without the test run's jaxtyping/beartype annotation checks."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


def case_id(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value).replace("torch.", "")


@pytest.mark.parametrize(("name", "shape", "dtype"), cases(), ids=case_id)
def test_temporal_smoothing(benchmark, name, shape, dtype):
    fn = IMPLEMENTATIONS[name]
    x = latents(shape, dtype)
    out = fn(x)  # compiles the kernel before timing
    assert out.shape == x.shape and out.dtype == dtype
    benchmark.group = f"{case_id(shape)} {case_id(dtype)}"
    if not CUDA:
        benchmark(fn, x)
        return
    floor, design_floor = floors_ms(x)
    benchmark.extra_info.update(
        device_ms=device_ms(fn, x), floor_ms=floor, design_floor_ms=design_floor, copy_gb_per_s=copy_bandwidth() / 1e6
    )
    if name == "fused":
        benchmark.extra_info["disagreement"] = disagreement(x)
        assert benchmark.extra_info["disagreement"] < 1e-3

    def call():
        fn(x)
        torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=100, warmup_rounds=10)


def replay_ms(fn, x: torch.Tensor, calls: int = 24, rep: int = 200) -> float:
    """Device ms per call of `fn` replayed from one CUDA graph of `calls` calls: no launch or host cost. The calls
    rotate over copies of x filling at least 256 MB, so that large inputs come from memory, not from L2."""
    copies = max(1, min(calls, -(-(2**28) // (x.numel() * x.element_size()))))
    inputs = [x.clone() for _ in range(copies)]
    fn(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in range(calls):
            fn(inputs[call % copies])
    return device_ms(lambda _: graph.replay(), x, rep) / calls


def host_us(fn, x: torch.Tensor, calls: int = 200) -> float:
    """Host µs per call when `fn` is called back to back: what a call costs the Python side."""
    fn(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def sweep(configs: list[LaunchConfig]) -> None:
    """Times each launch configuration at each size (do_bench, L2 flushed) and prints the best per size."""
    from jvid.kernels import fused_temporal_smoothing

    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy_bandwidth() / 1e6:.0f} GB/s")
    for shape in SIZES:
        for dtype in DTYPES:
            x = latents(shape, dtype)
            floor, _ = floors_ms(x)
            expected = eager(x)
            timings = []
            for config in configs:
                fn = lambda y, config=config: fused_temporal_smoothing(y, THRESHOLD, config)  # noqa: E731
                try:
                    fn(x)
                except ValueError:  # a group config whose chunks cannot all be resident at this size
                    continue
                agree = torch.isclose(fn(x).float(), expected.float(), rtol=1e-2, atol=1e-5).float().mean()
                timings.append((replay_ms(fn, x, rep=50), config, float(agree)))
            timings.sort(key=lambda row: row[0])
            print(f"{case_id(shape)} {case_id(dtype)}: eager {replay_ms(eager, x):.4f} ms (graph), "
                  f"floor {floor:.4f} ms; "
                  f"host µs per call: eager {host_us(eager, x):.0f}, fused {host_us(fused, x):.0f}")
            for ms, config, agree in timings[:5]:
                print(f"    {ms:.4f} ms  {floor / ms:4.0%} of floor  agree {agree:.6f}  {config}")


SWEPT = (
    [LaunchConfig("tiles", tile, warps, None, frames) for tile in (256, 1024, 4096) for warps in (2, 4, 8)
     for frames in (2, 4, 8, 16)]
    + [LaunchConfig("videos", 4096, warps, None, frames) for warps in (4, 8, 16) for frames in (1, 2, 4, 8, 16)]
    + [LaunchConfig("groups", tile, warps, programs) for tile in (2048, 4096, 8192) for warps in (1, 2, 4, 8)
       if 8 <= tile // (32 * warps) <= 128 for programs in (None, 1)]
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sweep":
        kinds = sys.argv[2:] or {config.kind for config in SWEPT}
        sweep([config for config in SWEPT if config.kind in kinds])
        return
    if not CUDA:
        x = latents(CPU_SIZE, torch.float32)

        seconds = min(timeit.repeat(lambda: eager(x), number=10, repeat=5)) / 10
        print(f"no CUDA device: eager reference only, {CPU_SIZE} float32: {seconds * 1e3:.3f} ms")
        return
    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy_bandwidth() / 1e6:.0f} GB/s")
    print(table(rows()))


def rows() -> list[dict]:
    """Per size and dtype: eager and fused device ms (one call, L2 flushed; and replayed from a graph), the floor."""
    out = []
    for shape in SIZES:
        for dtype in DTYPES:
            x = latents(shape, dtype)
            fused(x)
            floor, _ = floors_ms(x)
            out.append({
                "shape": case_id(shape), "dtype": case_id(dtype), "eager_ms": device_ms(eager, x),
                "fused_ms": device_ms(fused, x), "eager_replay_ms": replay_ms(eager, x),
                "fused_replay_ms": replay_ms(fused, x), "floor_ms": floor, "disagreement": disagreement(x),
                "eager_host_us": host_us(eager, x), "fused_host_us": host_us(fused, x),
            })
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| latents | dtype | eager ms | fused ms | speed-up | eager ms (graph) | fused ms (graph) | speed-up (graph) "
        "| floor ms | floor / fused (graph) | host µs eager / fused | voxels differing |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['eager_ms']:.4f} | {r['fused_ms']:.4f} "
            f"| {r['eager_ms'] / r['fused_ms']:.1f}x | {r['eager_replay_ms']:.4f} | {r['fused_replay_ms']:.4f} "
            f"| {r['eager_replay_ms'] / r['fused_replay_ms']:.1f}x | {r['floor_ms']:.4f} "
            f"| {r['floor_ms'] / r['fused_replay_ms']:.0%} | {r['eager_host_us']:.0f} / {r['fused_host_us']:.0f} "
            f"| {r['disagreement']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
