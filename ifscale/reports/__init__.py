"""Tables and figures from run folders (`metrics.json`, `scores.csv`, `config.json`).

Used by `experiments/report.py` and the inspection notebook; free of Hydra (whether a
multirun finished is `experiments/sweeps.py`'s). A run folder is what
`ifscale.run.pipeline.run` writes; its `metrics.json` is read through
`ifscale.run.metrics.RunMetrics`.

- `runs`: loading run folders, matching runs to a paper's rows, formatting and markdown
- `table1`, `figures`, `table2`, `table3`, `regimes`: one module per table or figure pair
- `readme`: the README's copy of Table 1
"""

from ifscale.reports.figures import (
    FIGURE1_METHODS,
    figure1_baseline_verdict,
    figure1_frame,
    figure2_frame,
    plot_figure1,
    plot_figure2,
)
from ifscale.reports.readme import (
    ReadmeSyncError,
    baselines_block,
    readme_block,
    sync_baselines,
    sync_readme,
)
from ifscale.reports.regimes import (
    REGIME_ROWS,
    plot_regimes,
    regimes_findings,
    regimes_frame,
    regimes_runs_frame,
    regimes_table,
    training_table,
)
from ifscale.reports.runs import (
    METHOD_LABELS,
    Row,
    config_of,
    load_runs,
    markdown_table,
    match_rows,
    rows_with_runs,
    scores_of,
)
from ifscale.reports.table1 import (
    FIDELITY,
    FIDELITY_ROWS,
    TABLE1_ROWS,
    TOP_EXAMPLES_ROWS,
    check_section,
    found_at_k,
    table1_frame,
    table1_notes,
    top_examples,
)
from ifscale.reports.table1_seeds import SEED_ROWS, seeds_frame, seeds_section
from ifscale.reports.table2 import (
    LAYER_LABELS,
    TABLE2_BASELINE_ROWS,
    TABLE2_KFAC_ROWS,
    TABLE2_ROWS,
    TOP_PAIRS_ROWS,
    table2_check_section,
    table2_findings,
    table2_frame,
    table2_notes,
    top_pairs,
)
from ifscale.reports.table3 import (
    NOISE_KIND_ORDER,
    TABLE3_BASE_VARIANT,
    TABLE3_PAPER,
    TABLE3_SHARE_MAP,
    selection_bias,
    table3_bias_frame,
    table3_bias_section,
    table3_findings,
    table3_frame,
    table3_notes,
)

__all__ = [
    "REGIME_ROWS",
    "plot_regimes",
    "regimes_findings",
    "regimes_frame",
    "regimes_runs_frame",
    "regimes_table",
    "training_table",
    "FIDELITY",
    "FIDELITY_ROWS",
    "FIGURE1_METHODS",
    "LAYER_LABELS",
    "METHOD_LABELS",
    "NOISE_KIND_ORDER",
    "TABLE1_ROWS",
    "TABLE2_BASELINE_ROWS",
    "TABLE2_KFAC_ROWS",
    "TABLE2_ROWS",
    "TABLE3_BASE_VARIANT",
    "TABLE3_PAPER",
    "TABLE3_SHARE_MAP",
    "TOP_EXAMPLES_ROWS",
    "TOP_PAIRS_ROWS",
    "ReadmeSyncError",
    "SEED_ROWS",
    "Row",
    "check_section",
    "config_of",
    "figure1_baseline_verdict",
    "figure1_frame",
    "figure2_frame",
    "found_at_k",
    "load_runs",
    "markdown_table",
    "match_rows",
    "plot_figure1",
    "plot_figure2",
    "readme_block",
    "baselines_block",
    "sync_baselines",
    "rows_with_runs",
    "scores_of",
    "seeds_frame",
    "seeds_section",
    "selection_bias",
    "sync_readme",
    "table1_frame",
    "table1_notes",
    "table2_check_section",
    "table2_findings",
    "table2_frame",
    "table2_notes",
    "table3_bias_frame",
    "table3_bias_section",
    "table3_findings",
    "table3_frame",
    "table3_notes",
    "top_examples",
    "top_pairs",
]
