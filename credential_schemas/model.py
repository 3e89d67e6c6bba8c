"""Credential types: the validator, the loader and :class:`CredentialType`."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError as JSONSchemaError
from jsonschema.exceptions import ValidationError as JSONSchemaValidationError
from jsonschema.validators import extend as _extend_validator

from ssi.errors import DisplayNameError, SSIError
from ssi.names import display_text

from . import mapping as _mapping
from .errors import ClaimsInvalid, MappingError, Problem, SchemaError

#: Locales every type must be displayed in.
REQUIRED_LOCALES: tuple[str, ...] = ("ca", "es", "en")
#: Claims the issuer sets itself; they never come from a source and are never selectively disclosable.
REGISTERED_CLAIMS: frozenset[str] = frozenset(
    {"iss", "sub", "iat", "nbf", "exp", "cnf", "status", "vct", "vct#integrity", "jti"}
)
#: Names SD-JWT reserves inside the payload.
RESERVED_NAMES: frozenset[str] = frozenset({"_sd", "_sd_alg", "..."})
SD_VALUES: tuple[str, ...] = ("always", "allowed", "never")
ClaimPath = tuple[str | int | None, ...]

_TOP_KEYS = frozenset({"id", "version", "vct", "name", "description", "display", "schema", "claims", "validity"})
_DISPLAY_KEYS = frozenset({"locale", "name", "description", "rendering"})
_CLAIM_KEYS = frozenset({"path", "display", "sd", "mandatory", "svg_id", "source"})

#: Longest ``pattern`` (or ``patternProperties`` key) a schema may use.
MAX_PATTERN_LENGTH = 256
#: Tenant patterns run only on the Rust ``regex`` engine: linear time in the input, no lookaround or
#: backreferences, and a bounded compiled size. Python's backtracking ``re`` never sees them.
_LINEAR_REGEX = jsonschema_rs.RegexOptions(size_limit=1 << 20, dfa_size_limit=1 << 20)
_NOT_SCHEMA_KEYS = frozenset({"const", "enum", "default", "examples"})


@dataclass(frozen=True)
class ClaimDefinition:
    """One entry of ``claims``: the Type Metadata part plus its source mapping (``None`` for containers)."""

    path: ClaimPath
    display: list[dict[str, Any]]
    sd: str = "allowed"
    mandatory: bool = False
    source: Any = None
    svg_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        """This claim as it appears in the Type Metadata document."""
        out: dict[str, Any] = {"path": list(self.path), "display": copy.deepcopy(self.display), "sd": self.sd,
                               "mandatory": self.mandatory}
        if self.svg_id:
            out["svg_id"] = self.svg_id
        return out


def _fmt_path(path: ClaimPath) -> str:
    return "/" + "/".join("*" if p is None else str(p) for p in path)


# ----------------------------------------------------------------------------- patterns

@functools.lru_cache(maxsize=2048)
def _linear_regex(pattern: str) -> Callable[[Any], bool]:
    """``pattern`` compiled by the linear-time engine, as a search; ``ValueError`` when it cannot take it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError("pattern too long")
    try:
        return jsonschema_rs.Draft202012Validator({"pattern": pattern}, pattern_options=_LINEAR_REGEX).is_valid
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise ValueError("pattern not supported by the linear-time engine") from exc


