"""`experiments/scale_check.py` (issue 31 part A, run on a GPU when one is lent) at toy size on
the CPU, so that the script a device session runs once has run here first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Toy sizes (the docstring's CPU smoke), as --name value pairs.
SMOKE = {
    "width": 32,
    "layers": 1,
    "hidden": 64,
    "steps": 5,
    "n": 6,
    "pbar": 3,
    "offload-n": 4,
    "pairs": 64,
    "train-pairs": 400,
    "vocab": 300,
    "fit-batch-size": 16,
    "fit-batches": 4,
    "block": 2,
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_scale_check_fits_both_ways_and_scores(dtype, tmp_path):
    out = tmp_path / "scale_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "scale_check.py")]
        + [arg for name, value in SMOKE.items() for arg in (f"--{name}", str(value))]
        + ["--basis-dtype", dtype, "--budget-s", "600", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    small, host, full = (report[f"fit_{k}"] for k in ("device_small", "host_small", "device"))
    assert (small["basis_memory"], host["basis_memory"]) == ("device", "host")
    assert full["n"] == 6 and full["block"] == 2 and full["basis_dtype"] == dtype
    # The host-memory fit is the device fit, row for row (the same start block and products).
    assert host["top_values"] == pytest.approx(small["top_values"], rel=1e-4)
    itemsize = 2 if dtype == "bfloat16" else 4
    assert full["eigvec_bytes_per_device"] == 3 * report["n_params"] * itemsize
    assert report["score"]["pairs"] == 64 and report["score"]["pairs_per_s"] > 0
    assert report["score"]["route"] in ("grad", "jvp", "layerwise")
