"""The scrubber: every form of every key the sidecar holds, and credential shapes, become a marker."""

from __future__ import annotations

import base64
import binascii
import logging
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_proxy.config import load_table
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.scrubbing import MARKER, Scrubber, ScrubbingFilter, key_forms, scrubber_of, table_secrets
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.server.upstream import UpstreamClient
from llmroute_proxy.sync.protocol import compile_payload, table_payload

OPENAI = "sk-proj-Q3vT9xLm2Rk8Wz4Yb7Nc1Ph6Jd5Fg0Se"
ANTHROPIC = "sk-ant-api03-Zq8Xw2Ev6Rt4Yu1Io9Pa3Sd7Fg5Hj0Kl-abcDEF"
OPAQUE = "f3a9c1e7b5d2048e6a1c3f5b7d9e0a2c4e6b8d1f"  # 40 characters, no known shape
GEMINI = "AIzaSyD4kX9mQ2vL7nR1tW8pZ3cB6hJ0fG5sE"
AZURE = "8d7c6b5a49382716af00be11c2d3e4f5"
KEYS = (OPENAI, ANTHROPIC, OPAQUE, GEMINI, AZURE)
SCRUB = Scrubber(KEYS)

PROPERTY = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- the forms a key comes back in -----------------------------------------------------------------

ECHOES = [
    ("as is", lambda k: f"Incorrect API key provided: {k}. You can find your API key at https://x/keys."),
    ("url-encoded", lambda k: f"GET /v1beta/models?key={quote(k, safe='')}&alt=sse failed"),
    ("form-encoded", lambda k: f"body api_key={quote_plus(k)}"),
    ("json-escaped", lambda k: '{"key": "' + k.replace("/", "\\/") + '"}'),
    ("bearer", lambda k: f"Header 'Authorization: Bearer {k}' is malformed"),
    ("x-api-key", lambda k: f'x-api-key: "{k}" is not valid'),
    ("gemini header", lambda k: f"x-goog-api-key={k}"),
    ("gemini query", lambda k: f"https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key={k}"),
    ("azure header", lambda k: f"api-key: {k}"),
    ("basic", lambda k: "Authorization: Basic " + base64.b64encode(f"user:{k}".encode()).decode()),
    ("base64 in a dump", lambda k: "request " + base64.b64encode(f'{{"headers": {{"k": "{k}"}}}}'.encode()).decode()),
    ("start", lambda k: f"key starting {k[:10]} was revoked"),
    ("end", lambda k: f"key ending in {k[-9:]} was revoked"),
    ("openai mask", lambda k: f"Incorrect API key provided: {k[:8]}{'*' * 28}{k[-4:]}."),
    ("short mask", lambda k: f"key {k[:5]}...{k[-4:]} rejected"),
    ("ellipsis mask", lambda k: f"key {k[:4]}…{k[-5:]} rejected"),
    ("inside a word", lambda k: f"token=xyz{k}xyz;"),
    ("case changed", lambda k: f"status {k.upper()} / code {k.lower()}"),
]


@pytest.mark.parametrize("key", KEYS, ids=["openai", "anthropic", "opaque", "gemini", "azure"])
@pytest.mark.parametrize(("name", "echo"), ECHOES, ids=[name for name, _ in ECHOES])
def test_a_held_key_is_found_in_every_form_it_comes_back_in(key: str, name: str, echo: Any) -> None:
    text = echo(key)
    clean = SCRUB.scrub(text)
    assert MARKER in clean
    assert not _shares_a_run(clean.lower(), key.lower(), 8), clean
    assert not _decodes_to(clean, key)


def _shares_a_run(text: str, key: str, length: int) -> bool:
    """Whether `text` holds any `length` characters of `key` in a row (or of its escaped forms)."""
    forms = {key, quote(key, safe=""), quote_plus(key), key.replace("/", "\\/")}
    return any(form[i:i + length] in text for form in forms for i in range(len(form) - length + 1))


