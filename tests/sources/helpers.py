"""Shared values for the source adapter tests."""

from __future__ import annotations

from issuer.sources import SourceContext, Subject

SUBJECT = Subject(identifier="12345678Z", identifier_type="NIF", name="Montserrat Puig Ferrer")


def context(**overrides: str) -> SourceContext:
    values = dict(purpose="Concessió d'ajuts", procedure="AJUTS-2026", consent="Si",
                  official_name="Anna Funcionària", official_nif="11111111H",
                  requesting_body_id="Q0801175A", requesting_body_name="Ajuntament de Proves",
                  request_id="REQ-0001")
    values.update(overrides)
    return SourceContext(**values)
