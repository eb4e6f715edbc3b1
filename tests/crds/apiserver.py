"""What a Kubernetes API server does with a custom resource before it stores it, for the CRDs in crds/.

The order is apiextensions-apiserver's: the status is dropped on create (the status subresource owns it),
unknown fields are pruned (structural schemas), nulls of fields that are not nullable are dropped, then
defaults are applied top-down (a defaulted object gets its own defaults), and the result is validated:
metadata.name, the openAPIV3Schema (OpenAPI v3.0, that is JSON Schema draft 4 with a boolean
`exclusiveMinimum`), the list types (`x-kubernetes-list-type` map and set: unique keys and items) and the
CEL rules (`x-kubernetes-validations`, evaluated by Kubernetes 1.25 and later; the 1.20 API server of the
tier-B tests ignores them, so `with_cel=False` models it).

CEL values are typed by the schema as the API server types them: `integer` is int, `number` is double.
The Kubernetes list library's `sum()` is registered, as the API server has it (1.24 and later).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

from llmroute_operator.crds import load_crds, schema_of

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
Schema = dict[str, Any]
# The API server's own fields of every object, whatever the schema says (a 1.20 server refuses a schema
# that describes metadata at all, even as a bare `type: object`).
OBJECT_FIELDS = ("apiVersion", "kind", "metadata")


@dataclass
class Verdict:
    """`stored` is the object as the API server would store it, None when it refuses it."""

    stored: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # paths of the unknown fields dropped

    @property
    def accepted(self) -> bool:
        return self.stored is not None


@cache
def crds_by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in load_crds()}


def schema_for(kind: str) -> Schema:
    return schema_of(crds_by_kind()[kind])


def admit(document: object, *, with_cel: bool = True) -> Verdict:
    """Create `document` as the API server would: the stored object, or every reason it is refused."""
    if not isinstance(document, dict):
        return Verdict(None, ["the body is not an object"])
    kind = document.get("kind")
    if kind not in crds_by_kind():
        return Verdict(None, [f"no matches for kind {kind!r}"])
    crd = crds_by_kind()[kind]
    versions = {f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v["served"]}
    if document.get("apiVersion") not in versions:
        return Verdict(None, [f"no matches for kind {kind!r} in version {document.get('apiVersion')!r}"])
    schema = schema_for(kind)
    obj = copy.deepcopy(document)
    obj.pop("status", None)
    pruned: list[str] = []
    prune(obj, schema, "", pruned)
    apply_defaults(obj, schema)
    errors = [*metadata_errors(obj), *schema_errors(obj, schema), *list_type_errors(obj, schema, "")]
    if with_cel:
        errors += cel_errors(obj, schema, "")
    return Verdict(None if errors else obj, errors, pruned)


def metadata_errors(obj: dict[str, Any]) -> Iterator[str]:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        yield "metadata.name: Required value: name or generateName is required"
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        yield f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of ..."


def prune(value: object, schema: Schema, path: str, pruned: list[str]) -> None:
    """Drop unknown fields and non-nullable nulls, in place. `metadata` is the API server's own."""
    if isinstance(value, dict) and schema.get("type") == "object":
        if path == ".metadata" or schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        properties = schema.get("properties")
        if properties is not None:
            for key in list(value):
                if path == "" and key in OBJECT_FIELDS:
                    continue
                if key not in properties:
                    pruned.append(f"{path}.{key}")
                    del value[key]
                elif value[key] is None and not properties[key].get("nullable"):
                    del value[key]  # then defaulted, when the field has a default
                else:
                    prune(value[key], properties[key], f"{path}.{key}", pruned)
        elif isinstance(schema.get("additionalProperties"), dict):
            extra = schema["additionalProperties"]
            for key in list(value):
                if value[key] is None and not extra.get("nullable") and "default" not in extra:
                    del value[key]
                else:
                    prune(value[key], extra, f"{path}.{key}", pruned)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            prune(item, schema["items"], f"{path}[{index}]", pruned)


def apply_defaults(value: object, schema: Schema) -> None:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for item in value.values():
                apply_defaults(item, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


def schema_errors(obj: dict[str, Any], schema: Schema) -> Iterator[str]:
    validator = jsonschema.Draft4Validator(schema)
    for error in validator.iter_errors(obj):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        yield f"{where}: {error.validator}: {error.message[:200]}"


def list_type_errors(value: object, schema: Schema, path: str) -> Iterator[str]:
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        seen: list[object] = []
        for index, item in enumerate(value):
            if list_type == "set":
                key: object = item
            elif list_type == "map" and isinstance(item, dict):
                key = tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"])
            else:
                continue
            if key in seen:
                yield f"{path}[{index}]: Duplicate value: {key!r}"
            seen.append(key)
    for sub_value, sub_schema, sub_path in _children(value, schema, path):
        yield from list_type_errors(sub_value, sub_schema, sub_path)


def _children(value: object, schema: Schema, path: str) -> Iterator[tuple[object, Schema, str]]:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield item, sub, f"{path}.{key}"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield item, schema["items"], f"{path}[{index}]"


# --- CEL -------------------------------------------------------------------------------------------


def _sum(values: celtypes.ListType) -> Any:
    """The Kubernetes list library's `<list>.sum()`."""
    if any(isinstance(v, celtypes.DoubleType) for v in values):
        return celtypes.DoubleType(sum(float(v) for v in values))
    return celtypes.IntType(sum(int(v) for v in values))


_ENV = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule), functions={"sum": _sum})


def to_cel(value: object, schema: Schema | None) -> Any:
    kind = (schema or {}).get("type")
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int) and kind != "number" and -(2**63) <= value < 2**63:
        return celtypes.IntType(value)
    if isinstance(value, int | float):
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = (schema or {}).get("items")
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, dict):
        properties = (schema or {}).get("properties") or {}
        extra = (schema or {}).get("additionalProperties")
        return celtypes.MapType({
            celtypes.StringType(k): to_cel(v, properties.get(k, extra if isinstance(extra, dict) else None))
            for k, v in value.items()
        })
    raise TypeError(f"no CEL value for {type(value).__name__}")


def evaluate(rule: str, value: object, schema: Schema) -> bool | str:
    """True, False, or the evaluation error (which the API server reports as a refusal too)."""
    try:
        result = _program(rule).evaluate({"self": to_cel(value, schema)})
    except celpy.CELEvalError as error:
        return str(error)
    if isinstance(result, celpy.CELEvalError):
        return str(result)
    return bool(result)


def cel_errors(value: object, schema: Schema, path: str) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations") or ():
        outcome = evaluate(rule["rule"], value, schema)
        if outcome is not True:
            detail = rule.get("message", rule["rule"]) if outcome is False else f"rule error: {outcome}"
            yield f"{path}: Invalid value: {schema.get('type')!r}: {detail}"
    for sub_value, sub_schema, sub_path in _children(value, schema, path):
        yield from cel_errors(sub_value, sub_schema, sub_path)
