"""The CRD files are well-formed: what the API server checks when they are applied (structural schemas,
list types, defaults, printer columns, names), plus this project's own rules (a description on every
field, patterns Go's RE2 accepts, CEL rules that compile, each with a message).

The structural rules are those of apiextensions-apiserver 1.20 (`schema/validation.go`,
`apis/apiextensions/validation/validation.go`), so a CRD that passes here is not refused by `kubectl
apply -f crds/`; the tier-B tests apply them to a real API server too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import pytest

from llmroute_operator.crds import GROUP, VERSION, load_crds, schema_of

CRDS = {crd["spec"]["names"]["kind"]: crd for crd in load_crds()}
KINDS = list(CRDS)
Schema = dict[str, Any]

# The JSONSchemaProps fields this project uses; anything else is a typo or a construct to review.
KNOWN_KEYWORDS = {
    "type", "description", "format", "default", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "required", "properties", "additionalProperties", "items", "nullable",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
SCALARS = {"string", "integer", "number", "boolean"}
RE2_UNSUPPORTED = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P=")  # lookaround and back-references
PRINTER_TYPES = {"integer", "number", "string", "boolean", "date"}


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path or "<root>", schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")


def problems(schema: Schema) -> Iterator[str]:
    """Every way `schema` breaks a structural-schema rule or this project's rules."""
    if schema.get("type") != "object":
        yield "<root>: type must be object"
    metadata = (schema.get("properties") or {}).get("metadata")
    if metadata is not None and metadata != {"type": "object"}:
        yield ".metadata: must not specify anything other than name and generateName (not even a description)"
    if "additionalProperties" in schema:
        yield "<root>: additionalProperties must not be used at the root"
    for path, node in nodes(schema):
        yield from (f"{path}: {p}" for p in node_problems(path, node))


def node_problems(path: str, node: Schema) -> Iterator[str]:
    unknown = set(node) - KNOWN_KEYWORDS
    if unknown:
        yield f"unknown or unsupported keywords {sorted(unknown)}"
    kind = node.get("type")
    if kind not in TYPES and not node.get("x-kubernetes-preserve-unknown-fields"):
        yield f"type must be one of {sorted(TYPES)}, found {kind!r}"
    if path != ".metadata" and not str(node.get("description", "")).strip():
        yield "has no description (kubectl explain shows it)"
    if "properties" in node and "additionalProperties" in node:
        yield "additionalProperties and properties are mutually exclusive"
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        yield "additionalProperties must be a schema (unknown fields are pruned anyway)"
    if kind == "array" and not isinstance(node.get("items"), dict):
        yield "an array needs one items schema"
    if kind != "object" and ("properties" in node or "additionalProperties" in node or "required" in node):
        yield "properties, additionalProperties and required belong to objects"
    for name in node.get("required", ()):
        if name not in (node.get("properties") or {}):
            yield f"required field {name!r} is not a property"
    for value in node.get("enum", ()):
        if not _has_type(value, kind):
            yield f"enum value {value!r} is not of type {kind}"
    if "pattern" in node:
        if RE2_UNSUPPORTED.search(node["pattern"]):
            yield "pattern uses lookaround or back-references, which Go's RE2 does not support"
        re.compile(node["pattern"])
    if "default" in node:
        yield from (f"default: {p}" for p in default_problems(node))
    yield from list_type_problems(node)
    for rule in node.get("x-kubernetes-validations", ()):
        if set(rule) - {"rule", "message"} or not rule.get("message"):
            yield f"CEL rule {rule.get('rule')!r} needs a message (and nothing else)"
        try:
            celpy.Environment().compile(rule["rule"])
        except celpy.CELParseError as error:
            yield f"CEL rule {rule['rule']!r} does not compile: {error}"


def _has_type(value: object, kind: object) -> bool:
    checks = {"string": str, "integer": int, "number": int | float, "boolean": bool}
    return isinstance(value, checks.get(str(kind), object)) and (kind == "boolean" or not isinstance(value, bool))


def default_problems(node: Schema) -> Iterator[str]:
    default = node["default"]
    try:
        jsonschema.Draft4Validator(node).validate(default)
    except jsonschema.ValidationError as error:
        yield f"{default!r} does not validate against its own schema: {error.message}"
    if isinstance(default, dict) and "properties" in node and set(default) - set(node["properties"]):
        yield f"{default!r} has fields the schema would prune"


def list_type_problems(node: Schema) -> Iterator[str]:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if list_type is None and keys is None:
        return
    if node.get("type") != "array":
        yield "x-kubernetes-list-type needs type array"
        return
    items = node.get("items") or {}
    if list_type not in ("atomic", "set", "map"):
        yield f"x-kubernetes-list-type {list_type!r} is not atomic, set or map"
    if list_type == "set" and items.get("type") not in SCALARS:
        yield "a set's items must be scalars"
    if (list_type == "map") != bool(keys):
        yield "x-kubernetes-list-map-keys go with x-kubernetes-list-type map, and only with it"
    if list_type == "map":
        properties = items.get("properties") or {}
        if items.get("type") != "object":
            yield "a map list's items must be objects"
        for key in keys or ():
            if key not in properties or properties[key].get("type") not in SCALARS:
                yield f"map key {key!r} must be a scalar property of the items"
            elif key not in items.get("required", ()) and "default" not in properties[key]:
                yield f"map key {key!r} must be required or have a default"


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_structural_and_described(kind: str) -> None:
    assert list(problems(schema_of(CRDS[kind]))) == []


