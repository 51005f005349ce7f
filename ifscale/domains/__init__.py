"""Domains of data (images, translation): the registry.

`register(domain, schema)` makes a `Domain` (`ifscale.domains.base`) the one of datasets whose
`dataset.kind` is its name, with that dataset schema; `domain_of(cfg.dataset)` finds it.
"""

from __future__ import annotations

from ifscale.config import DataConfig
from ifscale.domains.base import Dataset, Domain
from ifscale.domains.images import ImageDataConfig, ImagesDomain
from ifscale.domains.translation import TextDataConfig, TranslationDomain
from ifscale.utils import check

__all__ = ["DATA_SCHEMAS", "DOMAINS", "Dataset", "Domain", "domain_of", "register"]

DOMAINS: dict[str, Domain] = {}
DATA_SCHEMAS: dict[str, type[DataConfig]] = {}


def register(domain: Domain, schema: type[DataConfig]) -> None:
    """Makes `domain` the one of datasets whose `kind` is `domain.name`, with that schema."""
    DOMAINS[domain.name] = domain
    DATA_SCHEMAS[domain.name] = schema


def domain_of(dataset: DataConfig) -> Domain:
    """The registered domain of a dataset config."""
    check(
        dataset.kind in DOMAINS,
        "dataset.kind",
        f"unknown kind {dataset.kind!r}; registered: {sorted(DOMAINS)}",
    )
    return DOMAINS[dataset.kind]


register(ImagesDomain(), ImageDataConfig)
register(TranslationDomain(), TextDataConfig)
