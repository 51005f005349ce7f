"""Runs an experiment's Hydra multirun and its report the way `make tableN` does, in a
temporary folder with its own cache (the slow end-to-end tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def multirun_and_report(
    experiment: str,
    overrides: list[str],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: int = 1800,
    baselines: str | list[str] | None = None,
) -> tuple[list[dict[str, Any]], Path]:
    """`experiments/run.py experiment=<experiment> <overrides>` into `tmp_path/sweep`, then
    `experiments/report.py <experiment> --sweep ... --results tmp_path/results`.

    With `baselines` (an experiment or several), their sweeps run next (each into
    `tmp_path/<name>`) and the report gets them as `--baselines`. Returns the first sweep's
    runs' metrics (job order) and the results folder; a failing command fails the test with
    the end of its stderr.
    """
    env = {**os.environ, "IFSCALE_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
    sweep, results = tmp_path / "sweep", tmp_path / "results"
    run = [sys.executable, str(ROOT / "experiments" / "run.py"), f"experiment={experiment}"]
    _check(run + overrides + ["progress=false", f"hydra.sweep.dir={sweep}"], env, timeout)
    report = [sys.executable, str(ROOT / "experiments" / "report.py"), experiment]
    # --outputs: no investigation sweep of the repository's outputs/ joins the report.
    where = ["--sweep", str(sweep), "--results", str(results), "--outputs", str(tmp_path)]
    if baselines:  # more sweeps (e.g. table2_baselines), as the make target runs them
        where.append("--baselines")
        for name in [baselines] if isinstance(baselines, str) else baselines:
            run[-1] = f"experiment={name}"
            extra = tmp_path / name
            _check(run + overrides + ["progress=false", f"hydra.sweep.dir={extra}"], env, timeout)
            where.append(str(extra))
    _check(report + where, env, 600)
    jobs = sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text()) for p in jobs], results


def _check(cmd: list[str], env: dict[str, str], timeout: int) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd[1:3])} failed:\n{done.stderr[-3000:]}"
