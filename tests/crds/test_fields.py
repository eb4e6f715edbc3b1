"""Every field the sidecar's parser knows is in the CRD's schema, and every field of the schema is one the
parser knows: a field added to one and not the other fails here.

The parser's fields are taken from the parser itself: each mapping it opens names the keys it allows
(the same list its "unknown field" errors print). Valid documents that use every section are parsed with
that recorded; the schema is walked; the two sets of paths must be equal, except for the parts listed in
SCHEMA_ONLY with the reason.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from llmroute_proxy.spec import parse_documents
from llmroute_proxy.spec.fields import Fields
from tests.crds.apiserver import OBJECT_FIELDS, schema_for
from tests.crds.test_agreement import VALID, as_applied
from tests.proxy.spec_cases import openai_doc

# Maps the parser reads without opening them as a mapping of known fields: any key, one kind of value.
PARSER_MAPS = {
    "LLMRoute:spec.tiers",  # tier name → tier
    "LLMRoute:spec.podSelector.matchLabels",  # label → value
}

SCHEMA_ONLY = {
    "LLMProvider:status": "written by the operator; the parser ignores status",
    "LLMRoute:status": "written by the operator; the parser ignores status",
    "LLMRoute:spec.podSelector.matchExpressions[]": "a Kubernetes LabelSelectorRequirement, read by the "
                                                    "operator; the sidecar ignores podSelector",
}


def probe_sets() -> list[list[dict[str, Any]]]:
    """Valid sets of documents that, together, open every mapping the parser knows."""
    secret_ref = openai_doc()
    secret_ref["spec"].update(credentials={"secretRef": {"name": "keys", "key": "openai"}},
                              limits={"requestsPerMinute": 10, "tokensPerMinute": 1000, "maxConcurrency": 2})
    return [as_applied([secret_ref]), *(as_applied(VALID[name]()) for name in VALID)]


def _normal(kind: str, path: str) -> str:
    path = re.sub(r"\[\d+\]", "[]", path)
    if kind == "LLMRoute":
        path = re.sub(r'^spec\.tiers(\.[^.\[]+|\["[^"]*"\])', "spec.tiers.*", path)
    return f"{kind}:{path}"


def parser_fields(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Path of each mapping the parser opened → the keys it allows there."""
    opened: dict[str, set[str]] = {path: {"*"} for path in PARSER_MAPS}
    original = Fields.__init__

    def recording(self: Fields, sink: Any, path: str, value: object, allowed: Sequence[str],
                  *, redact: bool = False) -> None:
        opened.setdefault(_normal(sink.kind, path), set()).update(allowed)
        original(self, sink, path, value, allowed, redact=redact)

    monkeypatch.setattr(Fields, "__init__", recording)
    for docs in probe_sets():
        assert parse_documents(docs).errors == ()
    return opened


def schema_fields(kind: str, schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, set[str]]]:
    """Path of each object with properties → its property names, and of each map → {'*'}."""
    key = f"{kind}:{path}"
    if key in SCHEMA_ONLY:
        return
    if "properties" in schema:
        own = set(OBJECT_FIELDS) if not path else set()  # every object has them; no schema may describe metadata
        yield key, set(schema["properties"]) | own
        for name, sub in schema["properties"].items():
            yield from schema_fields(kind, sub, f"{path}.{name}" if path else name)
    elif isinstance(schema.get("additionalProperties"), dict):
        yield key, {"*"}
        yield from schema_fields(kind, schema["additionalProperties"], f"{path}.*")
    elif isinstance(schema.get("items"), dict):
        yield from schema_fields(kind, schema["items"], f"{path}[]")


def differences(parser: dict[str, set[str]], schemas: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    schema = {path: names for kind, root in schemas.items() for path, names in schema_fields(kind, root)}
    return {path: {"parser only": sorted(parser.get(path, set()) - schema.get(path, set())),
                   "schema only": sorted(schema.get(path, set()) - parser.get(path, set()))}
            for path in parser.keys() | schema.keys() if parser.get(path, set()) != schema.get(path, set())}


def crd_schemas() -> dict[str, dict[str, Any]]:
    return {kind: copy.deepcopy(schema_for(kind)) for kind in ("LLMProvider", "LLMRoute")}


def test_the_parser_and_the_schema_know_the_same_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    assert differences(parser_fields(monkeypatch), crd_schemas()) == {}


def test_a_field_on_one_side_only_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = parser_fields(monkeypatch)
    schemas = crd_schemas()
    del schemas["LLMProvider"]["properties"]["spec"]["properties"]["limits"]["properties"]["maxConcurrency"]
    parser["LLMRoute:spec.rules[].when"].add("hasImages")
    schemas["LLMRoute"]["properties"]["spec"]["properties"]["budget"]["properties"]["currency"] = {"type": "string"}
    assert differences(parser, schemas) == {
        "LLMProvider:spec.limits": {"parser only": ["maxConcurrency"], "schema only": []},
        "LLMRoute:spec.rules[].when": {"parser only": ["hasImages"], "schema only": []},
        "LLMRoute:spec.budget": {"parser only": [], "schema only": ["currency"]},
    }


def test_every_schema_only_part_exists() -> None:
    def paths(kind: str, schema: dict[str, Any], path: str) -> Iterator[str]:
        yield f"{kind}:{path}"
        for name, sub in (schema.get("properties") or {}).items():
            yield from paths(kind, sub, f"{path}.{name}" if path else name)
        if isinstance(schema.get("items"), dict):
            yield from paths(kind, schema["items"], f"{path}[]")

    known = {p for kind, root in crd_schemas().items() for p in paths(kind, root, "")}
    assert set(SCHEMA_ONLY) <= known
