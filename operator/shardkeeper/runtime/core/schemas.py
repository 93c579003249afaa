"""Checking documents against a collection's JSON schema.

``_meta`` belongs to the runtime, not to the user's schema: a schema that closes its
object (``additionalProperties: false``) still admits it, and what ``_meta`` holds is
never checked against the user's rules.

Every document of every transaction is checked, often twice (a derivation's source and
its outputs), so speed matters. A schema written with only the common keywords (types,
properties, required, additionalProperties, items, enum and const of scalars, numeric and
length bounds, annotations) is compiled into one Python function (:func:`compile_fast`)
that decides exactly as ``jsonschema`` does; ``jsonschema`` itself still checks any other
schema, and explains every failure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from shardkeeper.runtime.core.documents import META
from shardkeeper.runtime.core.errors import TaskMisconfigured

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
        self._fast: Check | None = None
        # whether a document passes (problem() says why not): the compiled function itself
        # where there is one, to spare a call per document
        self.accepts: Check = _accept_all
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
        self.accepts = self._fast or self._validator.is_valid

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


def _accept_all(document: Any) -> bool:
    return True


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
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
_BOUNDS = {
    "minimum": ">=",
    "maximum": "<=",
    "exclusiveMinimum": ">",
    "exclusiveMaximum": "<",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _same_scalar(expected: Any, value: Any) -> bool:
    """JSON equality of scalars: booleans equal only booleans, 1 equals 1.0."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected is value
    if _is_number(expected):
        return _is_number(value) and bool(expected == value)
    return type(expected) is type(value) and bool(expected == value)


def _one_of_scalars(members: tuple[Any, ...], value: Any) -> bool:
    return any(_same_scalar(m, value) for m in members)


# what each type name admits, as an expression of the value {x}; the exact classes of
# parsed JSON are tried first (a class comparison is cheaper than isinstance)
_NUMBER = "({x}.__class__ is float or {x}.__class__ is int or _is_number({x}))"
_TYPE_TESTS = {
    "object": "isinstance({x}, dict)",
    "array": "isinstance({x}, list)",
    "string": "isinstance({x}, str)",
    "boolean": "isinstance({x}, bool)",
    "null": "{x} is None",
    "number": _NUMBER,
    "integer": (
        "({x}.__class__ is int or (isinstance({x}, int) and not isinstance({x}, bool))"
        " or (isinstance({x}, float) and {x}.is_integer()))"
    ),
}


class _Unsupported(Exception):
    """The schema uses something outside the compiled subset."""


class _Compiler:
    """Writes the source of one function that returns whether a value is valid: a
    ``return False`` at each rule it breaks, in nested blocks, with no call per keyword.
    Constants (names, bounds, members) are passed in as defaults, never written as text."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.variables = 0

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"

    def schema(self, schema: Any, x: str) -> list[str]:
        """Lines (indented from 0) that return False if ``x`` breaks ``schema``."""
        if schema is True:
            return []
        if schema is False:
            return ["return False"]
        if not isinstance(schema, Mapping):
            raise _Unsupported
        if any(k not in _KEYWORDS and k not in _ANNOTATIONS for k in schema):
            raise _Unsupported
        lines: list[str] = []
        # the type first: it rejects most wrong values at once
        if "type" in schema:
            lines.append(f"if not ({self.type(schema['type'], x)}): return False")
        for keyword in ("enum", "const"):
            if keyword in schema:
                members = schema[keyword] if keyword == "enum" else [schema[keyword]]
                if not isinstance(members, list) or not all(_scalar(m) for m in members):
                    raise _Unsupported
                members_name = self.constant(tuple(members))
                lines.append(f"if not _one_of_scalars({members_name}, {x}): return False")
        for keyword, operator in _BOUNDS.items():
            if keyword in schema:
                bound = schema[keyword]
                if not _is_number(bound):
                    raise _Unsupported
                number = _NUMBER.format(x=x)
                test = f"{x} {operator} {self.constant(bound)}"
                lines.append(f"if {number} and not ({test}): return False")
        for keyword, operator in (("minLength", ">="), ("maxLength", "<=")):
            if keyword in schema:
                length = schema[keyword]
                if not isinstance(length, int) or isinstance(length, bool):
                    raise _Unsupported
                test = f"len({x}) {operator} {self.constant(length)}"
                lines.append(f"if isinstance({x}, str) and not ({test}): return False")
        if "items" in schema:
            items = schema["items"]
            if not isinstance(items, Mapping | bool):
                raise _Unsupported
            element = self.variable()
            inner = self.schema(items, element)
            if inner:
                lines.append(f"if isinstance({x}, list):")
                lines.append(f"    for {element} in {x}:")
                lines.extend("        " + line for line in inner)
        if _OBJECT_KEYWORDS & schema.keys():
            inner = self.object(schema, x)
            if inner:
                lines.append(f"if isinstance({x}, dict):")
                lines.extend("    " + line for line in inner)
        return lines

    def type(self, value: Any, x: str) -> str:
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n in _TYPE_TESTS for n in names):
            raise _Unsupported
        return " or ".join(_TYPE_TESTS[n].format(x=x) for n in names)

    def object(self, schema: Mapping[str, Any], x: str) -> list[str]:
        """required, properties and additionalProperties, for ``x`` a dict."""
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            raise _Unsupported
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping):
            raise _Unsupported
        lines = []
        if required:
            missing = " or ".join(f"{self.constant(n)} not in {x}" for n in required)
            lines.append(f"if {missing}: return False")
        for name, subschema in properties.items():
            value = self.variable()
            inner = self.schema(subschema, value)
            if not inner:
                continue
            if name in required:  # known to be there
                lines.append(f"{value} = {x}[{self.constant(name)}]")
                lines.extend(inner)
            else:
                lines.append(f"{value} = {x}.get({self.constant(name)}, _MISSING)")
                lines.append(f"if {value} is not _MISSING:")
                lines.extend("    " + line for line in inner)
        if "additionalProperties" in schema:
            name, value = self.variable(), self.variable()
            inner = self.schema(schema["additionalProperties"], value)
            if inner:
                known = self.constant(frozenset(properties))
                lines.append(f"for {name} in {x}:")
                lines.append(f"    if {name} not in {known}:")
                lines.append(f"        {value} = {x}[{name}]")
                lines.extend("        " + line for line in inner)
        return lines


_MISSING_VALUE = object()


def compile_fast(schema: Any) -> Check | None:
    """A predicate equal to ``jsonschema``'s ``is_valid`` for ``schema``, or ``None`` if the
    schema uses a keyword outside the compiled subset (or nests too deep to compile)."""
    compiler = _Compiler()
    try:
        lines = compiler.schema(schema, "v0")
        constants = compiler.constants
        parameters = "".join(f", {name}={name}" for name in constants)
        source = "\n".join(
            [f"def check(v0{parameters}):", *("    " + line for line in lines), "    return True"]
        )
        namespace: dict[str, Any] = {
            **constants,
            "_MISSING": _MISSING_VALUE,
            "_is_number": _is_number,
            "_one_of_scalars": _one_of_scalars,
        }
        exec(compile(source, f"<schema check {id(schema):x}>", "exec"), namespace)
    except (_Unsupported, SyntaxError, RecursionError, MemoryError):
        return None
    check: Check = namespace["check"]
    return check
