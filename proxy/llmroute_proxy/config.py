"""Standalone mode: a YAML file of LLMProvider/LLMRoute documents → a routing table.

The only I/O of configuration lives here (reading the file, the environment and key files), around
the pure `spec` and `compiler`. Every problem is collected before anything is raised, so one
`llmroute-proxy validate` run lists them all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from llmroute_proxy.compiler import compile_table
from llmroute_proxy.spec import (
    EnvCredential,
    FileCredential,
    ProviderSpec,
    SecretKeyRef,
    SpecError,
    Specs,
    WorkloadIdentity,
    credential_problem,
    parse_documents,
    unpriced_message,
    unpriced_targets,
)
from llmroute_proxy.table import Secret, Table
from llmroute_proxy.trust import ca_bundle_problem

log = logging.getLogger("llmroute.proxy")


class ConfigError(Exception):
    """The file cannot become a table; `errors` says every reason."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        count = f"{len(self.errors)} error" + ("s" if len(self.errors) != 1 else "")
        super().__init__(f"invalid configuration ({count}):\n" + "\n".join(f"  {e}" for e in self.errors))


def validate_file(path: str | Path) -> list[SpecError]:
    """Every error of the file. Credentials are not resolved: that needs the runtime."""
    return check_file(path)[0]


def check_file(path: str | Path) -> tuple[list[SpecError], list[str]]:
    """What `llmroute-proxy validate FILE` prints: every error, and for a valid file what works but is
    rarely meant (`pricing_warnings`), from one reading of it."""
    specs, errors = _parse_file(Path(path))
    return errors, [] if errors else pricing_warnings(specs)


def pricing_warnings(specs: Specs) -> list[str]:
    """A line per route whose targets include models without pricing (`spec.unpriced_targets`)."""
    providers = {provider.name: provider for provider in specs.providers}
    return [f"LLMRoute {route.name}: {unpriced_message(route, unpriced)}" for route in specs.routes
            if (unpriced := unpriced_targets(route, providers))]


def load_table(path: str | Path, *, region: str = "", environ: Mapping[str, str] | None = None) -> Table:
    """Credentials: `env` names a variable of `environ`; a relative `file` is relative to the config file."""
    path = Path(path)
    specs, errors = _parse_file(path)
    if errors:
        raise ConfigError(errors)
    secrets, errors = resolve_credentials(specs.providers, os.environ if environ is None else environ,
                                          path.parent)
    providers, trust_errors = resolve_ca_files(specs.providers, path.parent)
    if errors or trust_errors:
        raise ConfigError([*errors, *trust_errors])
    for warning in pricing_warnings(specs):
        log.warning("%s: %s", path, warning)
    return compile_table(providers, specs.routes, region=region,
                         credentials=lambda provider: secrets[provider.name])


def resolve_ca_files(providers: Sequence[ProviderSpec], base_dir: Path) -> tuple[list[ProviderSpec], list[SpecError]]:
    """Providers with `spec.tls.caFile` read into `caBundle` (a relative path is relative to the config file)."""
    out: list[ProviderSpec] = []
    errors: list[SpecError] = []
    for provider in providers:
        trust = provider.tls
        if trust is None or trust.ca_file is None:
            out.append(provider)
            continue
        bundle, problem = _read_ca_file(base_dir / Path(trust.ca_file).expanduser())
        if problem is not None:
            errors.append(SpecError("LLMProvider", provider.name, "spec.tls.caFile", problem))
        out.append(dataclasses.replace(provider, tls=dataclasses.replace(trust, ca_bundle=bundle)))
    return out, errors


def _read_ca_file(path: Path) -> tuple[str | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, f"cannot read CA file {path}: {exc.strerror or type(exc).__name__}"
    except UnicodeDecodeError:
        return None, f"CA file {path} is not UTF-8 text"
    problem = ca_bundle_problem(text)
    return (text, None) if problem is None else (None, f"CA file {path} {problem}")


def resolve_credentials(
    providers: Sequence[ProviderSpec], environ: Mapping[str, str], base_dir: Path
) -> tuple[dict[str, Secret | None], list[SpecError]]:
    secrets: dict[str, Secret | None] = {}
    errors: list[SpecError] = []
    for provider in providers:
        secret, problem = _credential(provider, environ, base_dir)
        if secret is not None and problem is None and (unusable := credential_problem(
                provider.type, secret.reveal())) is not None:
            secret, problem = None, (_CREDENTIAL_PATHS[type(provider.credentials)], unusable)
        secrets[provider.name] = secret
        if problem is not None:
            errors.append(SpecError("LLMProvider", provider.name, *problem))
    return secrets, errors


_CREDENTIAL_PATHS = {EnvCredential: "spec.credentials.env", FileCredential: "spec.credentials.file",
                     SecretKeyRef: "spec.credentials.secretRef"}


def _credential(
    provider: ProviderSpec, environ: Mapping[str, str], base_dir: Path
) -> tuple[Secret | None, tuple[str, str] | None]:
    """The key, or the (path, message) of why there is none. Messages never contain the key."""
    match provider.credentials:
        case None:
            return None, None
        case EnvCredential(variable):
            value = environ.get(variable, "").strip()
            if not value:
                state = "is empty" if variable in environ else "is not set"
                return None, ("spec.credentials.env", f"environment variable {variable} {state}")
            return Secret(value), None
        case FileCredential(name):
            return _read_key(base_dir / Path(name).expanduser())
        case WorkloadIdentity():
            return None, None  # the metadata server gives its tokens when requests are sent
        case SecretKeyRef():
            return None, ("spec.credentials.secretRef", "a Kubernetes Secret is resolved only by the operator; "
                          "in standalone mode use credentials.env or credentials.file")


def _read_key(path: Path) -> tuple[Secret | None, tuple[str, str] | None]:
    where = "spec.credentials.file"
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return None, (where, f"cannot read key file {path}: {exc.strerror or type(exc).__name__}")
    except UnicodeDecodeError:
        return None, (where, f"key file {path} is not UTF-8 text")
    if not value:
        return None, (where, f"key file {path} is empty")
    return Secret(value), None


def _parse_file(path: Path) -> tuple[Specs, list[SpecError]]:
    empty = Specs((), (), ())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a readable UTF-8 file"
        return empty, [SpecError("", str(path), "", f"cannot read: {reason}")]
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        return empty, [_yaml_error(path, exc)]
    specs = parse_documents(documents)
    errors = list(specs.errors)
    if not any(isinstance(d, Mapping) and d.get("kind") == "LLMRoute" for d in documents):
        errors.append(SpecError("", str(path), "", "holds no LLMRoute document: a sidecar needs a route"))
    return specs, errors


def _yaml_error(path: Path, exc: yaml.YAMLError) -> SpecError:
    """Only the problem and its position: PyYAML's full message quotes the file, key lines included."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{message} ({exc.context})"
        return SpecError("", str(path), f"line {mark.line + 1}, column {mark.column + 1}", message)
    return SpecError("", str(path), "", "invalid YAML")


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping, which YAML would silently drop."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"duplicate key '{key_node.value}'", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)
