"""Temporal latent smoothing (sec. 3.6): the fused Triton kernel against the eager reference, beside the memory floor.

    python benchmarks/bench_smoothing.py                 # a table: eager, fused, floors, agreement
    python -m pytest benchmarks/bench_smoothing.py       # the same cases through pytest-benchmark

On CUDA both implementations run at each size in SIZES. Device times come from `triton.testing.do_bench` (CUDA
events, L2 flushed before every call, median); pytest-benchmark's own numbers are host wall time per call including a
synchronize, i.e. what a caller waits. The floor is the bytes any implementation must move (read x once, write the
result once: 2·N·s) over the bandwidth of a measured device-to-device copy; the kernel's design moves 3·N·s (x is
read twice), its own floor. Without CUDA only the reference runs, at one tiny size, so the file stays quick.
"""

from __future__ import annotations

import timeit

import pytest
import torch

from jvid.postproc import temporal_latent_smoothing

THRESHOLD = 2.0  # sec. 4.2's best c
CUDA = torch.cuda.is_available()
SIZES = [
    (256, 16, 4, 32, 32),  # 256 videos of 256x256 pixels: metric generation
    (4, 16, 4, 32, 32),  # one guided batch of the demo's size
    (256, 16, 4, 8, 8),  # 64x64 videos
    (8, 16, 4, 64, 64),  # 512x512 videos
    (16, 16, 16, 32, 32),  # 16-channel latents
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


def device_ms(fn, x: torch.Tensor) -> float:
    from triton.testing import do_bench

    return do_bench(lambda: fn(x), warmup=25, rep=200, return_mode="median")


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


def main() -> None:
    if not CUDA:
        x = latents(CPU_SIZE, torch.float32)

        seconds = min(timeit.repeat(lambda: eager(x), number=10, repeat=5)) / 10
        print(f"no CUDA device: eager reference only, {CPU_SIZE} float32: {seconds * 1e3:.3f} ms")
        return
    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy_bandwidth() / 1e6:.0f} GB/s")
    header = f"{'shape':>18} {'dtype':>9} {'eager ms':>9} {'fused ms':>9} {'speedup':>8} {'floor ms':>9} "
    print(header + f"{'3-pass ms':>9} {'fused/floor':>11} {'differ':>8}")
    for shape in SIZES:
        for dtype in DTYPES:
            x = latents(shape, dtype)
            fused(x)
            eager_ms, fused_ms = device_ms(eager, x), device_ms(fused, x)
            floor, design_floor = floors_ms(x)
            print(
                f"{case_id(shape):>18} {case_id(dtype):>9} {eager_ms:9.4f} {fused_ms:9.4f} "
                f"{eager_ms / fused_ms:7.1f}x {floor:9.4f} {design_floor:9.4f} {fused_ms / floor:10.2f}x "
                f"{disagreement(x):8.1e}"
            )


if __name__ == "__main__":
    main()
