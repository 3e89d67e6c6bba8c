"""Credential types as data: one YAML (or JSON) file per type, validated and loaded here.

A type definition has these members (``docs/credential-types.md`` has the long version):

``id``, ``version``
    Stable identifier (``university-diploma``) and version of the definition.
``vct``
    The https URL naming the type; the issuer serves the Type Metadata document there.
``name``, ``description``
    For developers (SD-JWT VC Type Metadata ``name``/``description``).
``display``
    Type Metadata ``display``: a list of ``{locale, name, description, rendering}`` with at least
    ``ca``, ``es`` and ``en``; ``rendering.simple`` may carry ``logo``, ``background_color``,
    ``text_color``.
``validity``
    ISO 8601 duration of a credential's validity (``P5Y``, ``P3M``).
``schema``
    JSON Schema 2020-12 of the claims (an object schema).
``claims``
    Type Metadata ``claims``: each ``{path, display, sd, mandatory, svg_id}`` plus ``source``, the
    declarative mapping from the source record to this claim (see :mod:`credential_schemas.mapping`:
    a dotted field path with ``[]`` for lists, transforms ``date_yyyymmdd``, ``upper``, ``map``,
    ``count``, ``age_equal_or_over``..., constants, the issuance time, ``each`` for lists of
    objects). A claim without ``source`` is a container whose children are mapped, or a part
    (``[..., null]``) of a mapped array.

The source record is what an adapter in ``issuer.sources`` returns: the source's own fields (for
Via Oberta, the parsed ``DatosEspecificos``) plus ``subject`` (``identifier``, ``identifierType``,
``name``, optional ``birthDate``) for the person the credential is about.

Registered claims (``iss``, ``nbf``, ``exp``, ``cnf``, ``status``, ``vct``...) are set by the
issuer: a definition may list them only with ``sd: never`` and no source.

The texts wallets show to citizens (names, descriptions, claim labels, a logo's ``alt_text``) hold
no control character (line breaks, tabs, ESC, C1, bidirectional controls): :func:`ssi.names.display_text`.
"""

from .errors import ClaimsInvalid, CredentialSchemaError, MappingError, Problem, SchemaError
from .mapping import Duration
from .model import (
    REQUIRED_LOCALES,
    ClaimDefinition,
    CredentialType,
    load_builtin_types,
    load_type,
    validate_type_definition,
)

__all__ = [
    "REQUIRED_LOCALES",
    "ClaimDefinition",
    "ClaimsInvalid",
    "CredentialSchemaError",
    "CredentialType",
    "Duration",
    "MappingError",
    "Problem",
    "SchemaError",
    "load_builtin_types",
    "load_type",
    "validate_type_definition",
]
