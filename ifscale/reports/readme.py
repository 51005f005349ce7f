"""The README's copies of the results, kept equal to the files under `results/`.

README.md holds two blocks that nobody edits by hand:
- between `<!-- table1 -->` and `<!-- /table1 -->`: the main table of `results/table1.md` and
  its hardware line (`sync_readme`);
- between `<!-- baselines -->` and `<!-- /baselines -->`: each table's computed verdict on the
  per-example loss baseline, one line per table, read from its report (`sync_baselines`).
`python experiments/report.py readme` rewrites both; each table's report rewrites them too.
"""

from __future__ import annotations

from pathlib import Path

from ifscale.cache.atomic import write_text

START, END = "<!-- table1 -->", "<!-- /table1 -->"
BASELINES_START, BASELINES_END = "<!-- baselines -->", "<!-- /baselines -->"
# Every report starts its verdict on the loss baseline with this (the README copies it).
BASELINE_LINE = "- Influence against the per-example loss"
# Where each verdict is: (what, its report under results/, the command that writes it).
VERDICT_SOURCES = (
    ("Table 1", "table1.md", "make table1"),
    ("Figure 1", "figures/figures.md", "make figures"),
    ("Table 2", "table2.md", "make table2 DATA=multi30k"),
    ("Table 3", "table3.md", "make table3 DATA3=noisy_parallel_text"),
    ("Memorisation regimes", "regimes.md", "make regimes"),
)


class ReadmeSyncError(ValueError):
    """A README or table file that has not the expected shape (a one-line message)."""


def readme_block(table_md: str, source: str = "table1.md") -> str:
    """What the README shows of `table_md` (the text of results/table1.md): the main table
    (its first markdown table) and, after a blank line, the hardware sentence of its notes."""
    lines = table_md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), None)
    hardware = next((line for line in lines if line.startswith("- Hardware: ")), None)
    if start is None or hardware is None:
        raise ReadmeSyncError(f"{source}: no markdown table or no '- Hardware: ' line")
    end = start
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    return "\n".join([*lines[start:end], "", hardware.removeprefix("- ")])


def baselines_block(results: str | Path) -> str:
    """One line per table: its report's verdict on the loss baseline, or where a report
    without one is not yet produced."""
    results = Path(results)
    out = []
    for what, name, command in VERDICT_SOURCES:
        path = results / name
        lines = path.read_text().splitlines() if path.exists() else []
        verdict = next((line for line in lines if line.startswith(BASELINE_LINE)), None)
        link = f"[`results/{name}`](results/{name})"
        if verdict is None:
            state = (
                "has no loss rows yet (`{}` adds them)" if lines else "is not produced yet (`{}`)"
            )
            out.append(f"- **{what}**: {link} {state.format(command)}.")
        else:
            out.append(f"- **{what}** ({link}): {verdict.removeprefix('- ')}")
    return "\n".join(out)


def synced_readme(
    readme: str, block: str, source: str = "README.md", markers: tuple[str, str] = (START, END)
) -> str:
    """`readme` with `block` between `markers` (the Table 1 markers by default)."""
    start, end = markers
    if readme.count(start) != 1 or readme.count(end) != 1 or readme.find(start) > readme.find(end):
        raise ReadmeSyncError(f"{source}: needs one '{start}' line and then one '{end}' line")
    head, rest = readme.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{block}\n{end}{tail}"


def sync_readme(readme_path: str | Path, table_md_path: str | Path) -> bool:
    """Writes the main table of `table_md_path` between the Table 1 markers of
    `readme_path`; returns whether the README changed. Raises `ReadmeSyncError` (one line,
    naming the file) when the markers or the table are missing."""
    table_md_path = Path(table_md_path)
    block = readme_block(table_md_path.read_text(), str(table_md_path))
    return _rewrite(readme_path, block, (START, END))


def sync_baselines(readme_path: str | Path, results: str | Path) -> bool:
    """Writes `baselines_block(results)` between the baselines markers of `readme_path`;
    returns whether the README changed (`ReadmeSyncError` without the markers)."""
    return _rewrite(readme_path, baselines_block(results), (BASELINES_START, BASELINES_END))


def _rewrite(readme_path: str | Path, block: str, markers: tuple[str, str]) -> bool:
    """Puts `block` between `markers` in the file; writes only on a change, says whether."""
    readme_path = Path(readme_path)
    before = readme_path.read_text()
    after = synced_readme(before, block, str(readme_path), markers)
    if after != before:
        write_text(readme_path, after)  # whole or not at all
    return after != before
