"""The one small interface every data source implements, and the values it returns.

Contract (what the issuer relies on):

* :meth:`DataSource.fetch` returns :class:`Claims` — the **source record** (the source's own
  fields, plus ``subject``) and the :class:`Evidence` of the query — or :class:`Pending` when the
  source answers asynchronously, or raises a :class:`SourceError` subclass.
* Adapters return the *record*, not claims: the issuer maps it with
  ``CredentialType.map_claims(record, now=...)``, so one type definition describes the mapping
  whatever adapter feeds it, and a mapping error is reported as such, not as a source failure.
* Adapters never store source data. The record lives in memory for one issuance; only the
  evidence is meant to be kept, with the issuance record.
* Error ``detail`` strings never contain claim values or the subject's identifier.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ssi.errors import SSIError
from viaoberta.xmlsafe import is_xml_text

if TYPE_CHECKING:
    from credential_schemas import CredentialType

#: Legal bases / consent values, as SCSP v3 ``Consentimiento`` spells them.
CONSENT_VALUES: tuple[str, ...] = ("Si", "Ley", "NoOpo")


class SourceError(SSIError):
    """A data source could not give data for this subject; subclasses say why."""

    area = "source"


class SubjectNotFound(SourceError):
    """The registry holds nothing for this subject (not an outage: do not retry)."""

    def __init__(self, detail: str = "the source holds no record for this subject") -> None:
        super().__init__("subject_not_found", detail)


class SourceUnavailable(SourceError):
    """A transient failure (network, timeout, HTTP 5xx); ``retry_after`` in seconds when known."""

    def __init__(self, detail: str = "the source is unavailable", retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__("source_unavailable", detail)


class SourceRefused(SourceError):
    """The source refused the query (authorisation, purpose, consent, a 4xx): fix the request, not retry."""

    def __init__(self, detail: str = "the source refused the query") -> None:
        super().__init__("source_refused", detail)


class BadSourceAnswer(SourceError):
    """The answer could not be trusted or understood (bad signature, malformed, unexpected shape)."""

    def __init__(self, detail: str = "the source's answer could not be used") -> None:
        super().__init__("bad_source_answer", detail)


class SourceConfigError(SourceError):
    """An adapter's configuration is invalid: raised when building it, and during a fetch only as
    :class:`SourceDestinationRefused`. Never retried: the configuration has to change."""

    def __init__(self, detail: str, code: str = "bad_source_config") -> None:
        SourceError.__init__(self, code, detail)


class SourceDestinationRefused(SourceConfigError):
    """The source's URL leads where the issuer's outbound policy (``service_kit.outbound``) refuses to
    connect, e.g. a host name that now resolves to an internal address: a configuration error (change
    the URL, or the operator lists the host in ``internal_hosts``), not an outage; never retried."""

    def __init__(self, detail: str = "the source's URL leads where the issuer may not connect") -> None:
        super().__init__(detail, "source_destination_refused")


#: The longest per-request ``timeout`` a source may be configured with, seconds (as Via Oberta's client).
MAX_TIMEOUT = 120


def check_timeout(value: Any) -> float:
    """A source's ``timeout`` setting: a finite number of seconds above 0 and at most :data:`MAX_TIMEOUT`,
    not a boolean (raises :class:`SourceConfigError`). Refused when configured: a zero or negative one
    would make every query time out, a 503 for ever."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not 0 < value <= MAX_TIMEOUT):
        raise SourceConfigError(f"timeout must be a number of seconds above 0, at most {MAX_TIMEOUT}")
    return float(value)


