"""Executes the inspection notebook, so that it carries its outputs (tables and figures).

    python experiments/notebook.py        # notebooks/inspect_results.ipynb on results/, in place
    python experiments/notebook.py --results DIR --output copy.ipynb   # another folder

Reads only results/ (or DIR): no training. The kernel is this interpreter (the kernel spec
`python3` of the virtualenv, whose `python` jupyter_client resolves to sys.executable).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_results.ipynb"
KERNEL = "python3"


def check_kernel() -> None:
    """Fails unless kernel `python3` runs this interpreter (with its ifscale)."""
    argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    this = Path(sys.executable).resolve()
    if argv[0] not in ("python", "python3") and Path(argv[0]).resolve() != this:
        raise SystemExit(
            f"kernel {KERNEL!r} runs {argv[0]}, not {sys.executable}: install ipykernel in "
            "this environment (`make setup`) or remove the other kernel spec"
        )


def execute(notebook: Path, output: Path, results: Path | None = None, timeout: int = 600):
    """Runs every cell of `notebook` (working folder: its own) and writes it with its outputs
    to `output`; `results` replaces the notebook's ../results. Returns the notebook."""
    check_kernel()
    nb = nbformat.read(notebook, as_version=4)
    if results is not None:
        os.environ["IFSCALE_RESULTS_DIR"] = str(results.resolve())
    # record_timing=False: no per-cell timestamps, so a rerun on the same results changes
    # nothing but what the results changed.
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(notebook.resolve().parent)}},
    )
    client.execute()
    nbformat.validate(nb)
    nbformat.write(nb, output)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--output", type=Path, help="where to write it (default: in place)")
    parser.add_argument("--results", type=Path, help="results folder (default: ../results)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    output = args.output or args.notebook
    execute(args.notebook, output, args.results, args.timeout)
    print(f"executed {args.notebook} -> {output}")


if __name__ == "__main__":
    main()
