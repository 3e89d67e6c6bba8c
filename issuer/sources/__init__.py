"""Data sources for issuance: one small interface (:class:`DataSource`) and adapters built from configuration.

See :mod:`issuer.sources.base` for the contract. Adapters: :mod:`.viaoberta` (SCSP v3 through Via
Oberta), :mod:`.rest` (a REST/JSON registry), :mod:`.sql` (a SQL table); :mod:`.config` builds them
from ``{type_id: {kind: ..., ...}}``. No FastAPI here: the issuer service wraps these.
"""

from .base import (
    BadSourceAnswer,
    Claims,
    DataSource,
    Evidence,
    Pending,
    SourceConfigError,
    SourceContext,
    SourceDestinationRefused,
    SourceError,
    SourceOutcome,
    SourceRefused,
    SourceUnavailable,
    Subject,
    SubjectNotFound,
)
from .config import build_source, build_sources, load_sources_config, tenant_source_config

__all__ = [
    "BadSourceAnswer",
    "Claims",
    "DataSource",
    "Evidence",
    "Pending",
    "SourceConfigError",
    "SourceContext",
    "SourceDestinationRefused",
    "SourceError",
    "SourceOutcome",
    "SourceRefused",
    "SourceUnavailable",
    "Subject",
    "SubjectNotFound",
    "build_source",
    "build_sources",
    "load_sources_config",
    "tenant_source_config",
]
