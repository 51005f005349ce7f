"""Reading what older versions of ifscale wrote: run folders' config.json from before the
typed schemas, so that reports still read old runs."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from ifscale.kinds import DATA_CONFIGS


def upgrade_old_run_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's `config.json` written before the typed schemas (`dataset.kind` "image" or
    "text", `train.checkpoints`) in today's layout, so reports still read old run folders."""
    dataset = raw.get("dataset", {})
    if dataset.get("kind") not in ("image", "text"):
        return raw
    raw = copy.deepcopy(raw)
    kind = "translation" if dataset["kind"] == "text" else "images"
    fields = {f.name for f in dataclasses.fields(DATA_CONFIGS[kind])}
    raw["dataset"] = {k: v for k, v in dataset.items() if k in fields} | {"kind": kind}
    raw["model"] = {k: v for k, v in raw.get("model", {}).items() if v is not None}
    train = raw.get("train", {})
    if "checkpoints" in train:
        train["kept_checkpoints"] = train.pop("checkpoints")
    return raw