def _search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text`` (a pattern the engine cannot take never matches)."""
    try:
        return _linear_regex(pattern)(text)
    except ValueError:
        return False


def _schema_patterns(node: Any, where: str = "schema") -> Iterator[tuple[str, Any]]:
    """Every ``pattern`` value and ``patternProperties`` key of a schema, with where it is."""
    stack = [(node, where)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key == "pattern" and not isinstance(value, dict):
                yield f"{where}.pattern", value
            elif key == "patternProperties" and isinstance(value, dict):
                for pattern in value:
                    yield f"{where}.patternProperties", pattern
            if key not in _NOT_SCHEMA_KEYS:
                stack.append((value, f"{where}.{key}"))


def _check_patterns(schema: dict[str, Any]) -> list[Problem]:
    problems = []
    for where, pattern in _schema_patterns(schema):
        if not isinstance(pattern, str):
            continue  # the metaschema reports it
        if len(pattern) > MAX_PATTERN_LENGTH:
            problems.append(Problem(where, f"a pattern may have at most {MAX_PATTERN_LENGTH} characters"))
            continue
        try:
            _linear_regex(pattern)
        except ValueError:
            problems.append(Problem(where, "the pattern is not a regular expression the issuer's linear-time engine "
                                           "accepts (no lookaround, backreferences or huge repetitions)"))
    return problems


def _uses(schema: Any, keyword: str) -> bool:
    return any(True for _ in _keyword_values(schema, keyword))


def _keyword_values(node: Any, keyword: str) -> Iterator[Any]:
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == keyword:
                    yield value
                if key not in _NOT_SCHEMA_KEYS:
                    stack.append(value)


def _pattern_keyword(validator: Any, patrn: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield JSONSchemaValidationError(f"does not match {patrn!r}")


def _pattern_properties_keyword(validator: Any, pattern_properties: dict[str, Any], instance: Any,
                                schema: dict[str, Any]) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_keyword(validator: Any, additional: Any, instance: Any,
                                   schema: dict[str, Any]) -> Iterator[Any]:
    # jsonschema's own, except that patternProperties are matched by the linear-time engine.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = {k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)}
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            yield JSONSchemaValidationError(f"{joined} {verb} not match any of the regexes: "
                                            + ", ".join(repr(each) for each in sorted(patterns)))
        else:
            names = sorted(extras, key=str)
            verb = "was" if len(names) == 1 else "were"
            yield JSONSchemaValidationError("Additional properties are not allowed ("
                                            f"{', '.join(repr(n) for n in names)} {verb} unexpected)")


#: The Python validator (it words the problems) with every tenant pattern run by the linear-time engine.
_ClaimsValidator = _extend_validator(Draft202012Validator, {
    "pattern": _pattern_keyword,
    "patternProperties": _pattern_properties_keyword,
    "additionalProperties": _additional_properties_keyword,
})


# ----------------------------------------------------------------------------- schema walking

def _resolve_ref(node: Any, root: dict[str, Any]) -> Any:
    """Follow local ``$ref``s (``#/$defs/...``) so the walkers see the real subschema."""
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/") and seen < 20:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            return node
        node, seen = target, seen + 1
    return node


def _schema_at(schema: dict[str, Any], path: ClaimPath) -> Any:
    """The subschema a claim path points to, or ``None`` when the schema has no such claim."""
    node: Any = schema
    for part in path:
        node = _resolve_ref(node, schema)
        if not isinstance(node, dict):
            return None
        if isinstance(part, str):
            props = node.get("properties")
            if not isinstance(props, dict) or part not in props:
                return None
            node = props[part]
        else:
            if "items" not in node or not isinstance(node["items"], dict):
                return None
            node = node["items"]
    return _resolve_ref(node, schema)


#: Most claim paths (and subschemas visited for them) the leaf walk expands: a few ``$ref``s used
#: several times each multiply (k ** depth), and registration must stay cheap for everyone.
MAX_SCHEMA_PATHS = 2000
#: Deepest claim path the leaf walk follows.
MAX_CLAIM_DEPTH = 16


class _SchemaTooLarge(Exception):
    """The leaf walk went past :data:`MAX_SCHEMA_PATHS`, or a ``$ref`` expands into itself."""


def _schema_leaves(schema: dict[str, Any]) -> list[ClaimPath]:
    """Every leaf claim path of the schema (objects descend by property, arrays by ``None``).

    Raises :class:`_SchemaTooLarge` past :data:`MAX_SCHEMA_PATHS` visited subschemas, or when a
    ``$ref`` is expanded inside its own expansion (a recursive schema has no finite set of claims).
    """
    leaves: list[ClaimPath] = []
    visited = 0
    # (node, prefix, refs being expanded on the way here)
    stack: list[tuple[Any, ClaimPath, frozenset[str]]] = [(schema, (), frozenset())]
    while stack:
        node, prefix, refs = stack.pop()
        visited += 1
        if visited > MAX_SCHEMA_PATHS:
            raise _SchemaTooLarge(f"the schema expands to more than {MAX_SCHEMA_PATHS} claim paths")
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in refs:
                raise _SchemaTooLarge(f"$ref '{ref[:80]}' is recursive")
            refs = refs | {ref}
        node = _resolve_ref(node, schema)
        if len(prefix) > MAX_CLAIM_DEPTH or not isinstance(node, dict):
            continue
        props = node.get("properties")
        if isinstance(props, dict) and props:
            stack.extend((sub, (*prefix, name), refs) for name, sub in reversed(list(props.items())))
            continue
        if isinstance(node.get("items"), dict):
            item = node["items"]
            sub = _resolve_ref(item, schema)
            if isinstance(sub, dict) and ("properties" in sub or "items" in sub):
                stack.append((item, (*prefix, None), refs))
                continue
        if prefix:
            leaves.append(prefix)
    return leaves


def _nested_required_problems(schema: dict[str, Any]) -> list[Problem]:
    """``required`` names that no ``properties`` of the same nested object declare.

    JSON Schema allows them (an undeclared property could satisfy one), but a claim that is not
    declared has no source mapping and no display, so it is never issued: such a type would refuse
    every credential at issuance. The root object's ``required`` is checked by the caller. Run after
    :func:`_schema_leaves` accepted the schema, so the walk is finite.
    """
    problems: list[Problem] = []
    stack: list[tuple[Any, ClaimPath]] = [(schema, ())]
    while stack:
        node, prefix = stack.pop()
        node = _resolve_ref(node, schema)
        if len(prefix) > MAX_CLAIM_DEPTH or not isinstance(node, dict):
            continue
        props = node.get("properties")
        if isinstance(props, dict) and props:
            if prefix and isinstance(node.get("required"), list):
                where = ".".join("*" if p is None else str(p) for p in prefix)
                problems.extend(Problem(f"schema.properties.{where}.required",
                                        f"'{name}' is not a property of {_fmt_path(prefix)}")
                                for name in node["required"] if isinstance(name, str) and name not in props)
            stack.extend((sub, (*prefix, name)) for name, sub in props.items())
        elif isinstance(node.get("items"), dict):
            stack.append((node["items"], (*prefix, None)))
    return sorted(problems, key=lambda problem: problem.path)


def _parse_claim_path(raw: Any) -> ClaimPath | None:
    if not isinstance(raw, list) or not raw:
        return None
    for part in raw:
        if part is None or (isinstance(part, str) and part):
            continue
        if isinstance(part, int) and not isinstance(part, bool) and part >= 0:
            continue
        return None
    return tuple(raw)


# ----------------------------------------------------------------------------- validator

def _check_text(value: Any, where: str, member: str, *, required: bool = True) -> list[Problem]:
    """A text wallets show to citizens (a name, a label, a description, a logo's ``alt_text``):
    :func:`ssi.names.display_text` refuses a control character (a line break, tab, ESC, C1,
    U+2028/U+2029, a bidirectional control such as U+202E, which makes a screen read otherwise than
    what the issuer registered), and, when ``required``, a text with nothing to read (only spaces
    and invisible characters). Not a string: reported by the member's own rule, not here. The
    message names the member, never quotes the text."""
    if not isinstance(value, str):
        return []
    try:
        display_text(value, member)
    except DisplayNameError as exc:
        if exc.code == "name.empty" and (not required or not value.strip()):
            return []  # optional and blank; a blank required text is "<member> is required"
        return [Problem(where, exc.detail)]
    return []


def _check_display_list(value: Any, where: str, text_key: str) -> list[Problem]:
    """A ``display`` array: objects with ``locale`` and ``text_key``, covering ca, es and en once each;
    their texts are shown to citizens (:func:`_check_text`)."""
    if not isinstance(value, list):
        return [Problem(where, "display must be a list of objects with locale and " + text_key)]
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            problems.append(Problem(f"{where}[{i}]", "display entry must be an object"))
            continue
        locale = entry.get("locale")
        if not isinstance(locale, str) or not locale:
            problems.append(Problem(f"{where}[{i}].locale", "locale is required"))
        elif locale in seen:
            problems.append(Problem(f"{where}[{i}].locale", f"locale '{locale}' appears twice"))
        else:
            seen.add(locale)
        if not isinstance(entry.get(text_key), str) or not entry[text_key].strip():
            problems.append(Problem(f"{where}[{i}].{text_key}", f"{text_key} is required"))
        problems.extend(_check_text(entry.get(text_key), f"{where}[{i}].{text_key}", text_key))
        if "description" in entry and not isinstance(entry["description"], str):
            problems.append(Problem(f"{where}[{i}].description", "description must be a string"))
        problems.extend(_check_text(entry.get("description"), f"{where}[{i}].description", "description",
                                    required=False))
    for locale in REQUIRED_LOCALES:
        if locale not in seen:
            problems.append(Problem(where, f"missing display for locale '{locale}'"))
    return problems


def _check_rendering(value: Any, where: str) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(where, "rendering must be an object")]
    problems: list[Problem] = []
    simple = value.get("simple", {})
    if not isinstance(simple, dict):
        return [Problem(f"{where}.simple", "must be an object")]
    for key in ("background_color", "text_color"):
        if key in simple and not (isinstance(simple[key], str) and len(simple[key]) in (4, 7)
                                  and simple[key].startswith("#")):
            problems.append(Problem(f"{where}.simple.{key}", "must be an RGB colour such as #12a4f0"))
    logo = simple.get("logo")
    if logo is not None and not (isinstance(logo, dict) and isinstance(logo.get("uri"), str)):
        problems.append(Problem(f"{where}.simple.logo", "logo needs a uri"))
    elif isinstance(logo, dict):
        problems.extend(_check_text(logo.get("alt_text"), f"{where}.simple.logo.alt_text", "alt_text",
                                    required=False))
    return problems


