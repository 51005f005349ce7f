"""What every command-line entry point shares: the schemas and resolvers registered with
Hydra, one-line errors (exit 2), and the checks made before Hydra makes a run folder.

Importing it registers the config schemas (`experiments.schema`) and the resolvers that
`conf/config.yaml` uses (`project_root`, `run_token`, `run_name`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments.schema import register
from ifscale import distributed
from ifscale.cache.chunks import IncompleteScores
from ifscale.config import RunConfig
from ifscale.run.compose import build, one_line
from ifscale.run.context import check_config
from ifscale.utils import ConfigError, os_error_in, os_error_line

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# One token per process (not per call: Hydra resolves the run folder more than once).
RUN_TOKEN = secrets.token_hex(3)


# The longest file name most file systems take (ext4, xfs, btrfs, tmpfs: 255 bytes).
NAME_MAX = 255


def run_name(name: str) -> str:
    """`name` as a folder under outputs/, or a one-line error: no path separators, no
    `..`, not empty, not longer than a file name may be."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"name: {name!r} must be a plain folder name (no '/', no '..')")
    if len(name.encode()) > NAME_MAX:
        raise ValueError(
            f"name: {len(name.encode())} bytes is longer than a folder name may be "
            f"({NAME_MAX}); shorten it"
        )
    return name


OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("run_token", lambda: RUN_TOKEN, replace=True)
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
register()
log = logging.getLogger("ifscale.run")
# JAX logs at INFO that it found no TPU; Hydra's INFO root logger would show it on every run.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@contextlib.contextmanager
def one_line_errors():
    """A bad config, an incomplete merge or a file-system error (read-only, full, a name too
    long, permissions) ends in one clear line (exit 2), not a traceback from deep inside the
    stack. What was stored before stays valid: a rerun resumes."""
    try:
        yield
    except ConfigError as e:
        log.error("Bad configuration: %s", e)
        sys.exit(2)
    except IncompleteScores as e:
        log.error("Cannot merge: %s", e)
        sys.exit(2)
    except FloatingPointError as e:  # diverged training, a degenerate model, a NaN score
        log.error("Stopped: %s", str(e).splitlines()[0])
        sys.exit(2)
    except Exception as e:
        found = os_error_in(e)
        if found is None:
            raise
        log.error("File system error: %s", os_error_line(found))
        sys.exit(2)


def compose_run(overrides: list[str]) -> RunConfig:
    """The checked `RunConfig` that `run.py <overrides>` runs (for plain `key=value`
    overrides; in an experiment that is a multirun over its own `hydra.sweeper.params`, its
    first job); raises ConfigError with one line for a bad name, value, type, key or group
    option."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "name":
            try:
                run_name(value)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    try:
        with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
            first = _first_job(compose("config", overrides, return_hydra_config=True), overrides)
            return build(compose("config", overrides + first))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_line(e)) from None


def _first_job(composed, overrides: list[str]) -> list[str]:
    """The overrides of the first job of a multirun that the config itself sweeps
    (`hydra.mode: MULTIRUN` with `hydra.sweeper.params`, as `make lds`'s experiments do),
    less the keys the command line already sets; [] for a single run."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    hydra_cfg = composed.hydra
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return []
    given = {arg.partition("=")[0].lstrip("+~") for arg in overrides}
    first = []
    parser = OverridesParser.create()
    for key, value in (hydra_cfg.sweeper.get("params") or {}).items():
        if key.lstrip("+~") in given:
            continue
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
        first.append(f"{key}={value}")
    return first


def _hydra_line(error: Exception) -> str:
    """Hydra's (often multi-line) composition error as one line, naming the key."""
    cause = error.__cause__ or error.__context__
    if cause is not None and getattr(cause, "full_key", None):
        return one_line(cause)
    text = str(error).strip()
    line = text.splitlines()[0].removeprefix("In 'config': ") if text else type(error).__name__
    if "Available options" in text:  # an unknown group option: list the known ones
        options = text.split("Available options", 1)[1].split("Config search path")[0]
        line += f"; options: {', '.join(options.split(':', 1)[1].split())}"
    return line


def _has_sweep(overrides: list[str]) -> bool:
    """Whether an override sweeps (`a=1,2`, `range(...)`, ...), as Hydra parses it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a malformed override: compose_run names it
        return False
    return any(o.is_sweep_override() for o in parsed)


def preflight(argv: list[str]) -> None:
    """Checks a run's overrides before Hydra makes its run folder: a bad one ends in one line
    (exit 2) and writes nothing. That is the config (composed and checked), the cache folder
    and the device mesh (`check_config`; the mesh not in a job of several JAX processes,
    which must join their runtime before any device is counted). With Hydra's flags (a
    multirun's `-m`, `--cfg`, ...) or a sweep on the command line (`seed=0,1,2` in an
    experiment that is a multirun) only the run name is checked here; the rest is Hydra's
    and the job's."""
    overrides = [arg for arg in argv if not arg.startswith(("hydra.", "hydra/", "-"))]
    flags = any(arg.startswith("-") for arg in argv) or _has_sweep(overrides)
    if flags:
        overrides = [arg for arg in overrides if arg.partition("=")[0].lstrip("+~") == "name"]
    try:
        if flags:
            for arg in overrides:
                run_name(arg.partition("=")[2])
        else:
            cfg = compose_run(overrides)
            if not distributed.describes_job(os.environ):
                check_config(cfg)
    except (ConfigError, ValueError) as e:
        print(f"Bad configuration: {e}", file=sys.stderr)
        sys.exit(2)
