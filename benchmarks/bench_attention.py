"""Short self-attention of the Table-1 LVDM: the short-sequence Triton kernel against scaled_dot_product_attention.

    python benchmarks/bench_attention.py            # a table per layer shape: SDPA backends, the kernel, the floor
    python benchmarks/bench_attention.py --sweep    # every launch configuration of the kernel, fastest first
    python -m pytest benchmarks/bench_attention.py  # the same cases through pytest-benchmark

Shapes are those of the LVDM's temporal layers with 4 guided videos (8 in the batch) of 16 frames: each pixel of
each video is a sequence of 16 tokens, with 64 channels a head; `transformer_in` at the top level has 8 heads, the
level-l layers channels/64. Then level 1 for videos of 32 frames, and a spatial layer of small latents (a frame's
pixels as one sequence). Queries, keys and values are read as diffusers' processors produce them, strided views
of one `(sequences, frames, 3, heads·64)` buffer. Device times are graph replays over rotating inputs
(bench_smoothing.replay_ms); the floor reads q, k and v and writes o once over the measured copy bandwidth. Without
CUDA only scaled_dot_product_attention runs, at one small size.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from bench_smoothing import copy_bandwidth, replay_ms, unchecked  # noqa: F401 (unchecked: the autouse fixture)
from torch.nn.attention import SDPBackend, sdpa_kernel

from jvid.kernels.short_attention import AttentionLaunch, short_attention

CUDA = torch.cuda.is_available()
FRAMES, HEAD_DIM, BATCH = 16, 64, 8
# (name, sequences, heads, tokens): the temporal layers at 32x32 latents, width 256 (pixels·batch sequences of the
# frames per level), level 1's for videos of 32 frames (the longest sequences jvid sends to the kernel), and the
# spatial self-attention of level 2 at 16x16 latents (the 4x4 pixels of each frame)
LAYERS = [("temporal, transformer_in 32x32", BATCH * 32 * 32, 8, FRAMES),
          ("temporal, level 1 16x16", BATCH * 16 * 16, 8, FRAMES),
          ("temporal, level 2 8x8", BATCH * 8 * 8, 12, FRAMES), ("temporal, level 3 4x4", BATCH * 4 * 4, 16, FRAMES),
          ("temporal, 32 frames, level 1 16x16", BATCH * 16 * 16, 8, 2 * FRAMES),
          ("spatial, level 2 4x4", BATCH * FRAMES, 12, 16)]
CPU_LAYER = ("cpu", 64, 4, FRAMES)
BACKENDS = {"sdpa": None, "sdpa flash": SDPBackend.FLASH_ATTENTION, "sdpa efficient": SDPBackend.EFFICIENT_ATTENTION,
            "sdpa cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa math": SDPBackend.MATH}


def projections(sequences: int, heads: int, tokens: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """q, k and v of `sequences` sequences side by side, as three linear projections would leave them."""
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(sequences, tokens, 3, heads * HEAD_DIM, generator=generator)
    return qkv.to("cuda" if CUDA else "cpu", dtype)


def split(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, heads, tokens, head_dim) views of q, k and v, as diffusers' AttnProcessor2_0 makes them."""
    b, f, _, c = qkv.shape
    return tuple(qkv[:, :, i].view(b, f, c // HEAD_DIM, HEAD_DIM).transpose(1, 2) for i in range(3))


def sdpa(backend: SDPBackend | None):
    def run(qkv: torch.Tensor) -> torch.Tensor:
        if backend is None:
            return F.scaled_dot_product_attention(*split(qkv))
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(*split(qkv))

    return run


def kernel(launch: AttentionLaunch | None = None):
    def run(qkv: torch.Tensor) -> torch.Tensor:
        return short_attention(*split(qkv), launch=launch)

    return run


def floor_ms(qkv: torch.Tensor) -> float:
    """Read q, k, v and write o once, over the copy bandwidth."""
    return 4 / 3 * qkv.numel() * qkv.element_size() / copy_bandwidth()


def cases() -> list[tuple[str, str, int, int, int]]:
    if not CUDA:
        return [("sdpa", *CPU_LAYER)]
    return [(name, *layer) for layer in LAYERS for name in ("sdpa", "kernel")]


@pytest.mark.parametrize(("name", "layer", "sequences", "heads", "tokens"), cases())
def test_short_attention(benchmark, name, layer, sequences, heads, tokens):
    qkv = projections(sequences, heads, tokens, torch.bfloat16 if CUDA else torch.float32)
    fn = kernel() if name == "kernel" else sdpa(None)
    out = fn(qkv)
    assert out.shape == (sequences, heads, tokens, HEAD_DIM)
    benchmark.group = layer
    if CUDA:
        expected = sdpa(SDPBackend.MATH)(qkv.double()).float()
        benchmark.extra_info.update(device_ms=replay_ms(fn, qkv), floor_ms=floor_ms(qkv),
                                    max_error=float((out.float() - expected).abs().max()))
        assert benchmark.extra_info["max_error"] < 2e-2

    def call():
        fn(qkv)
        if CUDA:
            torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=20, warmup_rounds=2)


def rows(launches: tuple[AttentionLaunch, ...] = (AttentionLaunch(),)) -> list[dict]:
    """Per layer: graph-replayed device ms of each SDPA backend and of each kernel launch, and the floor."""
    out = []
    for layer, sequences, heads, tokens in LAYERS:
        qkv = projections(sequences, heads, tokens)
        expected = sdpa(SDPBackend.MATH)(qkv.double()).float()
        row = {"layer": layer, "shape": f"{sequences}x{heads}x{tokens}x{HEAD_DIM}", "floor_ms": floor_ms(qkv)}
        for name, backend in BACKENDS.items():
            try:
                row[name] = replay_ms(sdpa(backend), qkv)
            except RuntimeError as error:  # a backend that does not take this shape or dtype
                row[name] = f"n/a ({str(error).splitlines()[0][:40]})"
        timings = []
        for launch in launches:
            fn = kernel(launch)
            error = float((fn(qkv).float() - expected).abs().max())
            timings.append((replay_ms(fn, qkv), launch, error))
        timings.sort(key=lambda t: t[0])
        row["kernel"], row["launch"], row["max_error"] = timings[0]
        row["timings"] = timings
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    names = list(BACKENDS)
    lines = [
        "| layer | (sequences, heads, tokens, head dim) | " + " | ".join(f"{n} ms" for n in names)
        + " | kernel ms | sdpa / kernel | floor ms | floor / kernel | kernel max error |",
        "|---|---|" + "---|" * len(names) + "---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[n]:.4f}" if isinstance(r[n], float) else r[n] for n in names]
        lines.append(f"| {r['layer']} | {r['shape']} | " + " | ".join(cells)
                     + f" | {r['kernel']:.4f} | {r['sdpa'] / r['kernel']:.1f}x | {r['floor_ms']:.4f} "
                     f"| {r['floor_ms'] / r['kernel']:.0%} | {r['max_error']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    if not CUDA:
        print("no CUDA device: the kernel needs one (its tests run it in Triton's interpreter)")
        return
    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy_bandwidth() / 1e6:.0f} GB/s")
    sweeping = len(sys.argv) > 1 and sys.argv[1] == "--sweep"
    launches = (tuple(AttentionLaunch(h, w) for h in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8)) if sweeping
                else (AttentionLaunch(),))
    results = rows(launches)
    print(table(results))
    if sweeping:
        for r in results:
            print(r["layer"])
            for ms, launch, error in r["timings"][:6]:
                print(f"    {ms:.4f} ms  {r['floor_ms'] / ms:4.0%} of floor  max error {error:.1e}  {launch}")


if __name__ == "__main__":
    main()
