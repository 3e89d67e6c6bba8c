"""The SQL adapter against a real SQLite file."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from credential_schemas import load_builtin_types
from issuer.sources import BadSourceAnswer, Claims, SourceConfigError, Subject, SubjectNotFound, build_source
from tests.sources.helpers import SUBJECT, context

pytestmark = pytest.mark.anyio
NOW = dt.datetime(2026, 3, 20, tzinfo=dt.UTC)

PADRO_FIELDS = {
    "VolanteEmpadronamiento.DatosPersonales.Nombre": "nombre",
    "VolanteEmpadronamiento.DatosPersonales.Apellido1": "apellido1",
    "VolanteEmpadronamiento.DatosPersonales.Apellido2": "apellido2",
    "VolanteEmpadronamiento.DatosPersonales.Documentacion": "nif",
    "VolanteEmpadronamiento.DatosPersonales.FechaNacimiento": "nacimiento",
    "VolanteEmpadronamiento.DireccionEmpadronamiento.CodigoMunicipio": "ine",
    "VolanteEmpadronamiento.DireccionEmpadronamiento.NombreMunicipio": "municipio",
    "VolanteEmpadronamiento.DireccionEmpadronamiento.NombreVia": "via",
    "VolanteEmpadronamiento.DireccionEmpadronamiento.CodigoPostal": "cp",
    "VolanteEmpadronamiento.FechaAltaPadron": "alta",
    "VolanteEmpadronamiento.Convivientes.Conviviente": "household[]",
}


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "padro.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE residents (nif TEXT, nombre TEXT, apellido1 TEXT, apellido2 TEXT, nacimiento TEXT,
                                ine TEXT, municipio TEXT, via TEXT, cp TEXT, alta TEXT, household TEXT);
        CREATE TABLE degrees (nif TEXT, num TEXT, title TEXT, credits NUMERIC, blob BLOB);
    """)
    con.execute("INSERT INTO residents VALUES ('12345678Z','Montserrat','Puig','Ferrer','1980-04-12','17079',"
                "'Girona','Carrer Nou 3','17001','2010-03-01','h1')")
    con.executemany("INSERT INTO degrees VALUES (?,?,?,?,?)", [
        ("12345678Z", "2019/1", "Grau en Dret", 240, None),
        ("12345678Z", "2021/7", "Màster en Advocacia", 90.5, None),
        ("23456789D", "2018/2", "Grau en Química", 240, b"\x00\x01"),
    ])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


async def test_sql_round_trip_maps_to_a_valid_padro(db: str) -> None:
    src = build_source({"kind": "sql", "url": db, "product": "padro-db",
                        "query": "SELECT *, nombre AS Nombre, apellido1 AS Apellido1, apellido2 AS Apellido2, "
                                 "nacimiento AS FechaNacimiento FROM residents WHERE nif = :identifier",
                        "list_field": "household", "fields": PADRO_FIELDS})
    padro = load_builtin_types()["padro"]
    outcome = await src.fetch(padro, SUBJECT, context())
    assert isinstance(outcome, Claims) and outcome.evidence.product == "padro-db"
    claims = padro.map_claims(outcome.record, now=NOW)
    assert claims["municipality"] == {"code": "17079", "name": "Girona"}
    assert claims["householdSize"] == 1 and claims["age_equal_or_over"] == {"18": True, "65": False}
    assert claims["householdMembers"][0]["familyName"] == "Puig Ferrer"
    assert padro.validate_claims(claims) == []


async def test_no_row_is_not_found(db: str) -> None:
    src = build_source({"kind": "sql", "url": db, "query": "SELECT * FROM residents WHERE nif = :identifier"})
    with pytest.raises(SubjectNotFound):
        await src.fetch(None, Subject("99999999R"), context())


async def test_injection_attempt_is_just_a_value(db: str) -> None:
    src = build_source({"kind": "sql", "url": db, "query": "SELECT * FROM residents WHERE nif = :identifier"})
    with pytest.raises(SubjectNotFound):
        await src.fetch(None, Subject("x' OR '1'='1"), context())


