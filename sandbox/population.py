"""Deterministic synthetic citizens and their registry records — a development stand-in.

:func:`generate_population` builds, from a seed, the people that the simulated Via Oberta
(:mod:`sandbox.viaoberta_service`) and the VÀLid-compatible identity provider share: identifiers
(NIF or NIE with correct check letters), Catalan and Spanish names, birth dates from 1940 to 2007,
and what each registry holds about them — university degrees, a padró registration in a real
Catalan municipality (real INE codes) shared by households, an AEAT tax-compliance status and a
working life. Nothing here describes a real person; every value is generated.

Fixed demo citizens
-------------------
The first five citizens are the same for every seed and size, so tests and demos can name them:

=========  ==============================  ==========================================================
id         name                            what the registries say
=========  ==============================  ==========================================================
12345678Z  Montserrat Puig Ferrer          everything: two degrees, padró in Barcelona (household with
                                           23456789D), tax POSITIVO, working life
23456789D  Jordi Vila Soler                tax NEGATIVO (TipoNegativo ``01``, two Incumplimientos);
                                           one degree, padró, working life
34567890V  Núria Casas Roca                no degree; padró in Girona, tax POSITIVO, working life
45678901G  Pere Serra Mas                  data in all four registries, but every product answers
                                           asynchronously ("pending"): see :attr:`Citizen.pending`
Y1234567X  Fatima Benali                   NIE; not found in any registry (no records at all)
=========  ==============================  ==========================================================
"""

from __future__ import annotations

import functools
import random
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import NamedTuple

from viaoberta.products import DEGREES, INCUMPLIMIENTOS, PADRO, TAX, WORKING_LIFE

_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_NIE_PREFIX = {"X": "0", "Y": "1", "Z": "2"}


def nif_letter(number: int) -> str:
    """The check letter of a DNI/NIF number (also of a NIE once its prefix is replaced by a digit)."""
    return _NIF_LETTERS[number % 23]


def is_valid_nif_or_nie(value: str) -> bool:
    """True when ``value`` is a NIF (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter) with the right letter."""
    if not isinstance(value, str) or len(value) != 9:
        return False
    body, letter = value[:8], value[8]
    if body[0] in _NIE_PREFIX:
        body = _NIE_PREFIX[body[0]] + body[1:]
    if not body.isascii() or not body.isdigit():
        return False
    return nif_letter(int(body)) == letter


# ---------------------------------------------------------------------------------------------
# Record types


@dataclass(frozen=True)
class Degree:
    """One official university degree, as the ministry's registry (``TITOLS_UNIVERSITARIS``) holds it."""

    university: str
    centre: str
    code: str                  # RUCT-like code, 7 digits
    title: str                 # NombreCarrera
    type_code: str             # CodTipoTitulo: G (Grado), M (Máster), L (Licenciado)
    type_name: str             # TipoTitulo
    completion_date: date
    issue_date: date
    country: str               # PaisExpedicion, ISO 3166 alpha-2
    number: str                # NumTitulo


@dataclass(frozen=True)
class PadroRecord:
    """A padró registration. ``household`` lists every registered person at the address, self included."""

    municipality_code: str     # INE, 5 digits
    municipality_name: str
    province_code: str
    province_name: str
    street_type: str
    street_name: str
    number: str
    floor: str
    door: str
    postal_code: str
    registered_since: date
    household: tuple[str, ...]


@dataclass(frozen=True)
class TaxRecord:
    """AEAT tax-compliance status (``ECOT103``): ``POSITIVO`` or ``NEGATIVO`` with its cause."""

    status: str                          # "POSITIVO" | "NEGATIVO"
    tipo_negativo: str | None            # a key of viaoberta.products.TIPOS_NEGATIVO when NEGATIVO
    incumplimientos: tuple[str, ...]     # keys of viaoberta.products.INCUMPLIMIENTOS
    reference: str                       # ReferenciaAEAT


@dataclass(frozen=True)
class WorkSituation:
    """One period of affiliation to the Social Security with one employer."""

    employer: str
    regime: str
    start: date
    end: date | None                     # None while still active


