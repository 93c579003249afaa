"""CustomResourceDefinitions generated from the models.

Pydantic writes a JSON schema of each resource; this module turns it into the structural
OpenAPI v3 schema that apiextensions.k8s.io/v1 requires: every ``$ref`` inlined, optional
fields as plain properties, free-form objects marked to keep their fields, keywords that
Kubernetes does not know dropped, and descriptions reflowed. The models carry the rest
(patterns, bounds, enums, defaults, ``x-kubernetes-*`` extensions, CEL rules) and it passes
through unchanged.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from shardkeeper.api.meta import CATEGORY, GROUP, VERSION, PrinterColumn, Resource

Schema = dict[str, Any]

# JSON-schema keywords pydantic may write that a CRD schema has no place for.
_DROPPED = frozenset({"title", "$defs", "examples", "propertyNames", "discriminator"})
_VALIDATIONS = "x-kubernetes-validations"


def describe(text: str) -> str:
    """A docstring as a description: lines joined into paragraphs, paragraphs kept apart."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _merge(base: Schema, overlay: Schema) -> Schema:
    """``overlay`` (a field's own keywords) over ``base`` (its type's schema); CEL rules of
    both are kept, the type's first."""
    merged = {**base, **overlay}
    if _VALIDATIONS in base and _VALIDATIONS in overlay:
        merged[_VALIDATIONS] = base[_VALIDATIONS] + overlay[_VALIDATIONS]
    return merged


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Replace references and nullable unions by the schema they stand for."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = defs[ref.rsplit("/", 1)[-1]]
        return _resolve(_merge(target, node), defs)
    all_of = node.pop("allOf", None)
    if all_of is not None:
        if len(all_of) != 1:
            raise ValueError(f"allOf with {len(all_of)} members has no structural form")
        return _resolve(_merge(all_of[0], node), defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        rest = [s for s in any_of if s != {"type": "null"}]
        if len(rest) < len(any_of):
            # Optional[X]: absence is how a CRD says "unset", so X alone.
            del node["anyOf"]
            if node.get("default", ...) is None:
                del node["default"]
            if len(rest) == 1:
                return _resolve(_merge(rest[0], node), defs)
            node["anyOf"] = rest
    return node


def _is_empty_collection_default(node: Schema) -> bool:
    # Empty list and map defaults add nothing but noise to stored objects; an object with
    # properties keeps its "default: {}", which makes the API server fill in its fields.
    default = node.get("default", ...)
    if default == []:
        return True
    return default == {} and "properties" not in node


def structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """The structural form of one (sub)schema."""
    node = _resolve(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = describe(value)
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "anyOf":
            out[key] = [structural(sub, defs) for sub in value]
        elif key == "patternProperties":
            # A map whose keys pydantic constrains: Kubernetes has no patternProperties, so
            # the keys are checked by the CEL rules of the model that holds the map.
            (value_schema,) = value.values()
            out["additionalProperties"] = structural(value_schema, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # extra="forbid": a structural schema prunes unknown fields anyway
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = structural(value, defs)
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if _is_empty_collection_default(out):
        del out["default"]
    if "type" not in out and not _untyped_allowed(out):
        raise ValueError(f"schema without a type has no structural form: {node}")
    return _ordered(out)


# Keywords in the order a reader wants them; extensions after, in name order.
_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "anyOf",
    "required",
    "properties",
    "additionalProperties",
    "items",
)


def _ordered(node: Schema) -> Schema:
    rank = {key: i for i, key in enumerate(_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(_ORDER)), kv[0])))


def _untyped_allowed(node: Schema) -> bool:
    return bool(
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    )


def _part_schema(kind: type[Resource], part: str) -> Schema:
    full = kind.model_json_schema(by_alias=True, mode="validation")
    defs = full.get("$defs", {})
    return structural(full["properties"][part], defs)


def openapi_schema(kind: type[Resource]) -> Schema:
    """The openAPIV3Schema of one kind."""
    spec = _part_schema(kind, "spec")
    status = _part_schema(kind, "status")
    status.pop("default", None)
    return {
        "description": describe(kind.__doc__ or kind.KIND),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this object: shardkeeper.io/v1alpha1.",
                "type": "string",
            },
            "kind": {
                "description": f"Kind of this object: {kind.KIND}.",
                "type": "string",
            },
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": kind.NAME_MAX_LENGTH,
                        "pattern": kind.NAME_PATTERN,
                    }
                },
            },
            "spec": spec,
            "status": status,
        },
    }


def crd(kind: type[Resource]) -> Schema:
    """The CustomResourceDefinition of one kind."""
    singular = kind.KIND.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.KIND,
                "listKind": f"{kind.KIND}List",
                "plural": kind.PLURAL,
                "singular": singular,
                "shortNames": list(kind.SHORT_NAMES),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_printer_column(c) for c in kind.PRINTER_COLUMNS],
                }
            ],
        },
    }


def _printer_column(column: PrinterColumn) -> Schema:
    out: Schema = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
        "description": column.description,
    }
    if column.priority:
        out["priority"] = column.priority
    return out


def crds(kinds: tuple[type[Resource], ...]) -> dict[str, Schema]:
    """File name -> CRD, for every kind."""
    return {f"{GROUP}_{k.PLURAL}.yaml": copy.deepcopy(crd(k)) for k in kinds}
