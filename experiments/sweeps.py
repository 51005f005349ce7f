"""Whether a Hydra multirun finished: its jobs without results, named by their sweep
overrides. Uses Hydra's own sweep expansion, so it lives here, outside the library."""

from __future__ import annotations

from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class IncompleteSweep(RuntimeError):
    """A multirun folder lacks some of its jobs' results (the message names them)."""


def missing_jobs(sweep: str | Path) -> list[str]:
    """The jobs of a Hydra multirun folder that have no `metrics.json`, each named by its
    sweep overrides ("3: +table1=randproj_100"), from the `multirun.yaml` Hydra wrote at
    its start. Empty for a complete sweep, or a folder without `multirun.yaml`."""
    sweep = Path(sweep)
    if not (sweep / "multirun.yaml").exists():
        return []
    hydra_cfg = OmegaConf.load(sweep / "multirun.yaml").hydra
    # As Hydra's basic sweeper does: the config's sweep params, then the command line's
    # overrides (a key given twice takes the later value), expanded in the same order.
    params = hydra_cfg.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    return [
        f"{i}: " + " ".join(o for o in job if o.split("=")[0] in swept)
        for i, job in enumerate(jobs)
        if not (sweep / str(i) / "metrics.json").exists()
    ]


def require_complete(sweep: str | Path) -> None:
    """Raises IncompleteSweep naming the jobs of `sweep` that did not finish."""
    missing = missing_jobs(sweep)
    if missing:
        raise IncompleteSweep(
            f"{sweep} is incomplete: {len(missing)} job(s) without results ({'; '.join(missing)}); "
            "rerun its make target (finished rows and scored chunks are reused) or pass "
            "--sweep with a complete one"
        )