def destination_refused(exc: BaseException) -> SourceDestinationRefused | None:
    """The typed error for a transport error the outbound policy caused, else ``None``.

    The one place the HTTP adapters (REST, and Via Oberta through its client's ``final_error``) tell a
    destination refused by ``service_kit.outbound`` (:class:`~service_kit.outbound.DestinationRefused`,
    which httpx raises as the cause of its ``ConnectError``) from an unreachable peer. Its message names
    the host, never the URL's path or query.
    """
    from service_kit.outbound import DestinationRefused

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DestinationRefused):
            return SourceDestinationRefused(f"the source's URL cannot be reached: {current}")
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class Subject:
    """The person the credential is about, as the citizen login established them."""

    identifier: str
    identifier_type: str = "NIF"
    name: str = ""
    birth_date: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The ``subject`` member of a source record (mapping paths ``subject.identifier`` etc.)."""
        out: dict[str, Any] = {"identifier": self.identifier, "identifierType": self.identifier_type,
                               "name": self.name}
        if self.birth_date:
            out["birthDate"] = self.birth_date
        return out


@dataclass(frozen=True)
class SourceContext:
    """Why and on whose authority a source is queried; every query carries one.

    ``consent`` is the legal basis: ``Si`` (the citizen consented), ``Ley`` (a law allows it) or
    ``NoOpo`` (the citizen did not object). ``selector`` picks one record when a source holds
    several (for degrees: a ``NumTitulo`` or a ``CodTitulacion``).
    """

    purpose: str
    procedure: str
    consent: str
    official_name: str
    official_nif: str
    requesting_body_id: str
    requesting_body_name: str
    # 26 characters: the SCSP maximum for IdPeticion, so Via Oberta can carry the same id.
    request_id: str = field(default_factory=lambda: secrets.token_hex(13))
    selector: str | None = None

    def __post_init__(self) -> None:
        if self.consent not in CONSENT_VALUES:
            raise SourceRefused(f"consent must be one of {', '.join(CONSENT_VALUES)}")
        for name in ("purpose", "procedure", "official_name", "official_nif", "requesting_body_id",
                     "requesting_body_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise SourceRefused(f"the query context needs {name}")
            if not is_xml_text(getattr(self, name)):
                # Written into queries (SCSP XML, headers): refused here, when a tenant stores it.
                raise SourceRefused(f"{name} holds a control character or an unpaired surrogate")


@dataclass(frozen=True)
class Evidence:
    """What the issuance record keeps about the query (never the data itself)."""

    request_id: str
    transmission_id: str | None
    product: str
    purpose: str
    procedure: str
    official: str
    consent: str
    timestamp: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        # Every field is a string or None: a flat copy is what asdict's recursive deep copy gives.
        return {each.name: getattr(self, each.name) for each in fields(self)}

    @classmethod
    def build(cls, context: SourceContext, *, product: str, source: str, transmission_id: str | None = None,
              timestamp: dt.datetime | None = None) -> Evidence:
        """Evidence for a query made under ``context``."""
        moment = timestamp or dt.datetime.now(dt.UTC)
        return cls(request_id=context.request_id, transmission_id=transmission_id, product=product,
                   purpose=context.purpose, procedure=context.procedure,
                   official=f"{context.official_name} ({context.official_nif})", consent=context.consent,
                   timestamp=moment.isoformat(timespec="seconds"), source=source)


@dataclass(frozen=True)
class Claims:
    """A successful fetch: the source record (to map through the type) and the evidence."""

    record: dict[str, Any] = field(repr=False)
    evidence: Evidence


@dataclass(frozen=True)
class Pending:
    """The source will answer later: poll with ``reference`` after ``retry_after`` seconds.

    ``context`` is the query context the pending query was sent under, which its polls must carry
    too (an answer echoing another purpose or official is refused): adapters leave it out, and the
    issuer fills it in (:func:`issuer.issuance.fetch_record`) to keep it with the deferral.
    """

    retry_after: int
    reference: str
    evidence: Evidence | None = None
    context: SourceContext | None = field(default=None, repr=False)


SourceOutcome = Claims | Pending


@runtime_checkable
class DataSource(Protocol):
    """A data source adapter (Via Oberta, REST/JSON registry, SQL table...)."""

    name: str

    async def fetch(self, credential_type: CredentialType, subject: Subject, context: SourceContext) -> SourceOutcome:
        """Query the source for ``subject``; :class:`Claims`, :class:`Pending`, or a :class:`SourceError`."""
        ...

    async def poll(self, reference: str, credential_type: CredentialType, subject: Subject,
                   context: SourceContext) -> SourceOutcome:
        """Ask again about a :class:`Pending` query; synchronous sources raise :class:`SourceRefused`."""
        ...


def with_subject(record: dict[str, Any], subject: Subject) -> dict[str, Any]:
    """``record`` plus the ``subject`` member the type mappings read."""
    out = dict(record)
    out["subject"] = subject.as_record()
    return out


def reshape(data: Any, fields: dict[str, str] | None) -> dict[str, Any]:
    """Build a record from a source's answer: ``{record_path: answer_path}``; without ``fields``, the answer itself.

    This is how a REST or SQL registry feeds a type whose mapping was written for another
    source's shape (for example the Via Oberta field names): the adapter's configuration, not the
    type, absorbs the difference. Record paths are dotted object keys; answer paths may use
    ``[]`` as in type mappings.
    """
    from credential_schemas.mapping import MISSING, resolve

    if not fields:
        if not isinstance(data, dict):
            raise BadSourceAnswer("the source answered something other than a JSON object")
        return dict(data)
    out: dict[str, Any] = {}
    for target, path in fields.items():
        value = resolve(data, path)
        if value is MISSING:
            continue
        node = out
        parts = target.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SourceConfigError(f"record path '{target}' crosses a value")
            node = nxt
        node[parts[-1]] = value
    return out


def check_fields(fields: Any) -> dict[str, str] | None:
    """Validate a ``fields`` setting (raises :class:`SourceConfigError`)."""
    if fields is None:
        return None
    if not isinstance(fields, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                               for k, v in fields.items()):
        raise SourceConfigError("fields must map record paths to answer paths (strings)")
    from credential_schemas.mapping import check_spec

    for target, path in fields.items():
        if any(not part for part in target.split(".")):
            raise SourceConfigError(f"bad record path '{target}'")
        problems = check_spec({"field": path}, f"fields.{target}")
        if problems:
            raise SourceConfigError(str(problems[0]))
    return dict(fields)