def _unresolvable_reference(schema: dict[str, Any]) -> bool:
    # The compiled validator resolves every $ref when it is built (offline: nothing is fetched).
    try:
        jsonschema_rs.Draft202012Validator(schema, offline=True)
    except jsonschema_rs.ReferencingError:
        return True
    except jsonschema_rs.ValidationError as exc:
        # Other kinds (a pattern only Python's engine reads, say) are not about references.
        return isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.Referencing)
    except ValueError:
        return False
    return False


#: Longest ``id``, ``version`` and ``vct``: the issuer stores them in columns of these sizes
#: (``issuer.models.CredentialTypeRow``, ``IssuanceRecord``).
MAX_ID_LENGTH = 100
MAX_VERSION_LENGTH = 40
MAX_VCT_LENGTH = 500
#: Largest definition (as JSON) and deepest nesting accepted: the built-in types are under 10 KiB and
#: 8 levels; bounds keep registration cheap and away from Python's recursion limit.
MAX_DEFINITION_BYTES = 128 * 1024
MAX_DEFINITION_DEPTH = 48


def _nesting_depth(data: Any) -> int:
    deepest = 0
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEFINITION_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def validate_type_definition(data: Any) -> list[Problem]:
    """Every problem in a type definition, each with its path; an empty list means valid.

    The issuer's schema-registry API calls this for issuer-registered types, so it must never
    raise for any input shape.
    """
    if not isinstance(data, dict):
        return [Problem("", "a type definition must be an object")]
    # Before anything walks it recursively (the metaschema check, json.dumps): bounded depth and size.
    if _nesting_depth(data) > MAX_DEFINITION_DEPTH:
        return [Problem("", f"the definition is nested more than {MAX_DEFINITION_DEPTH} levels deep")]
    if len(json.dumps(data, default=str)) > MAX_DEFINITION_BYTES:
        return [Problem("", f"the definition is larger than {MAX_DEFINITION_BYTES // 1024} KiB")]
    problems: list[Problem] = []
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(Problem(key, "unknown top-level member"))
    type_id = data.get("id")
    if not isinstance(type_id, str) or not type_id or not all(c.isalnum() or c in "-_." for c in type_id):
        problems.append(Problem("id", "id is required: letters, digits, '-', '_' or '.'"))
    elif len(type_id) > MAX_ID_LENGTH:
        problems.append(Problem("id", f"id may have at most {MAX_ID_LENGTH} characters"))
    if not isinstance(data.get("version"), str | int) or isinstance(data.get("version"), bool) or data.get("version") == "":
        problems.append(Problem("version", "version is required (a string such as '1.0')"))
    elif len(str(data["version"])) > MAX_VERSION_LENGTH:
        problems.append(Problem("version", f"version may have at most {MAX_VERSION_LENGTH} characters"))
    vct = data.get("vct")
    if not isinstance(vct, str):
        problems.append(Problem("vct", "vct is required"))
    elif len(vct) > MAX_VCT_LENGTH:
        problems.append(Problem("vct", f"vct may have at most {MAX_VCT_LENGTH} characters"))
    else:
        parts = urlsplit(vct)
        if parts.scheme != "https" or not parts.netloc or parts.fragment:
            problems.append(Problem("vct", "vct must be an https URL without a fragment"))
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        problems.append(Problem("name", "name is required"))
    problems.extend(_check_text(data.get("name"), "name", "name"))
    if "description" in data and not isinstance(data["description"], str):
        problems.append(Problem("description", "description must be a string"))
    problems.extend(_check_text(data.get("description"), "description", "description", required=False))
    display = data.get("display")
    problems.extend(_check_display_list(display, "display", "name"))
    if isinstance(display, list):
        for i, entry in enumerate(display):
            if isinstance(entry, dict):
                for key in sorted(set(entry) - _DISPLAY_KEYS):
                    problems.append(Problem(f"display[{i}].{key}", "unknown display member"))
                if "rendering" in entry:
                    problems.extend(_check_rendering(entry["rendering"], f"display[{i}].rendering"))
    validity = data.get("validity")
    try:
        _mapping.Duration(validity)
    except MappingError:
        problems.append(Problem("validity", "validity must be an ISO 8601 duration such as P5Y or P3M, at most 100 years"))

    schema = data.get("schema")
    schema_ok = False
    if not isinstance(schema, dict):
        problems.append(Problem("schema", "schema (a JSON Schema 2020-12 object) is required"))
    else:
        meta_errors = sorted(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema),
                             key=lambda e: list(e.absolute_path))
        for err in meta_errors:
            where = ".".join(str(p) for p in err.absolute_path)
            problems.append(Problem(f"schema.{where}" if where else "schema", f"not a valid JSON Schema: {err.message}"))
        if "$schema" in schema and schema["$schema"] != "https://json-schema.org/draft/2020-12/schema":
            problems.append(Problem("schema.$schema", "the schema must be JSON Schema 2020-12"))
        if schema.get("type") != "object":
            problems.append(Problem("schema.type", "the claims schema must describe an object"))
        schema_ok = not meta_errors
        pattern_problems = _check_patterns(schema)
        problems.extend(pattern_problems)
        if _uses(schema, "patternProperties") and _uses(schema, "unevaluatedProperties"):
            # jsonschema would match these patterns with Python's backtracking engine.
            problems.append(Problem("schema", "patternProperties and unevaluatedProperties cannot be combined"))
            pattern_problems = [*pattern_problems, problems[-1]]
        schema_ok = schema_ok and not pattern_problems
        if schema_ok and _unresolvable_reference(schema):
            # Validating every record would fail at issuance; references to URLs are never fetched.
            problems.append(Problem("schema", "a $ref points outside the schema or to nothing in it; "
                                              "only references within the schema (#/$defs/...) are allowed"))
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for name in props:
            if name in RESERVED_NAMES:
                problems.append(Problem(f"schema.properties.{name}", f"'{name}' is reserved by SD-JWT"))

    claims = data.get("claims")
    defs: list[tuple[int, ClaimPath, dict[str, Any]]] = []
    if not isinstance(claims, list) or not claims:
        problems.append(Problem("claims", "claims must be a non-empty list"))
        claims = []
    seen_paths: dict[ClaimPath, int] = {}
    svg_ids: set[str] = set()
    for i, claim in enumerate(claims):
        where = f"claims[{i}]"
        if not isinstance(claim, dict):
            problems.append(Problem(where, "a claim entry must be an object"))
            continue
        for key in sorted(set(claim) - _CLAIM_KEYS):
            problems.append(Problem(f"{where}.{key}", "unknown claim member"))
        path = _parse_claim_path(claim.get("path"))
        if path is None:
            problems.append(Problem(f"{where}.path", "path must be a non-empty list of strings, null or indices"))
            continue
        if path in seen_paths:
            problems.append(Problem(f"{where}.path", f"duplicate of claims[{seen_paths[path]}].path"))
        seen_paths[path] = i
        top = path[0]
        sd = claim.get("sd", "allowed")
        if sd not in SD_VALUES:
            problems.append(Problem(f"{where}.sd", "sd must be 'always', 'allowed' or 'never'"))
        if top in REGISTERED_CLAIMS and len(path) > 1:
            # The issuer sets the whole claim (cnf.jwk is the holder's key, status.status_list its index).
            problems.append(Problem(f"{where}.path", f"'{top}' is set by the issuer: no claim can be inside it"))
        elif top in REGISTERED_CLAIMS:
            if sd != "never":
                problems.append(Problem(f"{where}.sd", f"'{top}' must never be selectively disclosable"))
            if claim.get("source") is not None:
                problems.append(Problem(f"{where}.source", f"'{top}' is set by the issuer, not by a source"))
        if any(p in RESERVED_NAMES for p in path):
            problems.append(Problem(f"{where}.path", "path uses a name reserved by SD-JWT"))
        if "mandatory" in claim and not isinstance(claim["mandatory"], bool):
            problems.append(Problem(f"{where}.mandatory", "mandatory must be true or false"))
        svg_id = claim.get("svg_id")
        if svg_id is not None:
            if not (isinstance(svg_id, str) and svg_id and (svg_id[0].isalpha() or svg_id[0] == "_")
                    and all(c.isalnum() or c == "_" for c in svg_id)):
                problems.append(Problem(f"{where}.svg_id", "svg_id must be alphanumeric/underscore, not starting with a digit"))
            elif svg_id in svg_ids:
                problems.append(Problem(f"{where}.svg_id", "svg_id must be unique"))
            else:
                svg_ids.add(svg_id)
        problems.extend(_check_display_list(claim.get("display"), f"{where}.display", "label"))
        if claim.get("source") is not None:
            problems.extend(_mapping.check_spec(claim["source"], f"{where}.source"))
            if not all(isinstance(p, str) for p in path):
                problems.append(Problem(f"{where}.source", "a source mapping cannot address inside an array "
                                                           "(map the whole array, with 'each' for objects)"))
        if isinstance(schema, dict) and top not in REGISTERED_CLAIMS and _schema_at(schema, path) is None:
            problems.append(Problem(f"{where}.path", f"claim {_fmt_path(path)} is not in the schema"))
        defs.append((i, path, claim))

    # A mapped claim inside another mapped claim: issuance could not place both values.
    sourced_at = {p: i for i, p, c in defs if c.get("source") is not None}
    for i, path, claim in defs:
        if claim.get("source") is None:
            continue
        for n in range(1, len(path)):
            if path[:n] in sourced_at:
                problems.append(Problem(f"claims[{i}].source", f"claim {_fmt_path(path)} is inside "
                                        f"claims[{sourced_at[path[:n]]}], which has its own source mapping"))
                break
    leaves: list[ClaimPath] = []
    if isinstance(schema, dict) and schema_ok:
        try:
            leaves = _schema_leaves(schema)
        except _SchemaTooLarge as exc:
            problems.append(Problem("schema", f"{exc}; a type's claims must be a finite, moderate set"))
            schema_ok = False
    if isinstance(schema, dict) and schema_ok:
        sourced = [p for _, p, c in defs if c.get("source") is not None]
        described = {p for _, p, _c in defs}
        for leaf in leaves:
            if leaf[0] in REGISTERED_CLAIMS:
                continue
            if not any(leaf[: len(s)] == s for s in sourced):
                problems.append(Problem("schema.properties." + ".".join("*" if p is None else str(p) for p in leaf),
                                        f"claim {_fmt_path(leaf)} has no source mapping"))
            # Displays must cover what a wallet shows: the leaf itself or an enclosing claim.
            if not any(leaf[: len(d)] == d for d in described):
                problems.append(Problem("schema.properties." + ".".join("*" if p is None else str(p) for p in leaf),
                                        f"claim {_fmt_path(leaf)} has no display (claims[] entry)"))
        for i, path, claim in defs:
            # A claim without its own mapping is a container (its children are mapped) or a part
            # of a mapped claim (an array's elements, a predicate inside an object).
            related = any(p[: len(path)] == path or path[: len(p)] == p for p in sourced)
            if claim.get("source") is None and not related and path[0] not in REGISTERED_CLAIMS:
                problems.append(Problem(f"claims[{i}].source", f"claim {_fmt_path(path)} has no source mapping"))
        # A mandatory claim's top-level property must be required by the schema too, so an issued
        # credential and the schema can never disagree on it.
        required = schema.get("required", []) if isinstance(schema.get("required"), list) else []
        # Top-level claims are only ever the mapped ones: a required name that is registered (the issuer
        # adds it after validation) or not a declared property would fail every issuance.
        root = _resolve_ref(schema, schema)
        declared = root.get("properties") if isinstance(root, dict) and isinstance(root.get("properties"), dict) else {}
        for name in required:
            if name in REGISTERED_CLAIMS:
                problems.append(Problem("schema.required", f"'{name}' is set by the issuer, after the claims "
                                                           "are validated: it cannot be required by the schema"))
            elif isinstance(name, str) and name not in declared:
                problems.append(Problem("schema.required", f"'{name}' is not a property of the schema"))
        problems.extend(_nested_required_problems(schema))
        for i, path, claim in defs:
            if claim.get("mandatory") is True and len(path) == 1 and path[0] not in required \
                    and path[0] not in REGISTERED_CLAIMS:
                problems.append(Problem(f"claims[{i}].mandatory", f"mandatory claim '{path[0]}' is not in schema.required"))
    return problems


