"""One truth: the CRDs in crds/ and the sidecar's parser give every document the same verdict.

Every document of the parser's tests and of examples/ goes through both: the sidecar's `spec` parser,
and what the API server does on create (prune, default, the openAPIV3Schema, list types, CEL rules; see
apiserver.py). A valid document must be stored and parse, from what is stored, to exactly the spec the
parser makes of the original (so the CRD's defaults are the table's). An invalid one must be refused by
both, unless every problem the parser finds is one that a schema cannot see: those are listed in
NOT_EXPRESSIBLE with the reason, and the operator reports them in `Accepted=False`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmroute_proxy.spec import SpecError, parse_documents
from tests.crds.apiserver import admit
from tests.proxy.spec_cases import (
    AZURE_VERSIONS,
    BAD_AZURE_BLOCKS,
    BAD_VERTEX_URLS,
    GEMINI_VERSIONS,
    INVALID,
    MISTAKES_WITH_A_SECRET,
    PROVIDER,
    ROUTE,
    VERTEX_URLS,
    documents,
    every_section_documents,
    openai_doc,
    set_path,
)
from tests.proxy.test_spec_tls import BAD_TLS, CA
from tests.proxy.test_spec_tls import provider as tls_provider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Documents = list[dict[str, Any]]


def as_applied(value: object) -> Any:
    """What reaches the API server: kubectl sends JSON, so an unquoted YAML date is a string."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, date) else str(v)))


def with_spec(doc: dict[str, Any], **changes: object) -> dict[str, Any]:
    for key, value in changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


OPENAI_TIERS = ("default", "flex", "priority", "scale")


def service_tiers(doc: dict[str, Any], tiers: tuple[str, ...]) -> dict[str, Any]:
    """`doc` with a price list for each of `tiers` on its first model, each with its own long context."""
    lists = {tier: {"inputPerMTok": 1 + n, "outputPerMTok": 8 + n, "cachedInputPerMTok": 0.1, "cacheWritePerMTok": 1.5,
                    "cacheWrite1hPerMTok": 2, "longContext": {"aboveInputTokens": 200000, "inputPerMTok": 9 + n,
                                                              "outputPerMTok": 30}} for n, tier in enumerate(tiers)}
    doc["spec"]["models"][0]["pricing"] = {"inputPerMTok": 1, "outputPerMTok": 8, "serviceTiers": lists}
    return doc


def renamed(doc: dict[str, Any], name: str) -> dict[str, Any]:
    doc["metadata"]["name"] = name
    return doc


VALID: dict[str, Callable[[], Documents]] = {
    "the valid set": documents,
    "every section of an LLMRoute": every_section_documents,
    "openai-compatible without credentials": lambda: [
        with_spec(openai_doc(), type="openai-compatible", credentials=None)],
    "a file credential": lambda: [with_spec(openai_doc(), credentials={"file": "/var/run/keys/openai"})],
    **{f"a vertex endpoint {url}": (lambda url=url: [with_spec(  # type: ignore[misc]
        openai_doc(), type="vertex", endpoints=[{"region": "r", "url": url}])]) for url in VERTEX_URLS},
    "an openai-compatible server that speaks the Responses API": lambda: [
        with_spec(openai_doc(), type="openai-compatible", openaiCompatible={"responsesAPI": True})],
    **{f"azure apiVersion {value}": (lambda value=value: [with_spec(  # type: ignore[misc]
        openai_doc(), type="azure-openai", azure={"apiVersion": value})]) for value, _ in AZURE_VERSIONS},
    **{f"gemini apiVersion {version}": (lambda version=version: [with_spec(  # type: ignore[misc]
        openai_doc(), type="gemini", gemini={"apiVersion": version})])
       for version, errors in GEMINI_VERSIONS if not errors},
    "service tier prices of each provider type": lambda: [
        service_tiers(with_spec(openai_doc(), type="azure-openai", azure={"apiVersion": "2024-10-21"}), OPENAI_TIERS),
        service_tiers(renamed(with_spec(openai_doc(), type="anthropic"), "claude-main"), ("standard", "priority")),
        service_tiers(renamed(with_spec(
            openai_doc(), type="bedrock", endpoints=[{"region": "us-east-1", "url": "https://bedrock-runtime.us-east-1.amazonaws.com"}],
            models=[{"name": "us.amazon.nova-pro-v1:0"}]), "nova"), ("default", "flex", "priority", "reserved"))],
    "a bedrock provider of Claude models and inference profiles": lambda: [with_spec(
        openai_doc(), type="bedrock", endpoints=[{"region": "us-east-1", "url": "https://bedrock-runtime.us-east-1.amazonaws.com"}],
        credentials={"secretRef": {"name": "bedrock", "key": "api-key"}},
        models=[{"name": "anthropic.claude-sonnet-4-5-20250929-v1:0"},
                {"name": "us.anthropic.claude-haiku-4-5-20251001-v1:0"}])],
    **{f"{kind} with the pod's own identity": (lambda kind=kind, url=url, model=model: [with_spec(  # type: ignore[misc]
        openai_doc(), type=kind, credentials={"workloadIdentity": {}},
        endpoints=[{"region": "r", "url": url}], models=[{"name": model}])])
       for kind, url, model in (("vertex", VERTEX_URLS[0], "gemini-2.5-pro"),
                                ("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com",
                                 "anthropic.claude-sonnet-4-5-20250929-v1:0"))},
    "tls caBundle": lambda: [tls_provider({"caBundle": CA.cert_pem})],
    "tls caFile": lambda: [tls_provider({"caFile": "/etc/llmroute/ca.pem"})],
    **{f"examples/{path.name}": (lambda path=path: [  # type: ignore[misc]
        d for d in yaml.safe_load_all(path.read_text()) if d is not None]) for path in sorted(EXAMPLES.glob("*.yaml"))},
}


