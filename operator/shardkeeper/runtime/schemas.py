"""Checking documents against a collection's JSON schema.

``_meta`` belongs to the runtime, not to the user's schema: a schema that closes its
object (``additionalProperties: false``) still admits it, and what ``_meta`` holds is
never checked against the user's rules.

Every document of every transaction is checked, often twice (a derivation's source and
its outputs), so speed matters. A schema written with only the common keywords (types,
properties, required, additionalProperties, items, enum and const of scalars, numeric and
length bounds, annotations) is compiled into plain Python predicates (:func:`compile_fast`)
that decide exactly as ``jsonschema`` does; ``jsonschema`` itself still checks any other
schema, and explains every failure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from shardkeeper.runtime.documents import META
from shardkeeper.runtime.errors import TaskMisconfigured

_META_SCHEMA: dict[str, Any] = {"type": "object"}
_DEFAULT_DRAFT = jsonschema.Draft202012Validator


class SchemaError(TaskMisconfigured):
    """A collection's schema is not a valid JSON schema."""


def _admit_meta(schema: Mapping[str, Any]) -> dict[str, Any]:
    admitted = copy.deepcopy(dict(schema))
    properties = admitted.get("properties")
    if isinstance(properties, dict):
        properties[META] = _META_SCHEMA
    elif "additionalProperties" in admitted or "unevaluatedProperties" in admitted:
        admitted["properties"] = {META: _META_SCHEMA}
    return admitted


class DocumentSchema:
    """A compiled collection schema; ``None`` accepts any JSON object."""

    def __init__(self, schema: Mapping[str, Any] | None, *, name: str) -> None:
        self.name = name
        self._validator: Any = None
        if schema is None:
            return
        cls = jsonschema.validators.validator_for(schema, default=_DEFAULT_DRAFT)
        try:
            cls.check_schema(dict(schema))
        except jsonschema.exceptions.SchemaError as exc:
            raise SchemaError(
                f"the schema of collection {name!r} is invalid: {exc.message}"
            ) from None
        admitted = _admit_meta(schema)
        self._validator = cls(admitted)
        self._fast = compile_fast(admitted) if cls in _FAST_DRAFTS else None

    @property
    def compiled(self) -> bool:
        """Whether documents are checked by compiled predicates rather than jsonschema."""
        return self._fast is not None

    def problem(self, document: Any) -> str | None:
        """Why ``document`` fails the schema, or ``None`` if it passes."""
        validator = self._validator
        if validator is None:
            return None
        fast = self._fast
        if fast is not None and fast(document):
            return None
        if validator.is_valid(document):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        if error is None:  # is_valid and iter_errors disagree only for broken schemas
            return f"the document does not match the schema of collection {self.name!r}"
        where = error.json_path if error.path else "the document"
        return f"{where} fails the schema of collection {self.name!r}: {error.message}"


# --- compiled predicates ---------------------------------------------------------------------

Check = Callable[[Any], bool]

# drafts whose "integer" admits 1.0, as the predicates below do
_FAST_DRAFTS = (
    jsonschema.Draft6Validator,
    jsonschema.Draft7Validator,
    jsonschema.Draft201909Validator,
    jsonschema.Draft202012Validator,
)
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation unless a format checker is asked for (it is not)
    }
)
_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
    }
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPE_CHECKS: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _same_scalar(expected: Any, value: Any) -> bool:
    """JSON equality of scalars: booleans equal only booleans, 1 equals 1.0."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected is value
    if _is_number(expected):
        return _is_number(value) and bool(expected == value)
    return type(expected) is type(value) and bool(expected == value)


def compile_fast(schema: Any) -> Check | None:
    """A predicate equal to ``jsonschema``'s ``is_valid`` for ``schema``, or ``None`` if the
    schema uses a keyword outside the compiled subset."""
    if schema is True:
        return lambda _: True
    if schema is False:
        return lambda _: False
    if not isinstance(schema, Mapping):
        return None
    if any(k not in _KEYWORDS and k not in _ANNOTATIONS for k in schema):
        return None
    checks: list[Check] = []
    # the type first: it rejects most wrong values at once
    for keyword in sorted(_KEYWORDS & schema.keys() - _OBJECT_KEYWORDS, key=_rank):
        check = _compile_keyword(keyword, schema[keyword])
        if check is None:
            return None
        checks.append(check)
    if _OBJECT_KEYWORDS & schema.keys():
        check = _compile_object(schema)
        if check is None:
            return None
        checks.append(check)
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda _: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    every = tuple(checks)

    def check_all(v: Any) -> bool:
        for check in every:  # noqa: SIM110 - a loop beats all() over a generator here
            if not check(v):
                return False
        return True

    return check_all


_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
_ORDER = {"type": 0, "enum": 1, "const": 1}


def _rank(keyword: str) -> int:
    return _ORDER.get(keyword, 2)


def _compile_keyword(keyword: str, value: Any) -> Check | None:
    if keyword == "type":
        return _compile_type(value)
    if keyword in ("enum", "const"):
        members = value if keyword == "enum" else [value]
        if not isinstance(members, list) or not all(_scalar(m) for m in members):
            return None
        return lambda v: any(_same_scalar(m, v) for m in members)
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return _compile_bound(keyword, value)
    if keyword in ("minLength", "maxLength"):
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        if keyword == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= value
        return lambda v: not isinstance(v, str) or len(v) <= value
    if keyword == "items":
        item = compile_fast(value)
        if item is None or not isinstance(value, Mapping | bool):
            return None

        def check_items(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            for element in v:  # noqa: SIM110 - see _all_of
                if not item(element):
                    return False
            return True

        return check_items
    return None


def _compile_type(value: Any) -> Check | None:
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n in _TYPE_CHECKS for n in names):
        return None
    tests = [_TYPE_CHECKS[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def _compile_bound(keyword: str, bound: Any) -> Check | None:
    if not _is_number(bound):
        return None
    compare: Callable[[Any], bool] = {
        "minimum": lambda v: v >= bound,
        "maximum": lambda v: v <= bound,
        "exclusiveMinimum": lambda v: v > bound,
        "exclusiveMaximum": lambda v: v < bound,
    }[keyword]
    return lambda v: not _is_number(v) or compare(v)


def _compile_object(schema: Mapping[str, Any]) -> Check | None:
    """required, properties and additionalProperties as one check of a dict."""
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        return None
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return None
    compiled = []
    for name, subschema in properties.items():
        check = compile_fast(subschema)
        if check is None:
            return None
        compiled.append((name, check))
    additional: Check | None = None
    if "additionalProperties" in schema:
        additional = compile_fast(schema["additionalProperties"])
        if additional is None:
            return None
    names, pairs, known = tuple(required), tuple(compiled), frozenset(properties)

    def check_object(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name in names:
            if name not in v:
                return False
        for name, check in pairs:
            if name in v and not check(v[name]):
                return False
        if additional is not None:
            for name in v:
                if name not in known and not additional(v[name]):
                    return False
        return True

    return check_object
