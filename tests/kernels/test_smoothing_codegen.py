"""What the smoothing kernels compile to for an sm_90 GPU (Hopper), checked on any machine, GPU or not.

Rows of pixels are contiguous, so each thread should move them in 16-byte vectors. Triton does so only when it can
prove that a row's mask and addresses do not change inside a vector, i.e. when it knows the pixel count is divisible
by 16: a kernel that keeps `pixels` out of specialisation moves bfloat16 latents two bytes at a time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sm90_accesses.py")


@pytest.fixture(scope="module")
def accesses() -> dict[str, dict[str, int]]:
    # Triton compiles only outside its interpreter, which the test command turns on for this process.
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "launch", ["videos, one tile", "videos, tiles", "tiles, moments", "tiles, replacement", "groups"]
)
def test_latents_are_read_and_written_in_vectors(accesses, launch):
    instructions = accesses[launch]
    scalar_latents = {name: n for name, n in instructions.items() if name.endswith(".b16")}
    assert not scalar_latents, f"{launch}: bfloat16 latents moved one element at a time: {scalar_latents}"
    vector_loads = sum(n for name, n in instructions.items() if name.startswith("ld.") and ".v" in name)
    assert vector_loads > 0, f"{launch}: no vector loads in {instructions}"
    vector_stores = sum(n for name, n in instructions.items() if name.startswith("st.") and ".v" in name)
    assert vector_stores > 0, f"{launch}: no vector stores in {instructions}"  # the output, or the moments' μ