@dataclass(frozen=True)
class WorkingLifeRecord:
    """A person's affiliation history; :meth:`last_12_months` is what ``VIDA_LABORAL`` reports."""

    situations: tuple[WorkSituation, ...]

    def last_12_months(self, today: date) -> tuple[date, date, list[tuple[WorkSituation, int]]]:
        """The period ``(from, to)`` ending ``today`` and each overlapping situation with its days in it."""
        start = today - timedelta(days=364)
        overlapping: list[tuple[WorkSituation, int]] = []
        for situation in self.situations:
            lo = max(start, situation.start)
            hi = min(today, situation.end or today)
            if hi >= lo:
                overlapping.append((situation, (hi - lo).days + 1))
        return start, today, overlapping


@dataclass(frozen=True)
class Citizen:
    """A synthetic person and what each registry holds about them (``None``/empty: nothing)."""

    identifier: str
    identifier_type: str                 # "NIF" | "NIE"
    name: str
    surname1: str
    surname2: str | None
    birth_date: date
    email: str
    degrees: tuple[Degree, ...] = ()
    padro: PadroRecord | None = None
    tax: TaxRecord | None = None
    working_life: WorkingLifeRecord | None = None
    #: ``CodigoCertificado`` values that the simulated Via Oberta answers asynchronously (``0002``).
    pending: tuple[str, ...] = field(default=())

    @property
    def surnames(self) -> str:
        return f"{self.surname1} {self.surname2}" if self.surname2 else self.surname1

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.surnames}"

    @property
    def products(self) -> tuple[str, ...]:
        """``CodigoCertificado`` of every product whose registry holds data for this citizen."""
        out: list[str] = []
        if self.tax is not None:
            out.append(TAX.codigo_certificado)
        if self.degrees:
            out.append(DEGREES.codigo_certificado)
        if self.padro is not None:
            out.append(PADRO.codigo_certificado)
        if self.working_life is not None:
            out.append(WORKING_LIFE.codigo_certificado)
        return tuple(out)


@dataclass
class Population:
    """The synthetic citizens, in a stable order (the fixed demo citizens first), with lookup by identifier."""

    citizens: list[Citizen]
    _index: dict[str, Citizen] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {c.identifier: c for c in self.citizens}

    def get(self, identifier: str) -> Citizen | None:
        """The citizen with this NIF/NIE (case-insensitive), or ``None``."""
        if not isinstance(identifier, str):
            return None
        return self._index.get(identifier.strip().upper())

    def household(self, citizen: Citizen) -> list[Citizen]:
        """Everyone registered at the citizen's padró address, the citizen included."""
        if citizen.padro is None:
            return []
        return [c for c in (self.get(i) for i in citizen.padro.household) if c is not None]

    def __len__(self) -> int:
        return len(self.citizens)


# ---------------------------------------------------------------------------------------------
# Source tables. Municipality codes are the real INE codes (province + municipality, 5 digits).

_PROVINCES = {"08": "Barcelona", "17": "Girona", "25": "Lleida", "43": "Tarragona"}

#: (INE code, name, first postal code) of real Catalan municipalities.
MUNICIPALITIES: tuple[tuple[str, str, str], ...] = (
    ("08019", "Barcelona", "08001"),
    ("08101", "L'Hospitalet de Llobregat", "08901"),
    ("08015", "Badalona", "08911"),
    ("08279", "Terrassa", "08221"),
    ("08187", "Sabadell", "08201"),
    ("08121", "Mataró", "08301"),
    ("08245", "Santa Coloma de Gramenet", "08921"),
    ("08073", "Cornellà de Llobregat", "08940"),
    ("08205", "Sant Cugat del Vallès", "08172"),
    ("08113", "Manresa", "08240"),
    ("08184", "Rubí", "08191"),
    ("08307", "Vilanova i la Geltrú", "08800"),
    ("08301", "Viladecans", "08840"),
    ("08056", "Castelldefels", "08860"),
    ("08096", "Granollers", "08400"),
    ("08298", "Vic", "08500"),
    ("08102", "Igualada", "08700"),
    ("08169", "El Prat de Llobregat", "08820"),
    ("17079", "Girona", "17001"),
    ("17066", "Figueres", "17600"),
    ("17023", "Blanes", "17300"),
    ("17095", "Lloret de Mar", "17310"),
    ("17114", "Olot", "17800"),
    ("25120", "Lleida", "25001"),
    ("25040", "Balaguer", "25600"),
    ("25217", "Tàrrega", "25300"),
    ("43148", "Tarragona", "43001"),
    ("43123", "Reus", "43201"),
    ("43155", "Tortosa", "43500"),
    ("43038", "Cambrils", "43850"),
    ("43905", "Salou", "43840"),
    ("43161", "Valls", "43800"),
)