async def test_several_rows_are_ambiguous_unless_selected_or_listed(db: str) -> None:
    query = "SELECT num, title, credits FROM degrees WHERE nif = :identifier"
    with pytest.raises(BadSourceAnswer):
        await build_source({"kind": "sql", "url": db, "query": query}).fetch(None, SUBJECT, context())
    chosen = build_source({"kind": "sql", "url": db,
                           "query": query + " AND (:selector IS NULL OR num = :selector) ORDER BY num DESC LIMIT 1"})
    outcome = await chosen.fetch(None, SUBJECT, context(selector="2019/1"))
    assert outcome.record["title"] == "Grau en Dret" and outcome.record["credits"] == 240
    latest = await chosen.fetch(None, SUBJECT, context())
    assert latest.record["num"] == "2021/7" and latest.record["credits"] == 90.5
    listed = await build_source({"kind": "sql", "url": db, "query": query, "list_field": "degrees"}).fetch(
        None, SUBJECT, context())
    assert [d["num"] for d in listed.record["degrees"]] == ["2019/1", "2021/7"]


async def test_binary_columns_and_broken_queries_are_bad_answers(db: str) -> None:
    src = build_source({"kind": "sql", "url": db, "query": "SELECT blob FROM degrees WHERE nif = :identifier"})
    with pytest.raises(BadSourceAnswer):
        await src.fetch(None, Subject("23456789D"), context())
    missing = build_source({"kind": "sql", "url": db, "query": "SELECT * FROM nowhere WHERE nif = :identifier"})
    with pytest.raises(BadSourceAnswer):
        await missing.fetch(None, SUBJECT, context())


@pytest.mark.parametrize("settings", [
    {"query": "DELETE FROM residents WHERE nif = :identifier"},
    {"query": "SELECT * FROM residents"},
    {"query": "SELECT * FROM residents WHERE nif = :identifier; DROP TABLE residents"},
    {"query": "SELECT * FROM residents WHERE nif = :identifier AND x = :other"},
    {"query": "SELECT * FROM residents WHERE nif = :identifier", "list_field": "a b"},
    {"query": "SELECT * FROM residents WHERE nif = :identifier", "url": "nodb://x"},
])
def test_bad_sql_configuration_is_refused(db: str, settings: dict) -> None:
    with pytest.raises(SourceConfigError):
        build_source({"kind": "sql", "url": db, **settings})


@pytest.mark.parametrize("timeout", [0, -5, 121, float("nan"), float("inf"), True, "10", None])
def test_a_timeout_every_query_would_outlast_is_refused_when_configured(db: str, timeout: object) -> None:
    """As for the REST and Via Oberta sources: before, 0 and -5 were accepted, and every query then timed
    out at once (a 503 for ever); a string or None failed in float()."""
    with pytest.raises(SourceConfigError) as info:
        build_source({"kind": "sql", "url": db, "query": "SELECT * FROM residents WHERE nif = :identifier",
                      "timeout": timeout})
    assert "timeout" in info.value.detail
    for accepted in (0.5, 120, 7):
        assert build_source({"kind": "sql", "url": db, "query": "SELECT * FROM residents WHERE nif = :identifier",
                             "timeout": accepted}).timeout == accepted


async def test_unreachable_database_is_unavailable(tmp_path: Path) -> None:
    from issuer.sources import SourceUnavailable

    src = build_source({"kind": "sql", "url": f"sqlite:///{tmp_path}/missing-dir/x.sqlite",
                        "query": "SELECT 1 AS one WHERE :identifier IS NOT NULL"})
    with pytest.raises(SourceUnavailable):
        await src.fetch(None, SUBJECT, context())


async def test_a_query_that_outlasts_the_timeout_is_unavailable_and_the_loop_keeps_running(db: str) -> None:
    import asyncio
    import time

    from issuer.sources import SourceUnavailable

    # Another writer holds the database: the driver waits for its lock (up to 5 s) in the worker thread.
    holder = sqlite3.connect(db.removeprefix("sqlite:///"), check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    src = build_source({"kind": "sql", "url": db, "timeout": 0.3,
                        "query": "SELECT nif FROM residents WHERE nif = :identifier"})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(SourceUnavailable, match="did not answer in time"):
            await src.fetch(None, SUBJECT, context())
        assert time.monotonic() - started < 3
        assert ticks >= 10  # the event loop was never blocked by the driver
    finally:
        beat.cancel()
        holder.rollback()
        holder.close()
    # The abandoned call ends once the lock is released; the source still answers afterwards.
    assert isinstance(await src.fetch(None, SUBJECT, context()), Claims)