def _decodes_to(text: str, key: str) -> bool:
    """Whether any base64 run in `text`, at any alignment, decodes to bytes holding `key`."""
    for piece in text.replace(MARKER, " ").split():
        for shift in range(4):
            run = piece[shift:]
            run = run[: len(run) // 4 * 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    if key.encode() in decode(run):
                        return True
                except (binascii.Error, ValueError):
                    continue
    return False


@pytest.mark.parametrize("text", [
    "Incorrect API key provided: sk-live-1234567890abcdef. You can find your API key at https://x.",
    "Header 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig' is malformed",
    "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=AIzaSyNOTheld0123456789abcdefghijk",
    "x-goog-api-key: somethingelse",
    "api-key=not-a-held-one",
    "xai-0123456789abcdefghij rejected",
])
def test_a_key_it_does_not_hold_is_masked_by_its_shape(text: str) -> None:
    clean = Scrubber().scrub(text)
    assert MARKER in clean
    for secret in ("sk-live-1234567890abcdef", "eyJhbGciOiJIUzI1NiJ9", "AIzaSyNOTheld", "somethingelse",
                   "not-a-held-one", "xai-0123456789"):
        assert secret not in clean


@pytest.mark.parametrize("text", [
    "The server had an error while processing your request. Sorry about that!",
    "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500.",
    "network-connection failed; back-off... then retry",
    "The model `gpt-5-turbo` does not exist or you do not have access to it.",
    "prompt is too long: 210000 tokens > 200000 maximum",
    "ollama/llama3@local: cannot connect (Connection refused)",
    "see https://platform.openai.com/account/api-keys for a key",
])
def test_text_without_a_key_is_left_as_it_is(text: str) -> None:
    assert Scrubber([*KEYS, "ollama"]).scrub(text) == text


def test_characters_that_lower_case_to_two_keep_every_position_right() -> None:
    clean = SCRUB.scrub(f"İİ Bearer İx {OPAQUE} İ {GEMINI[:9]}İ")
    assert clean == f"İİ Bearer {MARKER} {MARKER} İ {MARKER}İ"


def test_values_too_short_to_be_keys_are_not_scrubbed() -> None:
    scrubber = Scrubber(["ollama", "none"])
    assert scrubber.secrets == 0
    assert scrubber.scrub("ollama says none") == "ollama says none"


def test_a_key_inside_another_held_key_leaves_nothing_of_either() -> None:
    outer = "prefix-" + OPAQUE + "-suffix"
    clean = Scrubber([OPAQUE, outer]).scrub(f"a {outer} b {OPAQUE} c")
    assert clean == f"a {MARKER} b {MARKER} c"


# --- errors, JSON, tables -----------------------------------------------------------------------

def test_an_error_loses_the_key_from_every_text_field_and_keeps_the_rest() -> None:
    error = UpstreamError(FailureKind.CLIENT_ERROR, f"bad key {OPAQUE}", status=400, retry_after=3.0,
                          error_type="invalid_request_error", code=f"key_{OPAQUE}", param=OPAQUE)
    clean = SCRUB.error(error)
    assert OPAQUE not in f"{clean.message} {clean.code} {clean.param} {clean!s} {clean.args}"
    assert (clean.kind, clean.status, clean.retry_after, clean.error_type) == \
        (FailureKind.CLIENT_ERROR, 400, 3.0, "invalid_request_error")


def test_an_error_without_a_key_is_the_same_object() -> None:
    error = UpstreamError(FailureKind.SERVER_ERROR, "Internal error", status=500)
    assert SCRUB.error(error) is error


def test_a_credential_failure_loses_every_long_opaque_token() -> None:
    error = UpstreamError(FailureKind.AUTH, "Invalid token: 0123456789abcdef0123456789abcdef", status=401)
    assert "0123456789abcdef0123456789abcdef" not in Scrubber().error(error).message


def test_json_is_scrubbed_at_every_depth_keys_included() -> None:
    document = {"targets": [{"last_error": f"auth: {ANTHROPIC}", "n": 3}], OPAQUE: (None, [f"x {GEMINI}"])}
    assert SCRUB.json(document) == {"targets": [{"last_error": f"auth: {MARKER}", "n": 3}],
                                    MARKER: [None, [f"x {MARKER}"]]}


CONFIG = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: oai}
spec: {type: openai, endpoints: [{region: r, url: "http://127.0.0.1:1/v1"}], credentials: {env: OAI}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: claude}
spec: {type: anthropic, endpoints: [{region: r, url: "http://127.0.0.1:2"}], credentials: {file: claude.key}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: gem}
spec: {type: gemini, endpoints: [{region: r, url: "http://127.0.0.1:3"}], credentials: {env: GEM}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: az}
spec:
  type: azure-openai
  endpoints: [{region: r, url: "http://127.0.0.1:4"}]
  credentials: {env: AZ}
  azure: {apiVersion: "2024-10-21"}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: vllm}