_STREETS = (
    ("Carrer", "Major"), ("Carrer", "de la Font"), ("Carrer", "de Sant Pere"), ("Carrer", "Nou"),
    ("Carrer", "de l'Església"), ("Carrer", "de Mallorca"), ("Carrer", "del Mar"), ("Carrer", "de la Pau"),
    ("Avinguda", "de Catalunya"), ("Avinguda", "Diagonal"), ("Avinguda", "de Pau Casals"),
    ("Passeig", "de Gràcia"), ("Passeig", "de la Rambla"), ("Rambla", "de Catalunya"),
    ("Plaça", "de la Vila"), ("Plaça", "Major"), ("Carrer", "de Jacint Verdaguer"),
    ("Carrer", "de Prat de la Riba"), ("Carrer", "de Francesc Macià"), ("Ronda", "de Sant Antoni"),
)

_GIVEN_CA = ("Jordi", "Montserrat", "Núria", "Pere", "Marc", "Laia", "Oriol", "Mireia", "Arnau", "Mercè",
             "Josep", "Anna", "Joan", "Marta", "Pau", "Carme", "Xavier", "Roser", "Albert", "Gemma",
             "Ferran", "Meritxell", "Jaume", "Laura", "Enric", "Neus", "Sergi", "Aina", "Gerard", "Rosa",
             "Quim", "Berta", "Martí", "Júlia", "Pol", "Clara")
_GIVEN_ES = ("José", "María", "Antonio", "Carmen", "Manuel", "Lucía", "Francisco", "Isabel", "David",
             "Pilar", "Javier", "Elena", "Alejandro", "Cristina", "Miguel", "Dolores", "Carlos", "Raquel",
             "Rafael", "Sonia", "Juan", "Ana", "Pablo", "Teresa")
_GIVEN_OTHER = ("Ahmed", "Fatima", "Ion", "Andreea", "Wei", "Li", "Mohamed", "Samira", "Lucas",
                "Sofia", "Oleksandr", "Ana Paula", "Giulia", "Youssef")
_SURNAMES_CA = ("Puig", "Vila", "Ferrer", "Soler", "Serra", "Font", "Pujol", "Roca", "Vidal", "Casas",
                "Bosch", "Mas", "Coll", "Riera", "Pons", "Sala", "Camps", "Prat", "Torras", "Batlle",
                "Esteve", "Vilaró", "Figueras", "Costa", "Farré", "Closa", "Sunyer", "Bertran")
_SURNAMES_ES = ("García", "Martínez", "López", "Sánchez", "González", "Rodríguez", "Fernández", "Pérez",
                "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno", "Muñoz", "Romero",
                "Navarro", "Ortega", "Delgado")
_SURNAMES_OTHER = ("El Amrani", "Popescu", "Wang", "Rossi", "Silva", "Benali", "Ivanova", "Chen",
                   "Kovalenko", "Diallo", "Oliveira", "Haddad")

