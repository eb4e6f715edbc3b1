"""The formats the schemas write as regular expressions accept exactly the strings the parser accepts.

A pattern is a second spelling of a rule the parser states in Python; property-based tests compare the
two on many strings near the edge (alphabets of the characters that matter), field by field: the
field's schema node (its pattern, enum, and its own CEL rules) against the parser's verdict at that path.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_proxy.spec import parse_documents
from tests.crds.apiserver import evaluate, schema_for
from tests.crds.test_agreement import with_spec
from tests.proxy.spec_cases import PROVIDER, ROUTE, documents, openai_doc, set_path

EXAMPLES = settings(max_examples=80, deadline=None)


def node(kind: str, path: str) -> dict[str, Any]:
    schema = schema_for(kind)
    for part in path.split("."):
        if part.endswith("[]"):
            schema = schema["properties"][part[:-2]]["items"]
        else:
            schema = schema["properties"][part]
    return schema


def schema_accepts(kind: str, path: str, value: str) -> bool:
    schema = node(kind, path)
    if not jsonschema.Draft4Validator(schema).is_valid(value):
        return False
    return all(evaluate(rule["rule"], value, schema) is True for rule in schema.get("x-kubernetes-validations", ()))


def parser_accepts(docs: list[dict[str, Any]], index: int, path: str, value: str) -> bool:
    docs = copy.deepcopy(docs)
    set_path(docs[index], path, value)
    return not any(e.path == path for e in parse_documents(docs).errors)


def agree(kind: str, schema_path: str, docs: list[dict[str, Any]], index: int, path: str, value: str) -> None:
    assert schema_accepts(kind, schema_path, value) == parser_accepts(docs, index, path, value), repr(value)


def text(alphabet: str, max_size: int = 10) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=max_size)


DURATION = st.one_of(text("0123456789.msh", 8), text("0.1msh", 6), text("09. ms-hd", 6),
                     st.from_regex(r"(\d{1,2}(\.\d{1,2})?(ms|h|m|s)){1,3}", fullmatch=True))


@EXAMPLES
@given(DURATION)
def test_durations(value: str) -> None:
    docs = documents()
    docs[ROUTE]["spec"]["fallback"] = {}
    agree("LLMRoute", "spec.fallback.perTryTimeout", docs, ROUTE, "spec.fallback.perTryTimeout", value)


@EXAMPLES
@given(st.one_of(text("aZ09._- /:", 8), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,6}", fullmatch=True)))
def test_regions(value: str) -> None:
    agree("LLMProvider", "spec.endpoints[].region", documents(), PROVIDER, "spec.endpoints[0].region", value)


URL = st.builds(
    lambda scheme, user, host, port, rest: f"{scheme}{user}{host}{port}{rest}",
    st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", "https:/", "", "https:///"]),
    st.sampled_from(["", "", "", "user@", "u:p@", "@"]),
    st.sampled_from(["api.example.com", "localhost", "10.0.0.1", "[::1]", "", "a", "x_y"]),
    st.sampled_from(["", "", ":", ":0", ":8080", ":65535", ":65536", ":00080", ":99999", ":x", ":-1"]),
    st.sampled_from(["", "/v1", "/openai/v1", "?a=b", "#f", "/p@x", "/a b"]),
)


@EXAMPLES
@given(URL)
def test_urls(value: str) -> None:
    agree("LLMProvider", "spec.endpoints[].url", documents(), PROVIDER, "spec.endpoints[0].url", value)


@EXAMPLES
@given(st.one_of(text("aZ_09- .", 8), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)))
def test_environment_variable_names(value: str) -> None:
    agree("LLMProvider", "spec.credentials.env", documents(), PROVIDER, "spec.credentials.env", value)


AZURE = st.one_of(st.sampled_from(["v1", "preview", "latest", "v2", "2024-10-21", "2025-04-01-preview",
                                   "2024-10-21-Preview", "24-10-21", "2024-1-21", "2024-10-21x"]),
                  st.from_regex(r"\d{4}-\d{2}-\d{2}(-preview)?", fullmatch=True), text("0129-previ", 12))


@EXAMPLES
@given(AZURE)
def test_azure_api_versions(value: str) -> None:
    docs = [with_spec(openai_doc(), type="azure-openai", azure={"apiVersion": "v1"})]
    agree("LLMProvider", "spec.azure.apiVersion", docs, 0, "spec.azure.apiVersion", value)


HEADER_NAME = st.one_of(text("aZ09-_!#$%&'*+.^`|~ :@()\"", 8), st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,8}",
                                                                             fullmatch=True))


@EXAMPLES
@given(HEADER_NAME)
def test_header_names(value: str) -> None:
    docs = documents()
    docs[ROUTE]["spec"]["rules"][0]["when"] = {"header": {"name": "x"}}
    agree("LLMRoute", "spec.rules[].when.header.name", docs, ROUTE, "spec.rules[0].when.header.name", value)


@EXAMPLES
@given(st.one_of(st.sampled_from(["user", "header:x-user", "header:", "User", "cookie"]),
                 st.builds(lambda h: f"header:{h}", HEADER_NAME), text("userhad:", 8)))
def test_sticky_keys(value: str) -> None:
    docs = documents()
    docs[ROUTE]["spec"]["experiments"] = [{"name": "e", "tier": "fast", "percent": 5,
                                           "targets": [{"provider": "claude", "model": "m"}]}]
    agree("LLMRoute", "spec.experiments[].stickyBy", docs, ROUTE, "spec.experiments[0].stickyBy", value)


@EXAMPLES
@given(text(" \t\nab", 4))
def test_strings_that_must_not_be_blank(value: str) -> None:
    agree("LLMProvider", "spec.models[].name", documents(), PROVIDER, "spec.models[0].name", value)
    agree("LLMRoute", "spec.rules[].when.model", documents(), ROUTE, "spec.rules[0].when.model", value)
