"""Standalone configuration files: reading, validating, resolving keys, compiling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmroute_proxy.config import ConfigError, load_table, validate_file
from llmroute_proxy.spec import SpecError
from llmroute_proxy.table import Table, TargetId

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "standalone.yaml"
OPENAI_KEY = "sk-proj-0a1b2c3d4e5f60718293"
AZURE_KEY = "8d7c6b5a49382716af00be11"
ANTHROPIC_KEY = "sk-ant-api03-zyxwvu987654"
ENVIRON = {"OPENAI_API_KEY": OPENAI_KEY, "AZURE_OPENAI_API_KEY": AZURE_KEY}

PROVIDER = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: local}
spec:
  type: openai
  endpoints: [{region: here, url: "http://127.0.0.1:8000/v1"}]
  credentials: %s
"""
ROUTE = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: r}
spec:
  tiers: {t: {targets: [{provider: local, model: m}]}}
  defaultTier: t
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped example beside the key file it names."""
    path = tmp_path / "standalone.yaml"
    shutil.copy(EXAMPLE, path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "anthropic.key").write_text(f"\n  {ANTHROPIC_KEY}  \n")
    return path


def key_of(table: Table, target: str) -> str | None:
    credential = table.targets()[TargetId(target)].credential
    return None if credential is None else credential.reveal()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmroute.yaml"
    path.write_text(text)
    return path


def with_credentials(tmp_path: Path, credentials: str) -> Path:
    return write(tmp_path, PROVIDER % credentials + "---\n" + ROUTE)


def test_the_shipped_example_validates() -> None:
    assert validate_file(EXAMPLE) == []


def test_the_shipped_example_loads_into_a_table(example: Path) -> None:
    table = load_table(example, region="westeurope", environ=ENVIRON)
    assert table.region == "westeurope"
    (route,) = table.routes
    assert route.name == "chat"
    assert list(route.tiers) == ["fast", "smart", "code"]
    assert [t.id for t in route.tiers["smart"].targets] == [
        "openai-main/gpt-4o@us", "azure-gpt/gpt-4o@westeurope", "azure-gpt/gpt-4o@eastus",
        "claude/claude-sonnet-4-5@us"]
    assert [r.name for r in route.rules] == ["code", "batch-jobs", "reasoning", "short-prompts"]
    assert route.rules[1].when.header is not None and route.rules[1].when.header.name == "x-workload"
    assert route.fallback.first_byte_timeout == 10.0 and route.fallback.overall_timeout == 120.0
    assert route.budget is not None and route.budget.downgrade_tier == "fast"
    assert route.experiments[0].targets[0].id == "claude/claude-haiku-4-5@us"
    assert key_of(table, "claude/claude-sonnet-4-5@us") == ANTHROPIC_KEY  # stripped
    assert key_of(table, "azure-gpt/gpt-4o@eastus") == AZURE_KEY
    assert table.targets()[TargetId("azure-gpt/gpt-4o@eastus")].options == {"api_version": "2024-10-21"}
    assert table.provider_limits["openai-main"].requests_per_minute == 5000
    for key in (OPENAI_KEY, AZURE_KEY, ANTHROPIC_KEY):
        assert key not in repr(table)


def test_loading_twice_gives_the_same_version_and_a_new_key_a_new_one(example: Path) -> None:
    first = load_table(example, environ=ENVIRON)
    assert load_table(example, environ=ENVIRON).version == first.version
    rotated = load_table(example, environ={**ENVIRON, "OPENAI_API_KEY": "sk-proj-rotated"})
    assert rotated.version != first.version


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_TEST_KEY", OPENAI_KEY)
    table = load_table(with_credentials(tmp_path, "{env: LLMROUTE_TEST_KEY}"))
    assert key_of(table, "local/m@here") == OPENAI_KEY


@pytest.mark.parametrize(("credentials", "environ", "error"), [
    ("{env: MISSING_KEY}", {}, "LLMProvider/local: spec.credentials.env: environment variable MISSING_KEY is not set"),
    ("{env: EMPTY_KEY}", {"EMPTY_KEY": "  "},
     "LLMProvider/local: spec.credentials.env: environment variable EMPTY_KEY is empty"),
    ("{file: nowhere.key}", {}, "LLMProvider/local: spec.credentials.file: cannot read key file {dir}/nowhere.key: "
                                "No such file or directory"),
    ("{file: empty.key}", {}, "LLMProvider/local: spec.credentials.file: key file {dir}/empty.key is empty"),
    ("{secretRef: {name: keys, key: openai}}", {},
     "LLMProvider/local: spec.credentials.secretRef: a Kubernetes Secret is resolved only by the operator; "
     "in standalone mode use credentials.env or credentials.file"),
])
def test_a_key_that_cannot_be_resolved_is_an_error(tmp_path: Path, credentials: str, environ: dict[str, str],
                                                   error: str) -> None:
    (tmp_path / "empty.key").write_text("\n")
    path = with_credentials(tmp_path, credentials)
    assert validate_file(path) == []  # validation does not need the runtime's secrets
    with pytest.raises(ConfigError) as caught:
        load_table(path, environ=environ)
    assert [str(e) for e in caught.value.errors] == [error.format(dir=tmp_path)]


def test_a_relative_key_file_is_found_beside_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k").write_text(OPENAI_KEY)
    path = with_credentials(tmp_path, "{file: k}")
    monkeypatch.chdir("/")
    assert key_of(load_table(path, environ={}), "local/m@here") == OPENAI_KEY


def test_an_absolute_key_file_is_read_where_it_is(tmp_path: Path) -> None:
    key = tmp_path / "elsewhere" / "key"
    key.parent.mkdir()
    key.write_text(OPENAI_KEY)
    path = with_credentials(tmp_path, f"{{file: {key}}}")
    assert key_of(load_table(path, environ={}), "local/m@here") == OPENAI_KEY


def test_an_openai_compatible_provider_loads_without_a_key(tmp_path: Path) -> None:
    text = (PROVIDER % "null").replace("type: openai", "type: openai-compatible") + "---\n" + ROUTE
    table = load_table(write(tmp_path, text), environ={})
    assert key_of(table, "local/m@here") is None


def test_every_error_is_listed_in_the_exception(tmp_path: Path) -> None:
    text = (PROVIDER % "{env: K}").replace("type: openai", "type: opnai") + "---\n" + ROUTE.replace(
        "defaultTier: t", "defaultTier: x\n  fallback: {maxAttempts: 0}")
    with pytest.raises(ConfigError) as caught:
        load_table(write(tmp_path, text), environ={"K": OPENAI_KEY})
    paths = [e.path for e in caught.value.errors]
    assert paths == ["spec.type", "spec.tiers.t.targets[0].provider", "spec.defaultTier", "spec.fallback.maxAttempts"]
    message = str(caught.value)
    assert message.startswith("invalid configuration (4 errors):\n")
    for error in caught.value.errors:
        assert f"\n  {error}" in message


def test_key_errors_are_reported_only_after_the_documents_are_valid(tmp_path: Path) -> None:
    text = PROVIDER % "{env: UNSET}" + "---\n" + ROUTE.replace("defaultTier: t", "defaultTier: x")
    with pytest.raises(ConfigError) as caught:
        load_table(write(tmp_path, text), environ={})
    assert [e.path for e in caught.value.errors] == ["spec.defaultTier"]


@pytest.mark.parametrize(("text", "expected"), [
    ("kind: [unclosed", SpecError("", "{file}", "line 1, column 16",
                                  "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)")),
    ("a: 1\nb: [\n", SpecError("", "{file}", "line 3, column 1",
                                "expected the node content, but found '<stream end>' (while parsing a flow node)")),
    (ROUTE.replace("defaultTier: t", "defaultTier: t\n  defaultTier: u"),
     SpecError("", "{file}", "line 7, column 3", "duplicate key 'defaultTier' (while reading a mapping)")),
    ("", SpecError("", "{file}", "", "holds no LLMRoute document: a sidecar needs a route")),
    (PROVIDER % "{env: K}", SpecError("", "{file}", "", "holds no LLMRoute document: a sidecar needs a route")),
])
def test_a_file_that_is_not_a_set_of_documents_is_an_error(tmp_path: Path, text: str, expected: SpecError) -> None:
    path = write(tmp_path, text)
    expected = SpecError(expected.kind, str(path), expected.path, expected.message)
    assert validate_file(path) == [expected]
    with pytest.raises(ConfigError) as caught:
        load_table(path, environ={"K": "x"})
    assert caught.value.errors == [expected]


def test_a_yaml_error_does_not_quote_the_file(tmp_path: Path) -> None:
    text = PROVIDER % f"{{env: K}}\n  apiKey: {OPENAI_KEY}\n    broken: [" + "---\n" + ROUTE
    errors = validate_file(write(tmp_path, text))
    assert errors and all(OPENAI_KEY not in str(e) for e in errors)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert [str(e) for e in validate_file(path)] == [f"{path}: cannot read: No such file or directory"]


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = PROVIDER % "{env: K}" + "---\n" + ROUTE.replace(
        "  tiers: {t: {targets: [{provider: local, model: m}]}}",
        "  tiers:\n    t: &tier {targets: [{provider: local, model: m}]}\n    u: {<<: *tier}")
    table = load_table(write(tmp_path, text), environ={"K": OPENAI_KEY})
    assert list(table.routes[0].tiers) == ["t", "u"]


def test_empty_documents_are_ignored(tmp_path: Path) -> None:
    text = "---\n" + PROVIDER % "{env: K}" + "---\n---\n" + ROUTE + "---\n"
    assert load_table(write(tmp_path, text), environ={"K": OPENAI_KEY}).routes[0].name == "r"


def test_no_key_appears_in_any_error(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(ANTHROPIC_KEY)
    text = (PROVIDER % "{file: k}") + "---\n" + (PROVIDER % f"{{env: {OPENAI_KEY}}}").replace(
        "name: local", "name: other") + "---\n" + ROUTE.replace("defaultTier: t", "defaultTier: q")
    with pytest.raises(ConfigError) as caught:
        load_table(write(tmp_path, text), environ={OPENAI_KEY: "x"})
    assert len(caught.value.errors) == 2
    for shown in (str(caught.value), repr(caught.value), *map(repr, caught.value.errors)):
        assert OPENAI_KEY not in shown and ANTHROPIC_KEY not in shown


def test_loading_a_route_whose_models_have_no_pricing_warns_naming_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The table loads (a model may be free), but a budget that never counts its answers is rarely meant."""
    with caplog.at_level("WARNING", logger="llmroute.proxy"):
        load_table(with_credentials(tmp_path, "{env: KEY}"), environ={"KEY": OPENAI_KEY})

    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 'llmroute.yaml'}: LLMRoute r: local/m has no pricing: they cost 0 in spend and metrics; give "
        "the model's pricing in its LLMProvider (pricing of zeros for a free model)"]
    assert OPENAI_KEY not in caplog.text


def test_pricing_of_zeros_is_a_free_model_and_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    free = PROVIDER % "{env: KEY}" + "  models: [{name: m, pricing: {inputPerMTok: 0, outputPerMTok: 0}}]\n"
    with caplog.at_level("WARNING", logger="llmroute.proxy"):
        load_table(write(tmp_path, free + "---\n" + ROUTE), environ={"KEY": OPENAI_KEY})

    assert not caplog.records
