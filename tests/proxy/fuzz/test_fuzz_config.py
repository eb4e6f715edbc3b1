"""Fuzz: any LLMProvider/LLMRoute document set, and any file of YAML, becomes specs or `SpecError`s
naming where — never another exception — and specs free of errors always compile.

Documents are the valid set using every section (`tests/proxy/spec_cases.py`) plus an Azure, a Gemini
and a TLS-trusting provider, with values at any depth replaced by anything JSON or YAML can hold.
Files are those documents dumped as YAML, then given what YAML adds: anchors and aliases, merge
keys, tags, timestamps, non-string keys, stray indentation, bytes that are not UTF-8.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_proxy.compiler import compile_table
from llmroute_proxy.config import ConfigError, load_table
from llmroute_proxy.spec import API_VERSION, SpecError, parse_documents
from llmroute_proxy.table import Secret, Table
from tests.proxy.fuzz.strategies import ANY_JSON, EXAMPLES, FUZZ, mutated
from tests.proxy.spec_cases import every_section_documents

EXTRA_PROVIDERS: list[dict[str, Any]] = [
    {"apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": "azure"},
     "spec": {"type": "azure-openai", "endpoints": [{"region": "us", "url": "https://r.openai.azure.com"}],
              "credentials": {"env": "AZURE_KEY"}, "azure": {"apiVersion": "2024-10-21"},
              "limits": {"requestsPerMinute": 60, "tokensPerMinute": 100000, "maxConcurrency": 4},
              "models": [{"name": "gpt-4o", "pricing": {"inputPerMTok": 2.5, "outputPerMTok": 10,
                                                        "cachedInputPerMTok": 1.25}}]}},
    {"apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": "gem"},
     "spec": {"type": "gemini", "endpoints": [{"region": "eu", "url": "https://generativelanguage.googleapis.com"}],
              "credentials": {"file": "keys/gemini"}, "gemini": {"apiVersion": "v1beta"},
              "tls": {"caFile": "ca.pem"}}},
]


def document_set() -> list[Any]:
    return [*every_section_documents(), *EXTRA_PROVIDERS]


YAML_VALUES = st.one_of(ANY_JSON, st.dates(), st.datetimes(), st.binary(max_size=8), st.frozensets(st.integers(0, 3)),
                        st.tuples(st.integers(), st.text(max_size=3)))
YAML_KEYS = st.one_of(st.integers(-2, 2), st.none(), st.booleans(), st.floats(allow_nan=False), st.dates(),
                      st.tuples(st.integers(0, 2)))


def yaml_mutated(base: Any) -> st.SearchStrategy[Any]:
    """Like `mutated`, with YAML's own values (timestamps, bytes, sets) and non-string keys too."""
    return mutated(base, values=YAML_VALUES, keys=YAML_KEYS)


@st.composite
def document_sets(draw: st.DrawFn, mutate: Any) -> list[Any]:
    """The set with one document mutated (all of them at once reach little: each stops at its first errors)."""
    documents = document_set()
    index = draw(st.integers(0, len(documents) - 1))
    documents[index] = draw(mutate(documents[index]))
    return documents


def _errors_are_named(errors: Any) -> None:
    for error in errors:
        assert isinstance(error, SpecError), error
        assert isinstance(error.message, str) and error.message, error
        assert isinstance(error.path, str) and isinstance(error.name, str) and isinstance(error.kind, str), error
        str(error)


def _compiles(specs: Any) -> None:
    table = compile_table(specs.providers, specs.routes, region="us", credentials=lambda provider: Secret("k"))
    assert isinstance(table, Table)


@FUZZ
@given(st.one_of(document_sets(mutated), document_sets(yaml_mutated), st.lists(ANY_JSON, max_size=3)))
def test_any_document_set_gives_specs_or_errors_naming_where(documents: Any) -> None:
    specs = parse_documents(documents if isinstance(documents, list) else [documents])
    _errors_are_named(specs.errors)
    if not specs.errors:
        _compiles(specs)


YAML_NOISE = ("&a ", "*a", "<<: *a\n", "<<: [*a]\n", "!!binary ", "!!set ", "!!python/object:os.system ", "? [a]\n",
              "{[1]: 2}", ": :", "%YAML 1.1\n", "---\n", "...\n", "\t", " ", "\n", "2024-01-01", "0x1F", "1_000", ".inf",
              "~", "- ", '"\\ud800"', "!tag ", "|\n  x\n", ">-\n", "#", "'", '"', "{", "[", "}", "]", ",", "\x00", "\ufeff")


@st.composite
def yaml_files(draw: st.DrawFn) -> bytes:
    documents = draw(st.one_of(document_sets(mutated), document_sets(yaml_mutated)))
    text = yaml.dump_all(documents, sort_keys=False, allow_unicode=True)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.one_of(st.sampled_from(YAML_NOISE), st.text(max_size=4))) + text[at:]
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe" + data[at:]
    return data


@settings(parent=FUZZ, max_examples=max(1, EXAMPLES // 2))  # a file is dumped, written and read: the dearest
@given(yaml_files())
def test_any_config_file_gives_a_table_or_a_config_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="llmroute-fuzz-") as tmp:
        path = Path(tmp) / "llmroute.yaml"
        path.write_bytes(data)
        (Path(tmp) / "keys").mkdir()
        (Path(tmp) / "keys" / "gemini").write_text("gem-key")
        environ = {"OPENAI_API_KEY": "sk-a", "AZURE_KEY": "az"}
        try:
            table = load_table(path, region="us", environ=environ)
        except ConfigError as refused:
            _errors_are_named(refused.errors)
            assert refused.errors
        else:
            assert isinstance(table, Table)


def test_yaml_values_that_json_has_not_are_named_as_errors() -> None:
    """Timestamps, bytes and sets reach the parser only from YAML; each is an error naming its field."""
    for value in (date(2024, 1, 1), datetime(2024, 1, 1, 12), b"\x00", frozenset({1})):
        documents = document_set()
        documents[0]["spec"]["endpoints"][0]["url"] = value
        specs = parse_documents(documents)
        assert [e.path for e in specs.errors if e.name == "openai-main"] == ["spec.endpoints[0].url"]
