"""Errors of the credential-type layer, on the same stable-code model as :mod:`ssi.errors`."""

from __future__ import annotations

from dataclasses import dataclass

from ssi.errors import SSIError


@dataclass(frozen=True)
class Problem:
    """One problem found in a type definition or in a set of claims.

    ``path`` locates it (``claims[3].sd``, ``schema.properties.title``, ``/title`` for claims);
    ``message`` is a sentence that never quotes a claim value.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class CredentialSchemaError(SSIError):
    """Base of the errors raised by :mod:`credential_schemas`."""

    area = "credential_schema"


class SchemaError(CredentialSchemaError):
    """A type definition was refused; ``problems`` lists every problem found, each with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        summary = "; ".join(str(p) for p in self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__("invalid_type_definition", f"{len(self.problems)} problem(s): {summary}{more}")


class MappingError(CredentialSchemaError):
    """A source record could not be mapped to claims.

    ``field`` names the source field (never its value); ``claim`` the claim being built.
    """

    def __init__(self, code: str, detail: str, *, field: str = "", claim: str = "") -> None:
        self.field = field
        self.claim = claim
        super().__init__(code, detail)


class ClaimsInvalid(CredentialSchemaError):
    """Mapped claims do not satisfy the type's JSON Schema; ``problems`` names each failing path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("claims_invalid", "; ".join(str(p) for p in self.problems[:5]))
