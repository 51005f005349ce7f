"""The committed inspection notebook: executed against results/ (`make notebook`), so that it
carries the outputs of the committed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_results.ipynb"
nbformat = pytest.importorskip("nbformat")


def _code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _check_outputs(cells) -> None:
    for i, cell in enumerate(cells):
        assert cell.get("outputs"), f"code cell {i} has no outputs: run `make notebook`"
        assert cell.get("execution_count") is not None, f"code cell {i} was not executed"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"code cell {i}: {out.get('ename')}"


def test_committed_notebook_shows_the_committed_results():
    cells = _code_cells(NOTEBOOK)
    _check_outputs(cells)
    markdown = [
        out["data"]["text/markdown"]
        for cell in cells
        for out in cell["outputs"]
        if "text/markdown" in out.get("data", {})
    ]
    # Each table as results/ holds it now: a stale notebook fails here.
    for name in ("table1.md", "table2.md", "table3.md"):
        assert (ROOT / "results" / name).read_text() in markdown, f"{name}: run `make notebook`"
    # regimes.md without its image link (the notebook shows the figure itself).
    lines = (ROOT / "results" / "regimes.md").read_text().splitlines()
    shown = "\n".join(line for line in lines if not line.startswith("!["))
    assert shown in markdown, "regimes.md: run `make notebook`"
    text = json.dumps([c["outputs"] for c in cells])
    assert text.count("image/png") >= 6  # figures 1-2, recall curves, images, Table 2/3 plots
    assert str(ROOT) not in text  # no machine's folders


def test_notebook_executes_against_results(tmp_path):
    pytest.importorskip("nbclient")
    executed = tmp_path / "inspect_results.ipynb"
    cmd = [sys.executable, str(ROOT / "experiments" / "notebook.py"), "--output", str(executed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = _code_cells(executed)
    _check_outputs(cells)
    assert "reading ../results" in json.dumps(cells[0]["outputs"])
