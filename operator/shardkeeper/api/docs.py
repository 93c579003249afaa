"""The API reference (docs/api.md), rendered from the same schemas as the CRDs.

Every description, default, constraint and rule in it is read from the generated CRD, so
the reference says exactly what the API server enforces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from shardkeeper.api.crd import Schema, crd, describe
from shardkeeper.api.meta import API_VERSION, CATEGORY, Resource

_INTRO = f"""\
# Shardkeeper API reference

<!-- Generated from the models in operator/shardkeeper/api by `make crds`
     (python -m shardkeeper.api.generate). Do not edit: a test fails when it drifts. -->

All kinds are in API version `{API_VERSION}`, are namespaced, and belong to the category
`{CATEGORY}` (so `kubectl get {CATEGORY}` lists them all). A Task refers to its
StorageMapping and Collections by name, in its own namespace. Working manifests are in
[`examples/`](../examples/).

## Conventions

- **Validation.** The API server refuses an invalid object and names the field: patterns,
  enums and bounds come from the schema, and rules that span fields are CEL rules
  (listed under each kind). The Python models in `shardkeeper.api` check the same rules,
  so the CLI refuses the same input.
- **Defaults** are applied by the API server and are the models' defaults. A field whose
  default depends on another field has no schema default: the description says what
  unset means. The one such field is a Task's `spec.shards.maxTxnDuration`: unset means
  1s for captures and derivations and 5m for materializations, as in Flow. (A schema
  default cannot depend on `spec.type`.) The operator reads the effective value with
  `TaskSpec.effective_max_txn_duration()`; likewise `spec.shards.scaling.maxShards`
  unset means `minShards` (`Scaling.effective_max_shards()`).
- **Durations** are Go/Kubernetes durations: one or more of a number and a unit among
  `ns`, `us`, `ms`, `s`, `m` and `h`, such as `500ms`, `1s`, `5m` or `1h30m`. The models
  print them in one canonical form: the non-zero units from hours down (`90s` is printed
  `1m30s`, `1.5s` is printed `1s500ms`, zero is `0s`).
- **Range bounds** (`keyBegin`, `keyEnd`, `rClockBegin`, `rClockEnd`) are 32-bit values
  written as 8 lowercase hex digits, `00000000` to `ffffffff`, and ranges are inclusive.
- **Names** of Tasks and Shards are DNS-1123 labels; a Task's name has at most 34
  characters, because a shard is named `<task>-<keyBegin>-<rClockBegin>` and that name is
  reused for its StatefulSet and pods. Other references are DNS-1123 names.
- **Immutable** fields are enforced by transition rules: an update that changes them is
  refused.
- **Status** is a subresource and has `conditions` in the shape of `metav1.Condition`
  and `observedGeneration`.
"""


def _type_name(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity (integer or string)"
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type_name(node['items'])}"
    if kind == "object" and "additionalProperties" in node:
        return f"map of string to {_type_name(node['additionalProperties'])}"
    if kind == "object" and "properties" not in node:
        return "object (any fields)"
    if "format" in node:
        return f"{kind} ({node['format']})"
    return str(kind or "any")


def _constraints(node: Schema, required: bool) -> list[str]:
    notes = []
    if required:
        notes.append("required")
    if "enum" in node:
        notes.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "pattern" in node:
        notes.append(f"pattern `{node['pattern']}`")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min entries"),
        ("maxProperties", "max entries"),
    ):
        if key in node:
            notes.append(f"{label} {node[key]}")
    if node.get("x-kubernetes-list-type") == "set":
        notes.append("no duplicates")
    rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
    if "self == oldSelf" in rules:
        notes.append("immutable")
    return notes


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n\n", "<br><br>").replace("\n", " ")


def _fields(node: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    """(path, schema, required) for every field below ``node``, depth first."""
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        here = f"{path}.{name}"
        yield here, sub, name in required
        yield from _descend(sub, here)


def _descend(node: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        yield from _fields(node["items"], path + "[]")
    elif "properties" in node:
        yield from _fields(node, path)
    elif (
        isinstance(node.get("additionalProperties"), dict)
        and "properties" in (node["additionalProperties"])
    ):
        yield from _fields(node["additionalProperties"], path + "[*]")


def _rules(node: Schema, path: str) -> Iterator[tuple[str, dict[str, str]]]:
    for entry in node.get("x-kubernetes-validations", []):
        yield path + entry.get("fieldPath", ""), entry
    for name, sub in node.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _rules(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _rules(node["additionalProperties"], path + "[*]")


def _field_table(root: Schema, part: str) -> list[str]:
    lines = [
        "| Field | Type | Default | Constraints | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path, node, required in _fields(root["properties"][part], part):
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        lines.append(
            f"| `{path}` | {_type_name(node)} | {default} | "
            f"{_cell('; '.join(_constraints(node, required)))} | "
            f"{_cell(node.get('description', ''))} |"
        )
    return lines


def _kind_section(kind: type[Resource]) -> list[str]:
    definition: dict[str, Any] = crd(kind)
    version = definition["spec"]["versions"][0]
    root: Schema = version["schema"]["openAPIV3Schema"]
    names = definition["spec"]["names"]
    lines = [
        f"## {kind.KIND}",
        "",
        describe(kind.__doc__ or ""),
        "",
        f"- Resource: `{names['plural']}.{definition['spec']['group']}`; short names: "
        + ", ".join(f"`{n}`" for n in names["shortNames"])
        + f"; name: DNS-1123, at most {kind.NAME_MAX_LENGTH} characters.",
        f"- Example: `kubectl get {names['plural']}` / `kubectl explain {names['singular']}.spec`.",
        "",
        "### Columns",
        "",
        "| Column | JSONPath | Shown | Description |",
        "| --- | --- | --- | --- |",
    ]
    for column in version["additionalPrinterColumns"]:
        shown = "with `-o wide`" if column.get("priority") else "always"
        lines.append(
            f"| {column['name']} | `{_cell(column['jsonPath'])}` | {shown} | "
            f"{_cell(column['description'])} |"
        )
    for part in ("spec", "status"):
        lines += ["", f"### {part}", "", _cell(root["properties"][part].get("description", ""))]
        lines += ["", *_field_table(root, part)]
    rules = list(_rules(root["properties"]["spec"], "spec"))
    if rules:
        lines += [
            "",
            "### Rules",
            "",
            "Checked by the API server (CEL) on every create and update; a rule that uses "
            "`oldSelf` compares an update with the stored object.",
            "",
            "| Field | Refused with | Rule |",
            "| --- | --- | --- |",
        ]
        for path, entry in rules:
            lines.append(f"| `{path}` | {_cell(entry['message'])} | `{_cell(entry['rule'])}` |")
    return [*lines, ""]


def render_reference(kinds: tuple[type[Resource], ...]) -> str:
    lines = [_INTRO, "## Kinds", ""]
    lines += [f"- [{k.KIND}](#{k.KIND.lower()})" for k in kinds]
    lines.append("")
    for kind in kinds:
        lines += _kind_section(kind)
    return "\n".join(lines).rstrip("\n") + "\n"