spec: {type: openai-compatible, endpoints: [{region: r, url: "http://127.0.0.1:5/v1"}], credentials: {env: OPAQUE}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: main}
spec:
  tiers:
    a: {targets: [{provider: oai, model: m}, {provider: claude, model: m}, {provider: gem, model: m}]}
    b: {targets: [{provider: az, model: m}]}
  experiments: [{name: e, tier: a, percent: 10, targets: [{provider: vllm, model: m}]}]
  defaultTier: a
"""
ENVIRON = {"OAI": OPENAI, "GEM": GEMINI, "AZ": AZURE, "OPAQUE": OPAQUE}


def test_a_tables_secrets_are_every_providers_key_from_env_files_and_the_operator(tmp_path: Path) -> None:
    (tmp_path / "claude.key").write_text(ANTHROPIC + "\n")
    (tmp_path / "llmroute.yaml").write_text(CONFIG)
    assert table_secrets(load_table(tmp_path / "llmroute.yaml", environ=ENVIRON)) == set(KEYS)
    documents = list(yaml.safe_load_all(CONFIG))
    pushed = compile_payload(table_payload("r", documents, {"oai": OPENAI, "claude": ANTHROPIC, "gem": GEMINI,
                                                             "az": AZURE, "vllm": OPAQUE}))
    assert table_secrets(pushed) == set(KEYS)


def test_the_sidecar_scrubs_the_keys_of_its_table_and_of_the_one_before(tmp_path: Path) -> None:
    (tmp_path / "claude.key").write_text(ANTHROPIC)
    (tmp_path / "llmroute.yaml").write_text(CONFIG)
    sidecar = Sidecar(upstream=UpstreamClient.__new__(UpstreamClient), telemetry=Telemetry())
    sidecar.install(load_table(tmp_path / "llmroute.yaml", environ=ENVIRON))
    assert sidecar.scrubber.scrub(OPAQUE) == MARKER
    rotated = "0" * 8 + OPAQUE[8:]
    sidecar.install(load_table(tmp_path / "llmroute.yaml", environ={**ENVIRON, "OPAQUE": rotated}))
    assert sidecar.scrubber.scrub(f"{OPAQUE} {rotated}") == f"{MARKER} {MARKER}"  # in flight: the old key
    sidecar.install(load_table(tmp_path / "llmroute.yaml", environ={**ENVIRON, "OPAQUE": rotated, "GEM": OPENAI}))
    assert OPAQUE not in {s for s in sidecar.held_secrets["table"] | sidecar.held_secrets["previous table"]}
    sidecar.hold_secrets("operator token", ["eyJhbGciOiJSUzI1NiJ9.operator.token"])
    assert "operator.token" not in sidecar.scrubber.scrub("token eyJhbGciOiJSUzI1NiJ9.operator.token")


def test_one_scrubber_is_built_per_set_of_keys() -> None:
    assert scrubber_of(frozenset(KEYS)) is scrubber_of(frozenset(reversed(KEYS)))


# --- the logging safety net ------------------------------------------------------------------------

def test_log_records_leave_the_filter_scrubbed_message_arguments_and_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("llmroute.test.scrubbing")
    scrubbing = ScrubbingFilter(lambda: SCRUB)
    logger.addFilter(scrubbing)
    try:
        with caplog.at_level(logging.DEBUG, logger.name):
            logger.info("upstream said %s", f"bad key {OPAQUE}")
            try:
                raise ValueError(f"echo {ANTHROPIC}")
            except ValueError:
                logger.exception("failed with %r", {"key": GEMINI})
            logger.warning("broken %s %s", "one")  # arguments that do not fit
    finally:
        logger.removeFilter(scrubbing)
    shown = caplog.text + "".join(caplog.messages)
    assert "bad key [redacted]" in shown and "ValueError: echo [redacted]" in shown
    for key in (OPAQUE, ANTHROPIC, GEMINI):
        assert key not in shown


# --- properties ------------------------------------------------------------------------------------

KEY_CHARS = string.ascii_letters + string.digits + "-_"
held_keys = st.builds(lambda prefix, body: prefix + body,
                      st.sampled_from(["", "sk-", "sk-ant-api03-", "sk-proj-", "AIza", "gsk_"]),
                      st.text(KEY_CHARS, min_size=20, max_size=64))
surroundings = st.text(max_size=40)
VARIANTS = {
    "as is": lambda k: k,
    "url-encoded": lambda k: quote(k, safe=""),
    "bearer": lambda k: "Bearer " + k,
    "query": lambda k: f"?alt=sse&key={k}&x=1",
    "header": lambda k: f"x-goog-api-key: {k}",
    "start": lambda k: k[: max(8, len(k) // 2)],
    "end": lambda k: k[-max(8, len(k) // 3):],
    "mask": lambda k: f"{k[:6]}{'*' * 12}{k[-4:]}",
    "upper-cased": str.upper,
    "lower-cased": str.lower,
}


@PROPERTY
@given(key=held_keys, others=st.lists(held_keys, max_size=3), variant=st.sampled_from(sorted(VARIANTS)),
       before=surroundings, after=surroundings)
def test_any_text_holding_a_key_in_any_variant_keeps_none_of_it(
        key: str, others: list[str], variant: str, before: str, after: str) -> None:
    shown = VARIANTS[variant](key)
    clean = Scrubber([key, *others]).scrub(before + shown + after)
    assert key.lower() not in clean.lower()
    if variant in ("start", "end", "as is", "url-encoded"):
        assert shown not in clean
    if variant == "mask":
        assert shown not in clean


@PROPERTY
@given(key=held_keys, prefix=st.binary(max_size=20), suffix=st.binary(max_size=20), urlsafe=st.booleans())
def test_a_key_inside_any_base64_text_cannot_be_decoded_from_it(
        key: str, prefix: bytes, suffix: bytes, urlsafe: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    clean = Scrubber([key]).scrub(encode(prefix + key.encode() + suffix).decode())
    assert not _decodes_to(clean, key)


@PROPERTY
@given(keys=st.lists(held_keys, min_size=1, max_size=4), text=st.text(max_size=300))
def test_any_text_without_a_key_or_a_key_shape_is_unchanged(keys: list[str], text: str) -> None:
    anchors = {form for key in keys for form in key_forms(key)} | {k[:8] for k in keys} | {k[-8:] for k in keys}
    if any(anchor.lower() in text.lower() for anchor in anchors) or Scrubber().scrub(text) != text:
        return  # the text holds (a piece of) a key or a key's shape: the tests above cover it
    assert Scrubber(keys).scrub(text) == text