#: (university, centre, field in Catalan). Real Catalan universities and faculties.
_PROGRAMMES = (
    ("Universitat de Barcelona", "Facultat de Dret", "Dret"),
    ("Universitat de Barcelona", "Facultat de Medicina i Ciències de la Salut", "Medicina"),
    ("Universitat de Barcelona", "Facultat de Psicologia", "Psicologia"),
    ("Universitat de Barcelona", "Facultat de Biologia", "Biologia"),
    ("Universitat Autònoma de Barcelona", "Facultat de Ciències de la Comunicació", "Periodisme"),
    ("Universitat Autònoma de Barcelona", "Facultat d'Economia i Empresa", "Economia"),
    ("Universitat Autònoma de Barcelona", "Escola d'Enginyeria", "Enginyeria Informàtica"),
    ("Universitat Politècnica de Catalunya", "Facultat d'Informàtica de Barcelona", "Enginyeria Informàtica"),
    ("Universitat Politècnica de Catalunya",
     "Escola Tècnica Superior d'Enginyeria Industrial de Barcelona", "Enginyeria en Tecnologies Industrials"),
    ("Universitat Politècnica de Catalunya", "Escola Tècnica Superior d'Arquitectura de Barcelona",
     "Estudis d'Arquitectura"),
    ("Universitat Pompeu Fabra", "Facultat de Ciències Polítiques i Socials",
     "Ciències Polítiques i de l'Administració"),
    ("Universitat Pompeu Fabra", "Facultat de Ciències Econòmiques i Empresarials",
     "Administració i Direcció d'Empreses"),
    ("Universitat de Girona", "Facultat d'Infermeria", "Infermeria"),
    ("Universitat de Girona", "Facultat d'Educació i Psicologia", "Mestre d'Educació Primària"),
    ("Universitat de Lleida", "Escola Tècnica Superior d'Enginyeria Agroalimentària i Forestal",
     "Enginyeria Agrària i Alimentària"),
    ("Universitat de Lleida", "Facultat de Dret, Economia i Turisme", "Turisme"),
    ("Universitat Rovira i Virgili", "Facultat de Química", "Química"),
    ("Universitat Rovira i Virgili", "Facultat d'Enfermeria", "Infermeria"),
    ("Universitat Oberta de Catalunya", "Estudis d'Economia i Empresa", "Administració i Direcció d'Empreses"),
)
_MASTERS = (
    ("Universitat Pompeu Fabra", "Facultat de Dret", "Advocacia"),
    ("Universitat Politècnica de Catalunya", "Facultat d'Informàtica de Barcelona", "Enginyeria Informàtica"),
    ("Universitat de Barcelona", "Facultat d'Educació",
     "Formació del Professorat d'Educació Secundària Obligatòria i Batxillerat"),
    ("Universitat Autònoma de Barcelona", "Facultat de Medicina", "Investigació Biomèdica Translacional"),
)

_EMPLOYERS = ("Serveis Tècnics del Vallès SL", "Construccions Riera SA", "Transports Mediterrani SL",
              "Hospital Universitari de Bellvitge", "Institut Català de la Salut", "Mercat Central Distribució SA",
              "Fundació Pere Tarrés", "Cooperativa Agrària del Segrià", "Hotels Costa Daurada SL",
              "Consultoria Digital Barcelona SL", "Logística Port de Tarragona SA", "Farmàcia Sala CB",
              "Escola Pia de Catalunya", "Indústries Gràfiques Montseny SL", "Restaurants del Port SL")
_REGIMES = ("General", "General", "General", "Especial de Trabajadores Autónomos",
            "Especial de Empleados de Hogar", "Especial Agrario")


def _ruct(programme: tuple[str, str, str], master: bool) -> str:
    # A stable RUCT-like 7-digit code per programme (2500xxx for degrees, 431xxxx for masters, as
    # RUCT numbers them), derived from the catalogue position: plausible, not the real code.
    table = _MASTERS if master else _PROGRAMMES
    base = 4310000 if master else 2500000
    return f"{base + 37 * (table.index(programme) + 1) + (11 if master else 0):07d}"