# ----------------------------------------------------------------------------- the type

@dataclass
class CredentialType:
    """A validated credential type; build it with :func:`load_type`."""

    id: str
    version: str
    vct: str
    name: str
    description: str
    display: list[dict[str, Any]]
    json_schema: dict[str, Any]
    claims: list[ClaimDefinition]
    validity_text: str
    definition: dict[str, Any] = field(repr=False, default_factory=dict)

    # -- metadata -------------------------------------------------------------------------------
    def type_metadata(self) -> dict[str, Any]:
        """The SD-JWT VC Type Metadata document served at the ``vct`` URL."""
        doc: dict[str, Any] = {"vct": self.vct, "name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["display"] = copy.deepcopy(self.display)
        doc["claims"] = [c.metadata() for c in self.claims]
        return doc

    def type_metadata_bytes(self) -> bytes:
        """The canonical bytes of :meth:`type_metadata`: compact JSON, keys sorted, UTF-8.

        The issuer must serve exactly these bytes at the ``vct`` URL, because SRI (which
        ``vct#integrity`` uses) hashes the bytes retrieved, not a re-serialisation.
        """
        return json.dumps(self.type_metadata(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    def type_metadata_integrity(self) -> str:
        """``vct#integrity``: a W3C SRI string ``sha256-<base64>`` over :meth:`type_metadata_bytes`."""
        digest = hashlib.sha256(self.type_metadata_bytes()).digest()
        return "sha256-" + base64.b64encode(digest).decode("ascii")

    def with_vct(self, vct: str) -> CredentialType:
        """A copy published at another ``vct`` URL (an issuer serving the type from its own origin)."""
        definition = copy.deepcopy(self.definition)
        definition["vct"] = vct
        return load_type(definition)

    def display_for(self, locale: str) -> dict[str, Any]:
        """The type's display entry for ``locale`` (``ca-ES`` falls back to ``ca``, then to English)."""
        by_locale = {d["locale"]: d for d in self.display}
        for candidate in (locale, locale.split("-")[0], "en"):
            if candidate in by_locale:
                return copy.deepcopy(by_locale[candidate])
        return copy.deepcopy(self.display[0])

    def claim_label(self, path: ClaimPath, locale: str) -> str:
        """The label of a claim path for ``locale`` (falling back as :meth:`display_for`)."""
        for claim in self.claims:
            if claim.path == tuple(path):
                by_locale = {d["locale"]: d for d in claim.display}
                for candidate in (locale, locale.split("-")[0], "en"):
                    if candidate in by_locale:
                        return str(by_locale[candidate]["label"])
        return _fmt_path(tuple(path))

    # -- issuance helpers ----------------------------------------------------------------------
    @property
    def validity(self) -> dt.timedelta:
        """The validity period as a timedelta (years count 365 days, months 30); see :meth:`expires_at`."""
        return self._validity.approximate()

    def expires_at(self, issued_at: dt.datetime) -> dt.datetime:
        """Calendar-exact expiry: ``issued_at`` plus the validity period (``P1Y`` from 29 Feb → 28 Feb)."""
        return self._validity.add_to(issued_at)

    @cached_property
    def _validity(self) -> _mapping.Duration:
        return _mapping.Duration(self.validity_text)

    def disclosable_paths(self) -> list[ClaimPath]:
        """Claim paths to make selectively disclosable (``sd`` ``always`` and ``allowed``).

        ``allowed`` is treated as disclosable: data minimisation is the default. Paths are in
        document order; ``None`` means every element of an array.
        """
        return [c.path for c in self.claims if c.sd in ("always", "allowed") and c.path[0] not in REGISTERED_CLAIMS]

    def mandatory_paths(self) -> list[ClaimPath]:
        """Claim paths the issuer must include."""
        return [c.path for c in self.claims if c.mandatory]

    def required_subject_fields(self) -> list[str]:
        """Fields of the offer's ``subject`` (``subject.<field>`` in a source mapping) that a mandatory
        claim reads, e.g. ``["identifier", "name"]``.

        The issuer checks them when an operator creates an offer: a missing one would otherwise be
        found only when the wallet asks for the credential, long after the operator has gone.
        """
        fields: list[str] = []
        for claim in self.claims:
            if not claim.mandatory or claim.source is None:
                continue
            for path in _mapping.source_fields(claim.source):
                if path.startswith("subject.") and path[len("subject."):] not in fields:
                    fields.append(path[len("subject."):])
        return fields

    def map_claims(self, source_record: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Apply the source mapping to a source record; the result satisfies the JSON Schema.

        Raises :class:`MappingError` naming the source field a mandatory claim lacks, and
        :class:`ClaimsInvalid` when the mapped claims break the schema.
        """
        now = now or dt.datetime.now(dt.UTC)
        claims: dict[str, Any] = {}
        for claim, name in self._mapped_claims:
            value = _mapping.evaluate(claim.source, source_record, now=now, claim=name)
            if value is _mapping.MISSING:
                if claim.mandatory:
                    fields = ", ".join(_mapping.source_fields(claim.source)) or "?"
                    raise MappingError("missing_source_field",
                                       f"the source lacks '{fields}' for mandatory claim {name}",
                                       field=fields, claim=name)
                continue
            _set_path(claims, claim.path, value)
        problems = self.validate_claims(claims)
        if problems:
            raise ClaimsInvalid(problems)
        return claims

    @cached_property
    def _mapped_claims(self) -> list[tuple[Any, str]]:
        """The claims that come from the source, each with its path as error messages write it
        (worked out once per type, not on every issuance)."""
        return [(claim, _fmt_path(claim.path)) for claim in self.claims if claim.source is not None]

    @cached_property
    def _claims_validator(self) -> Any:
        """The Python validator that words the problems, or ``None`` when it would have to run a tenant
        pattern on Python's backtracking ``re`` (``unevaluatedProperties`` next to ``patternProperties``,
        refused at registration since; a type stored earlier is then answered by the compiled check alone).

        Built once per type: constructing the validator cost more than validating a record with it.
        """
        if _uses(self.json_schema, "patternProperties") and _uses(self.json_schema, "unevaluatedProperties"):
            return None
        return _ClaimsValidator(self.json_schema, format_checker=FormatChecker())

    @cached_property
    def _claims_accepted(self) -> Any:
        """A compiled (Rust) yes/no check of the same schema, or ``None`` when it cannot take this one.

        Issuing validates every record: jsonschema's Python validator costs ~90 µs for a small type, the
        compiled one ~1 µs. It only ever answers "valid"; whatever it refuses goes to the Python
        validator, which has the last word and words the problems (so an engine disagreement can only
        cost time). Both match patterns with the same linear-time engine (``_LINEAR_REGEX``).
        ``offline``: a ``$ref`` to a URL is never fetched, as jsonschema never does either.
        """
        try:
            validator = jsonschema_rs.Draft202012Validator(self.json_schema, validate_formats=True, offline=True,
                                                           pattern_options=_LINEAR_REGEX)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
            return None
        return validator.is_valid

    def validate_claims(self, claims: Any) -> list[Problem]:
        """Every way ``claims`` breaks the JSON Schema; messages never quote claim values."""
        accepted = self._claims_accepted
        if accepted is not None and accepted(claims):
            return []
        validator = self._claims_validator
        if validator is None:
            return [Problem("/", "the claims do not satisfy the type's schema")]
        problems = []
        for err in sorted(validator.iter_errors(claims), key=lambda e: [str(p) for p in e.absolute_path]):
            where = "/" + "/".join(str(p) for p in err.absolute_path)
            if err.validator in ("required", "additionalProperties", "unevaluatedProperties"):
                message = err.message  # names properties, never values
            else:
                message = f"fails '{err.validator}' ({json.dumps(err.validator_value, ensure_ascii=False)[:80]})"
            problems.append(Problem(where, message))
        return problems


def _set_path(target: dict[str, Any], path: ClaimPath, value: Any) -> None:
    """Place a mapped value; mapping paths are object keys (arrays come whole from ``each``)."""
    node = target
    for part in path[:-1]:
        if not isinstance(part, str):
            raise MappingError("bad_mapping", f"a source mapping cannot address inside an array at {_fmt_path(path)}")
        node = node.setdefault(part, {})
    last = path[-1]
    if not isinstance(last, str):
        raise MappingError("bad_mapping", f"a source mapping cannot address inside an array at {_fmt_path(path)}")
    node[last] = value


# ----------------------------------------------------------------------------- loading

def _read(source: str | Path | dict[str, Any]) -> Any:
    if isinstance(source, dict):
        if _nesting_depth(source) > MAX_DEFINITION_DEPTH:  # deepcopy recurses
            raise SchemaError([Problem("", f"the definition is nested more than {MAX_DEFINITION_DEPTH} levels deep")])
        return copy.deepcopy(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError([Problem("", f"cannot read type definition {path.name}")]) from exc
    try:
        if path.suffix == ".json":
            from ssi.encoding import json_loads

            return json_loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, SSIError) as exc:
        raise SchemaError([Problem("", f"{path.name} is not valid YAML/JSON")]) from exc


def load_type(source: str | Path | dict[str, Any], *, validate: bool = True) -> CredentialType:
    """Load and validate a type definition (a YAML/JSON file path or a dict).

    Raises :class:`SchemaError` listing every problem found. ``validate=False`` is for a definition
    stored when the validator was more lenient (the issuer keeps serving and issuing it): only the
    members the type is built from are checked.
    """
    data = _read(source)
    problems = validate_type_definition(data)
    if problems and (validate or not _buildable(data)):
        raise SchemaError(problems)
    try:
        Draft202012Validator.check_schema(data["schema"])
    except JSONSchemaError as exc:  # defensive: the validator above reports the same
        raise SchemaError([Problem("schema", "not a valid JSON Schema")]) from exc
    claims = [
        ClaimDefinition(path=tuple(c["path"]), display=c["display"], sd=c.get("sd", "allowed"),
                        mandatory=bool(c.get("mandatory", False)), source=c.get("source"), svg_id=c.get("svg_id"))
        for c in data["claims"]
    ]
    return CredentialType(
        id=data["id"], version=str(data["version"]), vct=data["vct"], name=data["name"],
        description=data.get("description", ""), display=data["display"], json_schema=data["schema"],
        claims=claims, validity_text=data["validity"], definition=data,
    )


def _buildable(data: Any) -> bool:
    try:
        return (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("id", "vct", "name", "validity"))
                and isinstance(data.get("schema"), dict) and isinstance(data.get("display"), list)
                and all(isinstance(c, dict) and isinstance(c.get("path"), list) and isinstance(c.get("display"), list)
                        for c in data.get("claims", [None])))
    except Exception:  # noqa: BLE001 - any odd shape is simply not buildable
        return False


TYPES_DIR = Path(__file__).parent / "types"


def load_builtin_types() -> dict[str, CredentialType]:
    """The built-in types shipped in ``credential_schemas/types/``, by id."""
    out: dict[str, CredentialType] = {}
    for path in sorted(TYPES_DIR.glob("*.yaml")):
        ctype = load_type(path)
        out[ctype.id] = ctype
    return out
