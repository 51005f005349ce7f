"""The README's copy of Table 1, kept equal to `results/table1.md`.

README.md holds the main table of `results/table1.md` and its hardware line between the
markers `<!-- table1 -->` and `<!-- /table1 -->`; `sync_readme` rewrites that block from the
file (`python experiments/report.py readme`, and at the end of `... report.py table1`).
"""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- table1 -->", "<!-- /table1 -->"
BASELINE_LINE = "- Influence against the per-example loss"


class ReadmeSyncError(ValueError):
    """A README or table file that has not the expected shape (a one-line message)."""


def readme_block(table_md: str, source: str = "table1.md") -> str:
    """What the README shows of `table_md` (the text of results/table1.md): the main table
    (its first markdown table) and, after a blank line, the hardware sentence of its notes and
    its verdict on the loss baseline."""
    lines = table_md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), None)
    hardware = next((line for line in lines if line.startswith("- Hardware: ")), None)
    if start is None or hardware is None:
        raise ReadmeSyncError(f"{source}: no markdown table or no '- Hardware: ' line")
    end = start
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    # The computed verdict on the loss baseline, when the table has one.
    verdict = ["\n" + line.removeprefix("- ") for line in lines if line.startswith(BASELINE_LINE)]
    return "\n".join([*lines[start:end], "", hardware.removeprefix("- "), *verdict])


def synced_readme(readme: str, block: str, source: str = "README.md") -> str:
    """`readme` with `block` between the Table 1 markers."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.find(START) > readme.find(END):
        raise ReadmeSyncError(f"{source}: needs one '{START}' line and then one '{END}' line")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def sync_readme(readme_path: str | Path, table_md_path: str | Path) -> bool:
    """Writes the main table of `table_md_path` between the Table 1 markers of
    `readme_path`; returns whether the README changed. Raises `ReadmeSyncError` (one line,
    naming the file) when the markers or the table are missing."""
    readme_path, table_md_path = Path(readme_path), Path(table_md_path)
    block = readme_block(table_md_path.read_text(), str(table_md_path))
    before = readme_path.read_text()
    after = synced_readme(before, block, str(readme_path))
    if after != before:
        readme_path.write_text(after)
    return after != before
