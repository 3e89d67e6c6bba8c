"""The four Via Oberta products Cartera issues credentials from, as data.

Each :class:`Product` names its SCSP v3 codes (``CodigoProducto`` and ``CodigoCertificado``, the
modality), its emitter (``NifEmisor``/``NombreEmisor``), the optional request ``DatosEspecificos``
fields and the exact shape of the response ``DatosEspecificos``.

The parsed form of ``DatosEspecificos``
---------------------------------------
:func:`viaoberta.messages.parse_respuesta` returns ``DatosEspecificos`` as a plain nested ``dict``:

* each child element becomes a member named by its **local name** (namespaces dropped);
* an element with no child elements becomes its text as ``str`` (``""`` when empty);
* an element with child elements becomes a nested ``dict``;
* repeated sibling elements with the same name become a ``list`` of those values, in document
  order; in addition, the elements a product declares in :attr:`Product.repeated` (for example
  ``DatosTitulacion``, ``Conviviente``, ``situacio``, ``Incumplimiento``) are **always** lists, even
  with a single occurrence, so that a mapping path such as
  ``ListaTitulos.DatosTitulacion[].DatosTitulo.NombreCarrera`` never has to guess;
* attributes are ignored (SCSP v3 ``DatosEspecificos`` carry none in these products);
* dates are kept as the registry sends them: ``AAAAMMDD`` (e.g. ``"20190715"``).

Every product's ``DatosEspecificos`` starts with its own result code, distinct from the SCSP
status of the envelope: ``Retorno/Estado/{CodigoEstado, LiteralError}`` where ``CodigoEstado`` is
:data:`RETORNO_FOUND` (``"00"``: data follow) or :data:`RETORNO_NOT_FOUND` (``"01"``: the registry
holds nothing for this subject). The envelope's ``Estado/CodigoEstado`` stays ``0003`` (done) in
both cases: the transmission succeeded, the registry simply has no record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: ``DatosEspecificos/Retorno/Estado/CodigoEstado``: the registry found the subject; data follow.
RETORNO_FOUND = "00"
#: ``DatosEspecificos/Retorno/Estado/CodigoEstado``: the registry holds nothing for this subject.
RETORNO_NOT_FOUND = "01"

#: AEAT, the State tax agency: emitter of the tax-compliance product. The other emitters' NIFs
#: below are illustrative placeholders for the sandbox; a deployment takes them from its AOC contract.
AEAT_NIF = "Q2826000H"


@dataclass(frozen=True)
class Product:
    """One Via Oberta product/modality and the shape of its ``DatosEspecificos``.

    ``request_fields`` maps a dotted path inside the request ``DatosEspecificos`` (for example
    ``"Consulta.CodigoMunicipio"``) to its meaning; all of them are optional in Cartera's use.
    ``response_root`` is the first element after ``Retorno`` that carries the data, and
    ``repeated`` the element names always parsed as lists. ``example`` is a parsed response
    ``DatosEspecificos`` (see the module docstring for the rule).
    """

    key: str
    codigo_producto: str
    codigo_certificado: str
    nif_emisor: str
    nombre_emisor: str
    title: str
    description: str
    response_root: str
    request_fields: MappingProxyType[str, str]
    repeated: frozenset[str]
    example: MappingProxyType[str, Any] = field(repr=False)


def _ro(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


_RETORNO_OK = {"Estado": {"CodigoEstado": RETORNO_FOUND, "LiteralError": ""}}

TAX = Product(
    key="tax",
    codigo_producto="AEAT_DADES",
    codigo_certificado="ECOT103",
    nif_emisor=AEAT_NIF,
    nombre_emisor="Agencia Estatal de Administración Tributaria",
    title="Estar al corriente de obligaciones tributarias (subvenciones y ayudas)",
    description=(
        "Tax compliance for grants and subsidies. Response DatosEspecificos:\n"
        "  Retorno/Estado/{CodigoEstado, LiteralError}\n"
        "  Certificado/{Resultado (POSITIVO|NEGATIVO), TipoNegativo (only when NEGATIVO),\n"
        "               Incumplimientos/Incumplimiento[]/{Codigo, Descripcion} (only when NEGATIVO),\n"
        "               ReferenciaAEAT, FechaEmision (AAAAMMDD)}"
    ),
    response_root="Certificado",
    request_fields=_ro({}),
    repeated=frozenset({"Incumplimiento"}),
    example=_ro({
        "Retorno": _RETORNO_OK,
        "Certificado": {
            "Resultado": "NEGATIVO",
            "TipoNegativo": "01",
            "Incumplimientos": {"Incumplimiento": [
                {"Codigo": "D01", "Descripcion": "Deudas tributarias en periodo ejecutivo"},
            ]},
            "ReferenciaAEAT": "ECOT1032026A1B2C3D4",
            "FechaEmision": "20260315",
        },
    }),
)

#: ``TipoNegativo`` values the sandbox uses, with the cause a credential shows.
TIPOS_NEGATIVO: MappingProxyType[str, str] = _ro({
    "01": "Deudas tributarias en periodo ejecutivo",
    "02": "No presentación de declaraciones obligatorias",
    "03": "Titular no identificado en el censo de la AEAT",
})
#: ``Incumplimiento/Codigo`` values the sandbox uses.
INCUMPLIMIENTOS: MappingProxyType[str, str] = _ro({
    "D01": "Deudas tributarias en periodo ejecutivo",
    "D02": "Aplazamiento incumplido",
    "P01": "Falta la declaración del IRPF",
    "P02": "Falta la declaración del IVA (modelo 303)",
    "P03": "Falta el resumen anual de retenciones (modelo 190)",
})

DEGREES = Product(
    key="degrees",
    codigo_producto="MEPSYD",
    codigo_certificado="TITOLS_UNIVERSITARIS",
    nif_emisor="S2818001F",
    nombre_emisor="Ministerio de Ciencia, Innovación y Universidades",
    title="Consulta de títulos universitarios oficiales",
    description=(
        "Official university degrees held by the subject. Response DatosEspecificos:\n"
        "  Retorno/Estado/{CodigoEstado, LiteralError}\n"
        "  ListaTitulos/DatosTitulacion[]/{\n"
        "    DatosCentro/{Universidad, Centro},\n"
        "    DatosTitulo/{CodTitulacion (RUCT, 7 digits), NombreCarrera, CodTipoTitulo, TipoTitulo,\n"
        "                 FechaFinalizacion, FechaExpedicion (AAAAMMDD), PaisExpedicion (ISO 3166 alpha-2),\n"
        "                 NumTitulo}}"
    ),
    response_root="ListaTitulos",
    request_fields=_ro({}),
    repeated=frozenset({"DatosTitulacion"}),
    example=_ro({
        "Retorno": _RETORNO_OK,
        "ListaTitulos": {"DatosTitulacion": [
            {
                "DatosCentro": {"Universidad": "Universitat de Barcelona", "Centro": "Facultat de Dret"},
                "DatosTitulo": {
                    "CodTitulacion": "2500213",
                    "NombreCarrera": "Graduat o Graduada en Dret per la Universitat de Barcelona",
                    "CodTipoTitulo": "G",
                    "TipoTitulo": "Grado",
                    "FechaFinalizacion": "20190628",
                    "FechaExpedicion": "20191015",
                    "PaisExpedicion": "ES",
                    "NumTitulo": "2019/081234",
                },
            },
        ]},
    }),
)

PADRO = Product(
    key="padro",
    codigo_producto="PADRO",
    codigo_certificado="RESIDENT",
    nif_emisor="Q0801175A",
    nombre_emisor="Consorci Administració Oberta de Catalunya (padró municipal)",
    title="Volant d'empadronament i convivència",
    description=(
        "Municipal register (padró) certificate with household. Request DatosEspecificos (optional):\n"
        "  Consulta/CodigoMunicipio (INE, 5 digits: the subject must be registered there)\n"
        "Response DatosEspecificos:\n"
        "  Retorno/Estado/{CodigoEstado, LiteralError}\n"
        "  VolanteEmpadronamiento/{\n"
        "    DatosPersonales/{Nombre, Apellido1, Apellido2, FechaNacimiento (AAAAMMDD),\n"
        "                     TipoDocumentacion, Documentacion},\n"
        "    DireccionEmpadronamiento/{CodigoMunicipio (INE, 5 digits), NombreMunicipio, CodigoProvincia,\n"
        "                     NombreProvincia, TipoVia, NombreVia, Numero, Piso, Puerta, CodigoPostal},\n"
        "    FechaAltaPadron (AAAAMMDD),\n"
        "    Convivientes/Conviviente[]/{Nombre, Apellido1, Apellido2, FechaNacimiento}\n"
        "        (every person registered at the address, the subject included)}"
    ),
    response_root="VolanteEmpadronamiento",
    request_fields=_ro({"Consulta.CodigoMunicipio": "INE code of the municipality to query (5 digits)"}),
    repeated=frozenset({"Conviviente"}),
    example=_ro({
        "Retorno": _RETORNO_OK,
        "VolanteEmpadronamiento": {
            "DatosPersonales": {
                "Nombre": "Montserrat", "Apellido1": "Puig", "Apellido2": "Ferrer",
                "FechaNacimiento": "19800412", "TipoDocumentacion": "NIF", "Documentacion": "12345678Z",
            },
            "DireccionEmpadronamiento": {
                "CodigoMunicipio": "08019", "NombreMunicipio": "Barcelona",
                "CodigoProvincia": "08", "NombreProvincia": "Barcelona",
                "TipoVia": "Carrer", "NombreVia": "de Mallorca", "Numero": "120",
                "Piso": "3", "Puerta": "2", "CodigoPostal": "08036",
            },
            "FechaAltaPadron": "20100301",
            "Convivientes": {"Conviviente": [
                {"Nombre": "Montserrat", "Apellido1": "Puig", "Apellido2": "Ferrer", "FechaNacimiento": "19800412"},
                {"Nombre": "Jordi", "Apellido1": "Vila", "Apellido2": "Soler", "FechaNacimiento": "19780920"},
            ]},
        },
    }),
)

WORKING_LIFE = Product(
    key="working_life",
    codigo_producto="TGSS_Vida_Laboral",
    codigo_certificado="VIDA_LABORAL",
    nif_emisor="Q2827003A",
    nombre_emisor="Tesorería General de la Seguridad Social",
    title="Informe de vida laboral (últimos 12 meses)",
    description=(
        "Working life over the last 12 months. Response DatosEspecificos:\n"
        "  Retorno/Estado/{CodigoEstado, LiteralError}\n"
        "  VidaLaboral/{\n"
        "    Periodo/{FechaDesde, FechaHasta} (AAAAMMDD),\n"
        "    Totales/{DiasTrabajados, NumeroEmpresas},\n"
        "    situacions/situacio[]/{NombreEmpresa, Regimen, FechaAlta, FechaBaja (empty while active),\n"
        "                            Dias (days inside the period)}\n"
        "    (situacions is absent when no situation overlaps the period)}"
    ),
    response_root="VidaLaboral",
    request_fields=_ro({}),
    repeated=frozenset({"situacio"}),
    example=_ro({
        "Retorno": _RETORNO_OK,
        "VidaLaboral": {
            "Periodo": {"FechaDesde": "20250316", "FechaHasta": "20260315"},
            "Totales": {"DiasTrabajados": "300", "NumeroEmpresas": "2"},
            "situacions": {"situacio": [
                {"NombreEmpresa": "Serveis Tècnics del Vallès SL", "Regimen": "General",
                 "FechaAlta": "20230110", "FechaBaja": "20250630", "Dias": "107"},
                {"NombreEmpresa": "Ajuntament de Sabadell", "Regimen": "General",
                 "FechaAlta": "20250901", "FechaBaja": "", "Dias": "193"},
            ]},
        },
    }),
)

#: All products, keyed by ``CodigoCertificado`` (the modality: unique per product here).
PRODUCTS: MappingProxyType[str, Product] = _ro({p.codigo_certificado: p for p in (TAX, DEGREES, PADRO, WORKING_LIFE)})


def get_product(code: str) -> Product | None:
    """Find a product by ``CodigoCertificado``, ``CodigoProducto`` or short key (``tax``, ``padro``...)."""
    if code in PRODUCTS:
        return PRODUCTS[code]
    for product in PRODUCTS.values():
        if code in (product.codigo_producto, product.key):
            return product
    return None
