"""Via Oberta (SCSP v3) as a data source, over :class:`viaoberta.client.ViaObertaClient`.

Outcomes:

* data → :class:`Claims` whose record is the parsed ``DatosEspecificos`` plus ``subject``;
* tax ``NEGATIVO`` → also :class:`Claims` (``Certificado.Resultado`` is ``NEGATIVO`` with its
  ``TipoNegativo``): a negative certificate is a credential the citizen may need, not an error;
* registry "not found" (``Retorno`` ``01``) → :class:`SubjectNotFound`;
* asynchronous (``0001``/``0002``) → :class:`Pending` whose ``reference`` is the ``IdPeticion``;
  :meth:`ViaObertaSource.poll` collects the answer;
* transport failures after the client's bounded retries → :class:`SourceUnavailable`; an endpoint
  whose destination the outbound policy refuses → at once (no retry) :class:`SourceDestinationRefused`;
* an SCSP error status or signed SOAP fault about this query → :class:`SourceRefused`, except the
  system/outage codes ``05xx`` (``0502``: the emitter is down), HTTP 429, an unsigned fault and a signed
  fault naming another ``IdPeticion`` or none (a replay) → :class:`SourceUnavailable`;
* bad or missing signature, untrusted signer, malformed or oversized XML, or an answer about
  another subject than the one asked about, or echoing another purpose, consent, procedure, official
  or requesting body than the query sent → :class:`BadSourceAnswer`. The evidence records what was
  sent, not the echo. "About" is checked twice:
  ``DatosGenericos/Titular/Documentacion`` (which the emitter copies from our request) and every
  identity document number inside ``DatosEspecificos``, where the claims come from (outside the
  household list of the padró); the padró's ``DatosPersonales/Documentacion`` must be present.

Degrees: ``TITOLS_UNIVERSITARIS`` answers with every degree of the subject. The adapter keeps one,
as ``DatosTitulacion`` at the top of the record (replacing ``ListaTitulos``): the one whose
``NumTitulo`` or ``CodTitulacion`` equals ``context.selector`` when a selector is given (none
matching → :class:`SubjectNotFound`), otherwise the most recently issued (``FechaExpedicion``,
then ``FechaFinalizacion``). The other degrees are dropped, never returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from viaoberta.client import ViaObertaClient
from viaoberta.errors import ViaObertaError, ViaObertaUnavailable
from viaoberta.messages import (
    DataResult,
    ErrorResult,
    NegativeResult,
    NotFoundResult,
    PendingResult,
    QueryRequest,
    ViaObertaResult,
)
from viaoberta.messages import Evidence as ScspEvidence
from viaoberta.products import DEGREES, get_product
from viaoberta.xmlsafe import is_xml_text

from .base import (
    BadSourceAnswer,
    Claims,
    Evidence,
    Pending,
    SourceConfigError,
    SourceContext,
    SourceOutcome,
    SourceRefused,
    SourceUnavailable,
    Subject,
    SubjectNotFound,
    with_subject,
)

if TYPE_CHECKING:
    from credential_schemas import CredentialType

#: Element names that hold a person's identity document number inside ``DatosEspecificos``.
_IDENTIFIER_NAMES = frozenset({"Documentacion", "NumDocumento", "NumeroDocumento", "Nif", "NIF", "DNI", "NIE"})
#: Per product: where ``DatosEspecificos`` names the subject (must be present and be the subject),
#: and the subtrees about *other* people (household members), left out of the identifier check.
_SUBJECT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "RESIDENT": (("VolanteEmpadronamiento", "DatosPersonales", "Documentacion"),),
}
_OTHER_PEOPLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "RESIDENT": (("VolanteEmpadronamiento", "Convivientes"),),
}


def _same_identifier(value: Any, subject: Subject) -> bool:
    return isinstance(value, str) and value.strip().upper() == subject.identifier.strip().upper()


def check_specific_subject(codigo_certificado: str, data: dict[str, Any], subject: Subject) -> None:
    """Refuse ``DatosEspecificos`` that name anyone but ``subject`` (raises :class:`BadSourceAnswer`).

    ``Titular`` in ``DatosGenericos`` is copied by the emitter from our own request, so it proves
    little; the claims come from ``DatosEspecificos``. Every identifier found there (outside the
    product's household lists) must be the subject's, and where a product names the subject (the
    padró's ``DatosPersonales``) that identifier must be present.
    """
    for path in _SUBJECT_PATHS.get(codigo_certificado, ()):
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not _same_identifier(node, subject):
            raise BadSourceAnswer("Via Oberta's data is about another subject (or does not say whom)")
    skip = _OTHER_PEOPLE.get(codigo_certificado, ())

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if path in skip:
            return
        if isinstance(node, list):
            for item in node:
                walk(item, path)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in _IDENTIFIER_NAMES and not isinstance(value, dict | list):
                    if not _same_identifier(value, subject):
                        raise BadSourceAnswer("Via Oberta's data is about another subject")
                else:
                    walk(value, (*path, key))

    walk(data, ())


#: SCSP ``CodigoEstado`` 05xx: a system error at the platform or the emitter (0502: the emitter could
#: not be reached), an outage to retry later, not a refusal of the query.
_OUTAGE_PREFIX = "05"

#: Client error codes that mean our request itself was wrong (configuration), not the answer.
_REQUEST_ERRORS = frozenset({"viaoberta.bad_request", "viaoberta.unknown_product", "viaoberta.bad_configuration"})


def _evidence(scsp: ScspEvidence, context: SourceContext) -> Evidence:
    """The evidence of the query *as sent*; an answer echoing another purpose, basis or official is refused.

    The echo is the emitter's copy of our request: it proves nothing we did not send, and if it
    differs the answer is not for this query (or was altered), so it is never issued from.
    """
    sent = {"Finalidad": context.purpose, "Procedimiento": context.procedure, "Consentimiento": context.consent,
            "NombreCompletoFuncionario": context.official_name, "NifFuncionario": context.official_nif,
            "IdentificadorSolicitante": context.requesting_body_id}
    echoed = {"Finalidad": scsp.purpose, "Procedimiento": scsp.procedure, "Consentimiento": scsp.consent,
              "NombreCompletoFuncionario": scsp.official_name, "NifFuncionario": scsp.official_nif,
              "IdentificadorSolicitante": scsp.requester_id}
    optional = ("Procedimiento", "NifFuncionario")  # may be left out of an answer
    differing = [name for name, value in sent.items()
                 if echoed[name].strip() != value.strip() and not (name in optional and not echoed[name])]
    if differing:
        raise BadSourceAnswer(f"Via Oberta's answer echoes another {', '.join(differing)} than the query sent")
    return Evidence(
        request_id=scsp.request_id or context.request_id,
        transmission_id=scsp.id_transmision or None,
        product=f"{scsp.product}/{scsp.modality}",
        purpose=context.purpose,
        procedure=context.procedure,
        official=f"{context.official_name} ({context.official_nif})",
        consent=context.consent,
        timestamp=scsp.timestamp,
        source="viaoberta",
    )


def select_degree(data: dict[str, Any], selector: str | None) -> dict[str, Any]:
    """Replace ``ListaTitulos`` by the one ``DatosTitulacion`` chosen (see the module docstring)."""
    lista = data.get("ListaTitulos")
    titulos = lista.get("DatosTitulacion") if isinstance(lista, dict) else None
    if isinstance(titulos, dict):
        titulos = [titulos]
    if not isinstance(titulos, list) or not all(isinstance(t, dict) for t in titulos):
        raise BadSourceAnswer("the degrees answer has no ListaTitulos/DatosTitulacion")
    if not titulos:
        raise SubjectNotFound("the registry lists no degree for this subject")

    def titulo(entry: dict[str, Any]) -> dict[str, Any]:
        value = entry.get("DatosTitulo")
        return value if isinstance(value, dict) else {}

    if selector:
        chosen = [t for t in titulos if selector in (titulo(t).get("NumTitulo"), titulo(t).get("CodTitulacion"))]
        if not chosen:
            raise SubjectNotFound("no degree of this subject matches the selector")
        pick = chosen[0]
    else:
        pick = max(titulos, key=lambda t: (str(titulo(t).get("FechaExpedicion", "")),
                                           str(titulo(t).get("FechaFinalizacion", ""))))
    out = {k: v for k, v in data.items() if k != "ListaTitulos"}
    out["DatosTitulacion"] = pick
    return out


class ViaObertaSource:
    """One Via Oberta product as a data source.

    ``product`` is a ``CodigoCertificado`` (``ECOT103``, ``TITOLS_UNIVERSITARIS``, ``RESIDENT``,
    ``VIDA_LABORAL``) or a product key; ``specific`` optional request ``DatosEspecificos`` values
    (for the padró, ``{"Consulta.CodigoMunicipio": "08019"}``).
    """

    def __init__(self, client: ViaObertaClient, product: str, *, specific: dict[str, str] | None = None,
                 name: str = "viaoberta") -> None:
        found = get_product(product)
        if found is None:
            raise SourceConfigError("unknown Via Oberta product")
        for path, value in (specific or {}).items():
            if path not in found.request_fields:
                raise SourceConfigError(f"product {found.codigo_certificado} has no request field {path}")
            if not isinstance(value, str) or not is_xml_text(value):
                raise SourceConfigError(f"request field {path} must be text without control characters")
        self.client = client
        self.product = found
        self.specific = dict(specific or {})
        self.name = name

    def _request(self, subject: Subject, context: SourceContext, request_id: str = "") -> QueryRequest:
        return QueryRequest(
            product=self.product.codigo_certificado, subject_document=subject.identifier,
            subject_document_type=subject.identifier_type, subject_name=subject.name, purpose=context.purpose,
            procedure=context.procedure, consent=context.consent, requester_id=context.requesting_body_id,
            requester_name=context.requesting_body_name, official_name=context.official_name,
            official_nif=context.official_nif, request_id=request_id, specific=self.specific,
        )

    async def fetch(self, credential_type: CredentialType, subject: Subject, context: SourceContext) -> SourceOutcome:
        """Query the product for ``subject`` (the SCSP ``IdPeticion`` is generated per query)."""
        # SCSP caps IdPeticion at 26 characters; the context's id is used when it fits.
        request_id = context.request_id if len(context.request_id) <= 26 else ""
        try:
            request = self._request(subject, context, request_id)
            result = await self.client.query(request)
        except ViaObertaError as exc:
            raise self._translate(exc) from exc
        return self._outcome(result, subject, context)

    async def poll(self, reference: str, credential_type: CredentialType, subject: Subject,
                   context: SourceContext) -> SourceOutcome:
        """Collect the answer to a pending query by its ``IdPeticion`` (``reference``)."""
        try:
            result = await self.client.poll(reference, self.product.codigo_certificado)
        except ViaObertaError as exc:
            raise self._translate(exc) from exc
        return self._outcome(result, subject, context)

    @staticmethod
    def _translate(exc: ViaObertaError) -> Exception:
        if isinstance(exc, ViaObertaUnavailable):
            return SourceUnavailable(f"Via Oberta is unavailable ({exc.code})")
        if exc.code in _REQUEST_ERRORS:
            return SourceRefused(f"the query could not be sent ({exc.code})")
        return BadSourceAnswer(f"Via Oberta's answer was refused ({exc.code})")

    def _outcome(self, result: ViaObertaResult, subject: Subject, context: SourceContext) -> SourceOutcome:
        if isinstance(result, PendingResult):
            return Pending(retry_after=max(1, int(result.retry_after_seconds)), reference=result.request_id)
        evidence = getattr(result, "evidence", None)
        if evidence is not None and evidence.subject_document.strip().upper() != subject.identifier.strip().upper():
            # Signed and well formed, yet about someone else (an emitter's mix-up): never issue from it.
            raise BadSourceAnswer("Via Oberta's answer is about another subject")
        if isinstance(result, NotFoundResult):
            raise SubjectNotFound()
        if isinstance(result, ErrorResult) and result.codigo_estado.startswith(_OUTAGE_PREFIX):
            raise SourceUnavailable(f"Via Oberta's emitter is unavailable (CodigoEstado {result.codigo_estado})")
        if isinstance(result, ErrorResult):
            raise SourceRefused(f"Via Oberta refused the query (CodigoEstado {result.codigo_estado})")
        if isinstance(result, DataResult | NegativeResult):
            data = result.data
            if not isinstance(data, dict):
                raise BadSourceAnswer("DatosEspecificos is not a structure")
            check_specific_subject(self.product.codigo_certificado, data, subject)
            if self.product.codigo_certificado == DEGREES.codigo_certificado:
                data = select_degree(data, context.selector)
            return Claims(record=with_subject(data, subject), evidence=_evidence(result.evidence, context))
        raise BadSourceAnswer("unexpected result from the Via Oberta client")
