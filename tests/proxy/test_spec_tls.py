"""`spec.tls` of an LLMProvider: a custom CA, inline or from a file, checked where it is written,
and carried into every target the provider compiles to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmroute_proxy.config import ConfigError, load_table
from llmroute_proxy.sim.tls import LocalCA
from llmroute_proxy.spec import TrustSpec, parse_provider
from llmroute_proxy.table import Table

CA = LocalCA.create()


def provider(tls: object) -> dict[str, Any]:
    return {"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "gw"},
            "spec": {"type": "openai-compatible", "tls": tls,
                     "endpoints": [{"region": "here", "url": "https://gateway.internal/v1"}]}}


def errors_of(tls: object) -> list[str]:
    _, errors = parse_provider(provider(tls))
    return [str(e) for e in errors]


def test_an_inline_bundle_is_kept_as_given() -> None:
    spec, errors = parse_provider(provider({"caBundle": CA.cert_pem}))
    assert errors == [] and spec is not None
    assert spec.tls == TrustSpec(ca_bundle=CA.cert_pem)


def test_a_ca_file_is_kept_as_its_path() -> None:
    spec, errors = parse_provider(provider({"caFile": "/etc/llmroute/ca.pem"}))
    assert errors == [] and spec is not None and spec.tls == TrustSpec(ca_file="/etc/llmroute/ca.pem")


def test_no_tls_block_means_the_system_cas() -> None:
    doc = provider(None)
    del doc["spec"]["tls"]
    spec, errors = parse_provider(doc)
    assert errors == [] and spec is not None and spec.tls is None


LEAF, _ = CA.issue()
BROKEN = "-----BEGIN CERTIFICATE-----\nMIIBnotbase64atall\n-----END CERTIFICATE-----\n"


BAD_TLS = [
    ({}, "spec.tls: give exactly one of caBundle (PEM text) and caFile (a PEM file's path)"),
    ({"caBundle": CA.cert_pem, "caFile": "ca.pem"},
     "spec.tls: give exactly one of caBundle (PEM text) and caFile (a PEM file's path)"),
    ({"caBundle": "just some text"},
     "spec.tls.caBundle: holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks)"),
    ({"caBundle": BROKEN}, "spec.tls.caBundle: is not a valid PEM certificate bundle (no start line: "
                           "cadata does not contain a certificate)"),
    ({"caBundle": LEAF}, "spec.tls.caBundle: holds no CA certificate (a server's own certificate cannot "
                         "verify it: give its CA)"),
    ({"caBundle": 42}, "spec.tls.caBundle: expected a string, found an integer (42) (quote it in YAML to keep it a string)"),
    ({"caFile": ""}, "spec.tls.caFile: must not be empty"),
    ({"cafile": "ca.pem"}, "spec.tls.cafile: unknown field 'cafile' (did you mean 'caFile'?)"),
    ("ca.pem", "spec.tls: expected a mapping, found a string ('ca.pem')"),
]


@pytest.mark.parametrize(("tls", "error"), BAD_TLS)
def test_a_bad_tls_block_is_refused_at_its_path(tls: object, error: str) -> None:
    assert f"LLMProvider/gw: {error}" in errors_of(tls)
    assert parse_provider(provider(tls))[0] is None


# --- standalone files ---------------------------------------------------------------------------

ROUTE = """---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: r}
spec:
  tiers: {t: {targets: [{provider: gw, model: m}]}}
  defaultTier: t
"""


def write_config(tmp_path: Path, tls: str) -> Path:
    path = tmp_path / "llmroute.yaml"
    path.write_text(f"""apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: gw}}
spec:
  type: openai-compatible
  endpoints: [{{region: here, url: "https://gateway.internal/v1"}}, {{region: there, url: "https://b.internal/v1"}}]
  tls: {tls}
""" + ROUTE)
    return path


def bundles(table: Table) -> set[str | None]:
    return {target.ca_bundle for target in table.routes[0].tiers["t"].targets}


def test_a_relative_ca_file_is_read_beside_the_config_into_every_target(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    CA.write_cert(tmp_path / "ca.pem")
    monkeypatch.chdir("/")
    assert bundles(load_table(write_config(tmp_path, "{caFile: ca.pem}"), environ={})) == {CA.cert_pem}


def test_an_inline_bundle_reaches_every_target_and_changes_the_table_version(tmp_path: Path) -> None:
    indented = "\n".join(f"      {line}" for line in CA.cert_pem.splitlines())
    inline = load_table(write_config(tmp_path, f"\n    caBundle: |\n{indented}\n"), environ={})
    other = LocalCA.create("other")
    other_lines = "\n".join(f"      {line}" for line in other.cert_pem.splitlines())
    rotated = load_table(write_config(tmp_path, f"\n    caBundle: |\n{other_lines}\n"), environ={})
    assert bundles(inline) == {CA.cert_pem}
    assert inline.version != rotated.version


@pytest.mark.parametrize(("content", "error"), [
    (None, "cannot read CA file {dir}/ca.pem: No such file or directory"),
    ("not a certificate\n", "CA file {dir}/ca.pem holds no PEM certificate "
                            "(expected '-----BEGIN CERTIFICATE-----' blocks)"),
    (b"\xff\xfe", "CA file {dir}/ca.pem is not UTF-8 text"),
])
def test_a_ca_file_that_cannot_be_used_is_an_error_naming_the_field(tmp_path: Path, content: str | bytes | None,
                                                                    error: str) -> None:
    if isinstance(content, str):
        (tmp_path / "ca.pem").write_text(content)
    elif isinstance(content, bytes):
        (tmp_path / "ca.pem").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_table(write_config(tmp_path, "{caFile: ca.pem}"), environ={})
    assert [str(e) for e in caught.value.errors] == [
        f"LLMProvider/gw: spec.tls.caFile: {error.format(dir=tmp_path)}"]