@pytest.mark.parametrize("name", list(VALID))
def test_a_valid_document_is_stored_and_parses_to_the_same_spec(name: str) -> None:
    docs = as_applied(VALID[name]())
    original = parse_documents(docs)
    assert original.errors == (), "the parser must accept it"
    verdicts = [admit(doc) for doc in docs]
    assert [v.errors for v in verdicts] == [[] for _ in docs]
    assert [v.pruned for v in verdicts] == [[] for _ in docs]
    assert parse_documents([v.stored for v in verdicts]) == original


def test_every_example_file_is_checked() -> None:
    assert [n for n in VALID if n.startswith("examples/")] == [f"examples/{p.name}" for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 1


# --- invalid documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unexpressible:
    pattern: str  # matches the parser's message
    reason: str
    pruned: bool = False  # the API server drops the field and stores the rest


NOT_EXPRESSIBLE = [
    Unexpressible(r"^unknown field", "an unknown field is pruned by the API server, not refused (Kubernetes 1.20 "
                  "has no strict field validation); the stored object lacks it", pruned=True),
    Unexpressible(r"^unknown provider '", "references another resource: the LLMProviders of the namespace"),
    Unexpressible(r"^model '.*' is not listed by provider '", "references another resource: the provider's models"),
    Unexpressible(r"^provider '.*' is invalid \(see its own errors\)", "references another resource's validity"),
    Unexpressible(r"^type \S+ answers report no (tier|service tier)", "compares each model's tier names with the "
                  "provider's type: a CEL rule over every model of the unbounded models list is beyond the API "
                  "server's cost budget for a rule"),
    Unexpressible(r"^is not a valid PEM certificate bundle", "parsing PEM/DER: a schema sees only text"),
    Unexpressible(r"^holds no CA certificate", "reading X.509 basicConstraints: a schema sees only text"),
]


@dataclass(frozen=True)
class Case:
    id: str
    docs: Documents
    index: int


def _mutated(index: int, path: str, value: object) -> Documents:
    docs = documents()
    set_path(docs[index], path, value)
    return docs


def invalid_cases() -> list[Case]:
    cases = [Case(f"{path}={value!r}"[:80], _mutated(index, path, value), index)
             for index, path, value, _, _ in INVALID]
    cases += [Case(f"secret mistake {n}", _mutated(index, path, value), index)
              for n, (index, path, value) in enumerate(MISTAKES_WITH_A_SECRET)]
    cases += [Case(f"azure {block!r}", [with_spec(openai_doc(), type="azure-openai", azure=block)], 0)
              for block, _, _ in BAD_AZURE_BLOCKS]
    cases += [Case(f"gemini {version}", [with_spec(openai_doc(), type="gemini", gemini={"apiVersion": version})], 0)
              for version, errors in GEMINI_VERSIONS if errors]
    cases += [Case(f"tls {tls!r}"[:60], [tls_provider(tls)], 0) for tls, _ in BAD_TLS]
    cases += [Case(f"vertex {url}", [with_spec(openai_doc(), type="vertex", endpoints=[{"region": "r", "url": url}])],
                   0) for url in BAD_VERTEX_URLS]
    cases.append(Case("a route naming an invalid provider", _mutated(PROVIDER, "spec.type", "opnai"), ROUTE))
    cases.append(Case("a dated azure apiVersion with a v1 url", [with_spec(
        openai_doc(), type="azure-openai", azure={"apiVersion": "2024-10-21"},
        endpoints=[{"region": "eu", "url": "https://r.openai.azure.com/openai/v1"}])], 0))
    return cases


CASES = invalid_cases()


def own_errors(docs: Documents, index: int) -> list[SpecError]:
    doc = docs[index]
    name = doc.get("metadata", {}).get("name")
    return [e for e in parse_documents(docs).errors if e.kind == doc["kind"] and e.name == name]


def unexpressible(error: SpecError) -> Unexpressible | None:
    return next((u for u in NOT_EXPRESSIBLE if re.search(u.pattern, error.message)), None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_invalid_document_is_refused_by_both_unless_no_schema_can_see_why(case: Case) -> None:
    docs = as_applied(case.docs)
    errors = own_errors(docs, case.index)
    assert errors, "the parser must refuse it"
    verdict = admit(docs[case.index])
    hidden = [unexpressible(e) for e in errors]
    if not all(hidden):
        assert not verdict.accepted, f"the CRD stores what the parser refuses: {[str(e) for e in errors]}"
        return
    assert verdict.accepted, verdict.errors
    stored = [*docs[:case.index], verdict.stored, *docs[case.index + 1:]]
    expected = [e for e, why in zip(errors, hidden, strict=True) if why is not None and not why.pruned]
    assert own_errors(stored, case.index) == expected  # pruning dropped exactly the unknown fields


def test_every_listed_exception_is_still_needed() -> None:
    used = {unexpressible(e) for case in CASES for e in own_errors(as_applied(case.docs), case.index)}
    assert set(NOT_EXPRESSIBLE) <= used
