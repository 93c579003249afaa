"""Checking documents against a collection's JSON schema.

``_meta`` belongs to the runtime, not to the user's schema: a schema that closes its
object (``additionalProperties: false``) still admits it, and what ``_meta`` holds is
never checked against the user's rules.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from shardkeeper.runtime.documents import META

_META_SCHEMA: dict[str, Any] = {"type": "object"}
_DEFAULT_DRAFT = jsonschema.Draft202012Validator


class SchemaError(ValueError):
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
        self._validator = cls(_admit_meta(schema))

    def problem(self, document: Any) -> str | None:
        """Why ``document`` fails the schema, or ``None`` if it passes."""
        validator = self._validator
        if validator is None or validator.is_valid(document):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        if error is None:  # is_valid and iter_errors disagree only for broken schemas
            return f"the document does not match the schema of collection {self.name!r}"
        where = error.json_path if error.path else "the document"
        return f"{where} fails the schema of collection {self.name!r}: {error.message}"
