"""What the smoothing kernels' default launches compile to for an sm_90 GPU (Hopper), checked on any machine.

Rows of pixels are contiguous, so a thread that holds several pixels of a row should move them in one vector access.
Triton does so only when it can prove that a row's mask and addresses do not change inside a vector, i.e. when it
knows the pixel count is divisible by 16: a kernel that keeps `pixels` out of specialisation moves bfloat16 latents
two bytes at a time however many each thread holds. Where a launch gives each thread a single element of a tile
(more threads than elements, measured faster for the smallest frames), two-byte accesses are all there can be.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sm90_accesses.py")


@pytest.fixture(scope="module")
def launches() -> dict[str, dict[str, dict]]:
    # Triton compiles only outside its interpreter, which the test command turns on for this process.
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_kind_of_launch_is_compiled(launches):
    kernels = {kernel for shape in launches.values() for kernel in shape}
    assert kernels == {"videos", "groups", "tiles, moments", "tiles, replacement"}


def test_threads_holding_several_latents_move_them_in_vectors(launches):
    checked = 0
    for shape, kernels in launches.items():
        for kernel, launch in kernels.items():
            if launch["elements_per_thread"] < 2:
                continue
            accesses = launch["accesses"]
            scalar = {name: n for name, n in accesses.items() if name.endswith(".b16")}
            assert not scalar, f"{shape}, {kernel}: bfloat16 latents moved one element at a time: {scalar}"
            checked += 1
    assert checked >= 10  # all but the one-element launch at 8x8