def test_the_checks_find_what_the_api_server_refuses() -> None:
    """The checker can fail: each broken schema below is one the API server (or this project) refuses."""
    broken: list[Schema] = [
        {"type": "object", "description": "d", "properties": {"metadata": {"type": "object", "description": "m"}}},
        {"type": "object", "description": "d", "properties": {"a": {"description": "no type"}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "string"}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "object", "description": "d",
                                                                    "properties": {}, "additionalProperties": {}}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "array", "description": "d"}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "string", "description": "d",
                                                                    "minimun": 1}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "integer", "description": "d",
                                                                    "minimum": 1, "default": 0}}},
        {"type": "object", "description": "d", "properties": {"a": {"type": "string", "description": "d",
                                                                    "pattern": "^(?!x)"}}},
        {"type": "object", "description": "d", "properties": {"a": {
            "type": "array", "description": "d", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
            "items": {"type": "object", "description": "d", "properties": {"k": {"type": "string",
                                                                                "description": "d"}}}}}},
        {"type": "object", "description": "d", "x-kubernetes-validations": [{"rule": "self.a >"}]},
    ]
    assert all(list(problems(schema)) for schema in broken)


@pytest.mark.parametrize("kind", KINDS)
def test_the_definition_names_group_version_and_scope(kind: str) -> None:
    crd = CRDS[kind]
    spec = crd["spec"]
    names = spec["names"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}" and spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert names["singular"] == kind.lower() and names["plural"] == f"{kind.lower()}s"
    assert names["listKind"] == f"{kind}List"
    assert names["shortNames"] == [{"LLMRoute": "llmr", "LLMProvider": "llmp"}[kind]]
    assert names["categories"] == ["llm"]  # not "llmroute": a category shadows the resource of that name in kubectl
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    assert "status" in version["schema"]["openAPIV3Schema"]["properties"]


def _resolve(schema: Schema, json_path: str) -> Schema | None:
    """The schema a printer column's JSONPath points at ([?(...)] filters select list items)."""
    node: Schema | None = schema
    for part in re.findall(r"\.([A-Za-z]+)|\[\?\(@\.type==\"[A-Za-z]+\"\)\]", json_path):
        if node is None:
            return None
        if part:
            node = (node.get("properties") or {}).get(part)
        else:
            node = node.get("items") if node.get("type") == "array" else None
    return node


PRINTER_COLUMNS = {
    "LLMRoute": ["Accepted", "Synced", "Spend %", "Table", "Degraded", "Priced", "Age"],
    "LLMProvider": ["Type", "Regions", "Degraded", "Accepted", "Age"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_of_their_type(kind: str) -> None:
    (version,) = CRDS[kind]["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == PRINTER_COLUMNS[kind]
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        assert column["type"] in PRINTER_TYPES
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        target = _resolve(schema, column["jsonPath"])
        assert target is not None, column
        assert target["type"] == {"date": "string"}.get(column["type"], column["type"]), column


def test_the_spec_parts_the_issue_names_are_printed() -> None:
    (route,) = CRDS["LLMRoute"]["spec"]["versions"]
    paths = {c["name"]: c["jsonPath"] for c in route["additionalPrinterColumns"]}
    assert paths["Synced"] == ".status.sidecars.summary"
    assert paths["Spend %"] == ".status.spend.percentOfBudget"
    assert paths["Accepted"] == '.status.conditions[?(@.type=="Accepted")].status'
    assert paths["Priced"] == '.status.conditions[?(@.type=="Priced")].status'


# Bounds the parser does not have: they keep the CEL rules within the API server's cost budget (it refuses
# a CRD whose rules could cost too much on a maximal object). No real configuration comes near them.
SCHEMA_ONLY_BOUNDS = {
    ("LLMProvider", ".spec.endpoints", "maxItems"): 64,
    ("LLMProvider", ".spec.endpoints[].url", "maxLength"): 2048,
    ("LLMProvider", ".spec.credentials.env", "maxLength"): 253,
    ("LLMRoute", ".spec.tiers", "maxProperties"): 64,
    ("LLMRoute", ".spec.tiers.*.targets", "maxItems"): 64,
    ("LLMRoute", ".spec.defaultTier", "maxLength"): 253,
    ("LLMRoute", ".spec.rules", "maxItems"): 128,
    ("LLMRoute", ".spec.rules[].name", "maxLength"): 253,
    ("LLMRoute", ".spec.rules[].tier", "maxLength"): 253,
    ("LLMRoute", ".spec.fallback.fallbackTiers", "maxItems"): 64,
    ("LLMRoute", ".spec.fallback.fallbackTiers[]", "maxLength"): 253,
    ("LLMRoute", ".spec.experiments", "maxItems"): 32,
    ("LLMRoute", ".spec.experiments[].tier", "maxLength"): 253,
    ("LLMRoute", ".spec.experiments[].targets", "maxItems"): 64,
}


def test_every_upper_bound_the_parser_lacks_is_listed() -> None:
    found = {(kind, path, keyword): node[keyword] for kind in KINDS
             for path, node in nodes(schema_of(CRDS[kind]))
             for keyword in ("maxItems", "maxLength", "maxProperties") if keyword in node
             and not (keyword == "maxProperties" and node[keyword] == node.get("minProperties") == 1)}
    assert found == SCHEMA_ONLY_BOUNDS  # (min/maxProperties 1 is the parser's "exactly one of")