def _slug(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return "".join(ch for ch in plain if ch.isalnum())


def _random_date(rng: random.Random, lo: date, hi: date) -> date:
    return lo + timedelta(days=rng.randint(0, (hi - lo).days))


def _make_degree(rng: random.Random, birth: date, master: bool, after: date | None = None) -> Degree | None:
    table = _MASTERS if master else _PROGRAMMES
    programme = rng.choice(table)
    university, centre, field_name = programme
    years = rng.randint(23, 27) if master else rng.randint(21, 26)
    completion = date(birth.year + years, rng.choice((6, 7, 9)), rng.randint(1, 28))
    if after is not None and completion <= after:
        completion = date(after.year + 1, completion.month, completion.day)
    if completion > date(2025, 12, 31):
        return None
    issue = completion + timedelta(days=rng.randint(60, 200))
    if master:
        title, type_code, type_name = f"Màster Universitari en {field_name} per la {university}", "M", "Máster Universitario"
    elif completion.year < 2012:
        title, type_code, type_name = f"Llicenciat o Llicenciada en {field_name} per la {university}", "L", "Licenciado"
    else:
        title, type_code, type_name = f"Graduat o Graduada en {field_name} per la {university}", "G", "Grado"
    return Degree(
        university=university, centre=centre, code=_ruct(programme, master), title=title,
        type_code=type_code, type_name=type_name, completion_date=completion, issue_date=issue,
        country="ES", number=f"{issue.year}/{rng.randint(0, 999999):06d}",
    )


def _make_working_life(rng: random.Random, birth: date) -> WorkingLifeRecord | None:
    start_of_work = date(birth.year + rng.randint(18, 26), rng.randint(1, 12), 1)
    if start_of_work > date(2025, 6, 1) or birth.year < 1958:
        return None
    situations: list[WorkSituation] = []
    cursor = max(start_of_work, date(2012, 1, 1))
    for _ in range(rng.randint(1, 3)):
        start = cursor + timedelta(days=rng.randint(0, 400))
        if start > date(2026, 1, 31):
            break
        end: date | None = start + timedelta(days=rng.randint(90, 3000))
        if end is not None and end > date(2026, 2, 28):
            end = None
        situations.append(WorkSituation(rng.choice(_EMPLOYERS), rng.choice(_REGIMES), start, end))
        if end is None:
            break
        cursor = end + timedelta(days=rng.randint(1, 120))
    return WorkingLifeRecord(tuple(situations)) if situations else None


def _tax_reference(rng: random.Random) -> str:
    return "ECOT103" + "".join(rng.choice("0123456789ABCDEF") for _ in range(12))


def _make_tax(rng: random.Random, birth: date) -> TaxRecord | None:
    if birth > date(2007, 12, 31) - timedelta(days=365 * 2):
        return None  # minors are outside the AEAT census in this simulation
    roll = rng.random()
    if roll < 0.86:
        return TaxRecord("POSITIVO", None, (), _tax_reference(rng))
    tipo = rng.choice(("01", "01", "02"))
    causes = rng.sample([c for c in INCUMPLIMIENTOS if c.startswith("D" if tipo == "01" else "P")], k=rng.randint(1, 2))
    return TaxRecord("NEGATIVO", tipo, tuple(sorted(causes)), _tax_reference(rng))


def _address(rng: random.Random, household: tuple[str, ...], since: date) -> PadroRecord:
    code, name, postal = rng.choice(MUNICIPALITIES)
    street_type, street_name = rng.choice(_STREETS)
    postal_code = f"{int(postal) + rng.randint(0, 9 if code in ('08019',) else 3):05d}"
    return PadroRecord(
        municipality_code=code, municipality_name=name, province_code=code[:2],
        province_name=_PROVINCES[code[:2]], street_type=street_type, street_name=street_name,
        number=str(rng.randint(1, 250)), floor=rng.choice(("", "baixos", "1", "2", "3", "4", "5", "6")),
        door=rng.choice(("", "1", "2", "3", "A", "B")), postal_code=postal_code,
        registered_since=since, household=household,
    )


def _fixed_citizens() -> list[Citizen]:
    # Hand-written records that tests and demos name explicitly; see the module docstring.
    barcelona = dict(municipality_code="08019", municipality_name="Barcelona", province_code="08",
                     province_name="Barcelona", street_type="Carrer", street_name="de Mallorca", number="120",
                     floor="3", door="2", postal_code="08036")
    household = ("12345678Z", "23456789D")
    ub_law = Degree("Universitat de Barcelona", "Facultat de Dret", _ruct(_PROGRAMMES[0], False),
                    "Graduat o Graduada en Dret per la Universitat de Barcelona", "G", "Grado",
                    date(2003, 6, 27), date(2003, 11, 14), "ES", "2003/081234")
    upf_master = Degree("Universitat Pompeu Fabra", "Facultat de Dret", _ruct(_MASTERS[0], True),
                        "Màster Universitari en Advocacia per la Universitat Pompeu Fabra", "M",
                        "Máster Universitario", date(2005, 7, 15), date(2005, 12, 2), "ES", "2005/004567")
    upc_it = Degree("Universitat Politècnica de Catalunya", "Facultat d'Informàtica de Barcelona",
                    _ruct(_PROGRAMMES[7], False),
                    "Graduat o Graduada en Enginyeria Informàtica per la Universitat Politècnica de Catalunya",
                    "G", "Grado", date(2001, 7, 10), date(2001, 12, 20), "ES", "2001/112233")
    urv_chem = Degree("Universitat Rovira i Virgili", "Facultat de Química", _ruct(_PROGRAMMES[16], False),
                      "Graduat o Graduada en Química per la Universitat Rovira i Virgili", "G", "Grado",
                      date(2014, 6, 30), date(2014, 10, 31), "ES", "2014/020202")
    return [
        Citizen(
            "12345678Z", "NIF", "Montserrat", "Puig", "Ferrer", date(1980, 4, 12), "montserrat.puig@example.org",
            degrees=(ub_law, upf_master),
            padro=PadroRecord(**barcelona, registered_since=date(2010, 3, 1), household=household),
            tax=TaxRecord("POSITIVO", None, (), "ECOT1030000000000A1"),
            working_life=WorkingLifeRecord((
                WorkSituation("Despatx Puig Advocats SLP", "General", date(2006, 1, 9), date(2019, 5, 31)),
                WorkSituation("Generalitat de Catalunya", "General", date(2019, 6, 3), None),
            )),
        ),
        Citizen(
            "23456789D", "NIF", "Jordi", "Vila", "Soler", date(1978, 9, 20), "jordi.vila@example.org",
            degrees=(upc_it,),
            padro=PadroRecord(**barcelona, registered_since=date(2012, 7, 16), household=household),
            tax=TaxRecord("NEGATIVO", "01", ("D01", "D02"), "ECOT1030000000000B2"),
            working_life=WorkingLifeRecord((
                WorkSituation("Jordi Vila Soler", "Especial de Trabajadores Autónomos", date(2015, 2, 1), None),
            )),
        ),
        Citizen(
            "34567890V", "NIF", "Núria", "Casas", "Roca", date(1995, 1, 30), "nuria.casas@example.org",
            padro=PadroRecord("17079", "Girona", "17", "Girona", "Carrer", "Nou", "8", "2", "1", "17001",
                              date(2018, 9, 3), ("34567890V",)),
            tax=TaxRecord("POSITIVO", None, (), "ECOT1030000000000C3"),
            working_life=WorkingLifeRecord((
                WorkSituation("Hotels Costa Daurada SL", "General", date(2017, 6, 1), date(2025, 4, 30)),
                WorkSituation("Institut Català de la Salut", "General", date(2025, 5, 5), None),
            )),
        ),
        Citizen(
            "45678901G", "NIF", "Pere", "Serra", "Mas", date(1988, 11, 5), "pere.serra@example.org",
            degrees=(urv_chem,),
            padro=PadroRecord("43148", "Tarragona", "43", "Tarragona", "Rambla", "Nova", "45", "4", "B", "43004",
                              date(2015, 1, 12), ("45678901G",)),
            tax=TaxRecord("POSITIVO", None, (), "ECOT1030000000000D4"),
            working_life=WorkingLifeRecord((
                WorkSituation("Logística Port de Tarragona SA", "General", date(2016, 3, 1), None),
            )),
            pending=(TAX.codigo_certificado, DEGREES.codigo_certificado, PADRO.codigo_certificado,
                     WORKING_LIFE.codigo_certificado),
        ),
        Citizen("Y1234567X", "NIE", "Fatima", "Benali", None, date(1992, 2, 29), "fatima.benali@example.org"),
    ]


#: Identifiers of the fixed demo citizens, by role.
DEMO_EVERYTHING = "12345678Z"
DEMO_TAX_NEGATIVE = "23456789D"
DEMO_NO_DEGREE = "34567890V"
DEMO_PENDING = "45678901G"
DEMO_NOT_FOUND = "Y1234567X"


def _identifier(rng: random.Random, taken: set[str], nie: bool) -> str:
    while True:
        if nie:
            prefix = rng.choice("XYZ")
            digits = rng.randint(0, 9_999_999)
            value = f"{prefix}{digits:07d}{nif_letter(int(_NIE_PREFIX[prefix] + f'{digits:07d}'))}"
        else:
            number = rng.randint(1_000_000, 99_999_999)
            value = f"{number:08d}{nif_letter(number)}"
        if value not in taken:
            taken.add(value)
            return value


@functools.lru_cache(maxsize=8)
def generate_population(seed: int = 2026, size: int = 1000) -> Population:
    """Generate ``size`` citizens (the five fixed demo citizens first) deterministically from ``seed``.

    The same ``(seed, size)`` always yields the same population, and results are cached, so
    calling it from several services in one process costs one generation.
    """
    rng = random.Random(seed)
    fixed = _fixed_citizens()
    taken = {c.identifier for c in fixed}
    people: list[_Person] = []
    for n in range(max(0, size - len(fixed))):
        nie = rng.random() < 0.1
        if nie:
            name, surname1, surname2 = rng.choice(_GIVEN_OTHER), rng.choice(_SURNAMES_OTHER), None
        else:
            pool = _GIVEN_CA if rng.random() < 0.6 else _GIVEN_ES
            name = rng.choice(pool)
            surname1 = rng.choice(_SURNAMES_CA if rng.random() < 0.55 else _SURNAMES_ES)
            surname2 = rng.choice(_SURNAMES_CA if rng.random() < 0.55 else _SURNAMES_ES)
        identifier = _identifier(rng, taken, nie)
        birth = _random_date(rng, date(1940, 1, 1), date(2007, 12, 31))
        people.append(_Person(identifier, "NIE" if nie else "NIF", name, surname1, surname2, birth,
                              f"{_slug(name)}.{_slug(surname1)}{n}@example.org"))

    # Households: consecutive people share an address; about 5% are registered nowhere.
    padro: dict[str, PadroRecord] = {}
    i = 0
    while i < len(people):
        household_size = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5))
        members = people[i:i + household_size]
        i += household_size
        if rng.random() < 0.05:
            continue
        since = _random_date(rng, date(1996, 5, 1), date(2025, 12, 31))
        template = _address(rng, tuple(m.identifier for m in members), since)
        for member in members:
            padro[member.identifier] = replace(template, registered_since=max(since, member.birth_date))

    citizens = list(fixed)
    for person in people:
        degrees: list[Degree] = []
        if rng.random() < 0.35:
            first = _make_degree(rng, person.birth_date, master=False)
            if first is not None:
                degrees.append(first)
                if rng.random() < 0.3:
                    master = _make_degree(rng, person.birth_date, master=True, after=first.completion_date)
                    if master is not None:
                        degrees.append(master)
        citizens.append(Citizen(
            *person,
            degrees=tuple(degrees),
            padro=padro.get(person.identifier),
            tax=_make_tax(rng, person.birth_date),
            working_life=_make_working_life(rng, person.birth_date) if rng.random() < 0.8 else None,
        ))
    return Population(citizens[:size])


class _Person(NamedTuple):
    identifier: str
    identifier_type: str
    name: str
    surname1: str
    surname2: str | None
    birth_date: date
    email: str
