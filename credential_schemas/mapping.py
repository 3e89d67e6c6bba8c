"""The declarative source mapping: from a source record (nested dicts/lists) to claim values.

A mapping is either a string (a field path) or an object:

``field``      dotted path over the record; ``name[]`` takes every element of a list (a single
               object counts as a one-element list, since XML-derived records cannot tell), ``name[0]``
               one element.
``fields`` + ``join``   several paths joined by a separator (missing parts skipped).
``const``      a constant value.
``now``        ``date``, ``datetime`` or ``epoch``: the issuance time.
``offset``     an ISO 8601 duration (``P6M``) added to ``now`` or to the (date) value of ``field``.
``transform``  one name or a list, applied in order: ``date_yyyymmdd`` (``AAAAMMDD`` or ISO → ISO date),
               ``upper``, ``lower``, ``strip``, ``int``, ``map`` (with ``map: {code: value}`` and optional
               ``map_default``), ``count`` (length of a list), ``age_equal_or_over`` (from a birth date,
               with ``thresholds: [18, 65]`` → ``{"18": true, "65": false}``).
``each``       for a list: ``{claim: mapping}`` built per element, mappings relative to the element.
``default``    value used when the field is missing.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

from .errors import MappingError, Problem

MISSING: Any = object()

_SEGMENT = re.compile(r"^([^.\[\]]+)(\[(\d*)\])?$")
_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
)

TRANSFORMS = frozenset({"date_yyyymmdd", "upper", "lower", "strip", "int", "map", "count", "age_equal_or_over"})
_SPEC_KEYS = frozenset({"field", "fields", "join", "const", "now", "offset", "transform", "map", "map_default",
                        "thresholds", "each", "default"})


#: Longest duration (validity, offset) accepted, in days: 100 years.
MAX_DURATION_DAYS = 36525


class Duration:
    """An ISO 8601 duration (``P5Y``, ``P3M``, ``P1Y6M``, ``P30D``, ``PT12H``) added in calendar terms."""

    def __init__(self, text: str) -> None:
        match = _DURATION.match(text) if isinstance(text, str) else None
        if not match:
            raise MappingError("bad_duration", "not an ISO 8601 duration such as P5Y or P3M")
        years, months, weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        # Bounded before any timedelta or date arithmetic: P99999999999Y would overflow at issuance.
        if (years * 12 + months) * 30.4375 + weeks * 7 + days + (hours * 3600 + minutes * 60 + seconds) / 86400 \
                > MAX_DURATION_DAYS:
            raise MappingError("bad_duration", "a duration may be at most 100 years")
        self.text = text
        self.months = years * 12 + months
        self.rest = dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        if self.months == 0 and not self.rest:
            raise MappingError("bad_duration", "the duration is zero")

    def add_to(self, moment: dt.datetime | dt.date) -> Any:
        """``moment`` plus this duration; month arithmetic clamps to the month's last day (31 Jan + P1M = 28/29 Feb)."""
        if self.months:
            total = moment.month - 1 + self.months
            year, month = moment.year + total // 12, total % 12 + 1
            day = min(moment.day, _days_in_month(year, month))
            moment = moment.replace(year=year, month=month, day=day)
        return moment + self.rest

    def approximate(self) -> dt.timedelta:
        """A fixed-length approximation (a year is 365 days, a month 30) for quick comparisons."""
        return dt.timedelta(days=365 * (self.months // 12) + 30 * (self.months % 12)) + self.rest


def _days_in_month(year: int, month: int) -> int:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return (nxt - dt.timedelta(days=1)).day


def normalize(spec: Any) -> dict[str, Any]:
    """A mapping in its object form (a bare string is a field path)."""
    if isinstance(spec, str):
        return {"field": spec}
    if isinstance(spec, dict):
        return spec
    raise MappingError("bad_mapping", "a source mapping is a field path or an object")


def _parse_path(path: str) -> tuple[tuple[str, str | None], ...]:
    """``a.b[].c[0]`` → ``(("a", None), ("b", ""), ("c", "0"))``; raises for a malformed path."""
    if not isinstance(path, str) or not path:
        raise MappingError("bad_mapping", "a field path must be a non-empty string")
    return _parsed_path(path)


@functools.lru_cache(maxsize=1024)
def _parsed_path(path: str) -> tuple[tuple[str, str | None], ...]:
    # Every issuance resolves the same few paths of its type's mapping: parse each once.
    out: list[tuple[str, str | None]] = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise MappingError("bad_mapping", f"malformed field path segment '{part}'")
        out.append((match.group(1), match.group(3) if match.group(2) else None))
    return tuple(out)


def _duration(text: str) -> Duration:
    return _cached_duration(text) if isinstance(text, str) else Duration(text)


@functools.lru_cache(maxsize=256)
def _cached_duration(text: str) -> Duration:
    # A Duration is never changed once built, and a type's offsets are a handful of texts.
    return Duration(text)


def check_spec(spec: Any, where: str) -> list[Problem]:
    """Every problem in one mapping (unknown keys and transforms, bad paths, bad durations...)."""
    problems: list[Problem] = []
    if isinstance(spec, str):
        spec = {"field": spec}
    if not isinstance(spec, dict):
        return [Problem(where, "a source mapping must be a field path or an object")]
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        problems.append(Problem(where, f"unknown mapping key(s): {', '.join(unknown)}"))
    producers = [k for k in ("field", "fields", "const", "now") if k in spec]
    if len(producers) != 1:
        problems.append(Problem(where, "a mapping needs exactly one of field, fields, const, now"))
    for key in ("field",):
        if key in spec:
            try:
                _parse_path(spec[key])
            except MappingError as exc:
                problems.append(Problem(f"{where}.{key}", exc.detail))
    if "fields" in spec:
        if not isinstance(spec["fields"], list) or not spec["fields"]:
            problems.append(Problem(f"{where}.fields", "must be a non-empty list of field paths"))
        else:
            for i, item in enumerate(spec["fields"]):
                try:
                    _parse_path(item)
                except MappingError as exc:
                    problems.append(Problem(f"{where}.fields[{i}]", exc.detail))
    if "join" in spec and not isinstance(spec["join"], str):
        problems.append(Problem(f"{where}.join", "must be a string"))
    if "now" in spec and spec["now"] not in ("date", "datetime", "epoch"):
        problems.append(Problem(f"{where}.now", "must be 'date', 'datetime' or 'epoch'"))
    if "offset" in spec:
        try:
            Duration(spec["offset"])
        except MappingError as exc:
            problems.append(Problem(f"{where}.offset", exc.detail))
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    if not isinstance(transforms, list):
        problems.append(Problem(f"{where}.transform", "must be a transform name or a list of them"))
        transforms = []
    if not all(isinstance(name, str) for name in transforms):
        problems.append(Problem(f"{where}.transform", "must be a transform name or a list of them"))
        transforms = [name for name in transforms if isinstance(name, str)]
    for name in transforms:
        if name not in TRANSFORMS:
            problems.append(Problem(f"{where}.transform", f"unknown transform '{name}'"))
    if "map" in transforms and not isinstance(spec.get("map"), dict):
        problems.append(Problem(f"{where}.map", "the map transform needs a 'map' object of codes"))
    if "age_equal_or_over" in transforms:
        thresholds = spec.get("thresholds")
        if (not isinstance(thresholds, list) or not thresholds
                or not all(isinstance(t, int) and not isinstance(t, bool) and 0 < t < 150 for t in thresholds)):
            problems.append(Problem(f"{where}.thresholds", "age_equal_or_over needs a list of ages (integers)"))
    if "each" in spec:
        if not isinstance(spec["each"], dict) or not spec["each"]:
            problems.append(Problem(f"{where}.each", "must map claim names to mappings"))
        else:
            for name, sub in spec["each"].items():
                problems.extend(check_spec(sub, f"{where}.each.{name}"))
    return problems


def resolve(record: Any, path: str) -> Any:
    """The value at ``path`` in ``record``, or :data:`MISSING`; lists where the path says ``[]``."""
    current: list[Any] = [record]
    many = False
    for name, index in _parse_path(path):
        nxt: list[Any] = []
        for item in current:
            # An empty XML element parses to "": for a mapping that is an absent value.
            if not isinstance(item, dict) or item.get(name) is None or item.get(name) == "":
                continue
            value = item[name]
            if index is None:
                nxt.append(value)
                continue
            items = value if isinstance(value, list) else [value]
            if index == "":
                nxt.extend(items)
                many = True
            elif int(index) < len(items):
                nxt.append(items[int(index)])
        current = nxt
    if many:
        return current
    return current[0] if current else MISSING


def _as_date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if re.fullmatch(r"\d{8}", text):
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return dt.date.fromisoformat(text[:10])
    except ValueError as exc:
        raise MappingError("bad_source_value", f"source field '{where}' is not a date", field=where) from exc


def _age_predicates(birth: dt.date, today: dt.date, thresholds: list[int]) -> dict[str, bool]:
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return {str(t): age >= t for t in thresholds}


def _apply(name: str, value: Any, spec: dict[str, Any], where: str, now: dt.datetime) -> Any:
    if name == "date_yyyymmdd":
        return _as_date(value, where).isoformat()
    if name in ("upper", "lower", "strip"):
        if not isinstance(value, str):
            raise MappingError("bad_source_value", f"source field '{where}' is not text", field=where)
        return getattr(value, name)()
    if name == "int":
        try:
            return int(str(value).strip())
        except ValueError as exc:
            raise MappingError("bad_source_value", f"source field '{where}' is not an integer", field=where) from exc
    if name == "map":
        table = spec["map"]
        key = str(value)
        if key in table:
            return table[key]
        if "map_default" in spec:
            return spec["map_default"]
        raise MappingError("unmapped_code", f"source field '{where}' has a code the mapping does not know", field=where)
    if name == "count":
        return len(value) if isinstance(value, list) else 1
    if name == "age_equal_or_over":
        return _age_predicates(_as_date(value, where), now.date(), spec["thresholds"])
    raise MappingError("bad_mapping", f"unknown transform '{name}'")


def evaluate(spec: Any, record: Any, *, now: dt.datetime, claim: str = "") -> Any:
    """Apply one mapping to ``record``; :data:`MISSING` when the source lacks the field."""
    spec = normalize(spec)
    where = spec.get("field") or ",".join(spec.get("fields", [])) or claim
    if "const" in spec:
        value = spec["const"]
    elif "now" in spec:
        moment = _shift(spec["offset"], now, where) if "offset" in spec else now
        value = {"date": lambda m: m.date().isoformat(), "datetime": lambda m: m.isoformat(timespec="seconds"),
                 "epoch": lambda m: int(m.timestamp())}[spec["now"]](moment)
    elif "fields" in spec:
        parts = [resolve(record, p) for p in spec["fields"]]
        texts = [str(p) for p in parts if p is not MISSING and not isinstance(p, dict | list) and str(p).strip()]
        value = spec.get("join", " ").join(t.strip() for t in texts) if texts else MISSING
    else:
        value = resolve(record, spec["field"])
    if value is MISSING or value == []:
        if "default" in spec:
            return spec["default"]
        if value == [] and "count" in _transforms(spec):
            return 0
        return MISSING
    if "each" in spec:
        items = value if isinstance(value, list) else [value]
        value = [_each(spec["each"], item, now, claim) for item in items]
    for name in _transforms(spec):
        if isinstance(value, list) and name not in ("count",) and "each" not in spec:
            value = [_apply(name, v, spec, where, now) for v in value]
        else:
            value = _apply(name, value, spec, where, now)
    if "offset" in spec and "now" not in spec:
        # A date read from the source, shifted: e.g. a certificate's validity from its issue date.
        value = _shift(spec["offset"], _as_date(value, where), where).isoformat()
    return value


def _shift(offset: str, moment: Any, where: str) -> Any:
    """``moment`` plus the ``offset`` duration; a date past year 9999 is a source problem, not a crash."""
    try:
        return _duration(offset).add_to(moment)
    except (OverflowError, ValueError) as exc:
        raise MappingError("bad_source_value", f"source field '{where}' shifted by {offset} is out of range",
                           field=where) from exc


def _each(subs: dict[str, Any], item: Any, now: dt.datetime, claim: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in subs.items():
        value = evaluate(sub, item, now=now, claim=f"{claim}.{key}")
        if value is not MISSING:
            out[key] = value
    return out


def _transforms(spec: dict[str, Any]) -> list[str]:
    names = spec.get("transform", [])
    return [names] if isinstance(names, str) else list(names)


def source_fields(spec: Any) -> list[str]:
    """The source field paths a mapping reads (for error messages and documentation)."""
    spec = normalize(spec)
    if "field" in spec:
        return [spec["field"]]
    return list(spec.get("fields", []))

