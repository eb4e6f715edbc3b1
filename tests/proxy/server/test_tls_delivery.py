"""Every provider type's unary, error and stream paths over TLS with the project's own CA, while the
network fragments answers at every byte boundary or at arbitrary offsets with gaps, and carries
512 KiB answers; the official SDKs are the clients. Also: how the sidecar comes to trust the CA
(`spec.tls.caFile`, `spec.tls.caBundle`, `SSL_CERT_FILE`) and what happens when it does not."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from aiohttp import web

from llmroute_proxy.sim import Delivery, Fault, FaultKind, FaultPlan, azure_openai_app
from llmroute_proxy.sim.tls import LocalCA
from tests.proxy.documents import Document, edited, model, provider, target, with_tier
from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import DOCUMENTS, Stack

AZURE_KEY = "azure-tls-test-key-0123456789"
QUESTION = "héllo wörld — ünïcödé 日本語 🚀 ok"
TIERS = {"openai": "oai", "anthropic": "claude", "gemini": "gem", "azure": "az"}
LONG = 512 * 1024

AZURE_PROVIDER = provider("az", "azure-openai", "{az}", key_env="TEST_AZURE_KEY", azure={"apiVersion": "2024-10-21"},
                          models=[model("gpt-4o-prod", context_window=128000, input_per_mtok=2.5,
                                        output_per_mtok=10.0)])
# Byte-by-byte delivery of a whole stream over TLS takes seconds on a loaded 2-core machine: these tests are
# about answers arriving whole, not about speed, so their deadlines leave room for that.
RELAXED = {"maxAttempts": 3, "perTryTimeout": "30s", "firstByteTimeout": "20s", "idleTimeout": "20s",
           "overallTimeout": "60s"}
BASE = [*edited(with_tier(DOCUMENTS, "main", "azure", [target("az", "gpt-4o-prod")]), "main", fallback=RELAXED),
        AZURE_PROVIDER]


def trusting(config: list[Document], ca: LocalCA, inline: frozenset[str] = frozenset({"gem"})) -> list[Document]:
    """`config` with every provider trusting `ca`: from the file ca.pem, or inline for the names in `inline`."""
    out = copy.deepcopy(config)
    for document in out:
        if document["kind"] == "LLMProvider":
            inlined = document["metadata"]["name"] in inline
            tls = {"caBundle": "".join(f"{line}\n" for line in ca.cert_pem.splitlines())} if inlined \
                else {"caFile": "ca.pem"}
            document["spec"] = {"tls": tls, **document["spec"]}
    return out


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create()


def tls_stack(tmp: Path, ca: LocalCA, delivery: Delivery | None, *, config: list[Document] | None = None,
              answer_bytes: int = 0, environ: dict[str, str] | None = None) -> Stack:
    ca.write_cert(tmp / "ca.pem")

    def azure(plan: FaultPlan) -> web.Application:
        return azure_openai_app(AZURE_KEY, faults=plan, deployments=["gpt-4o-prod"], answer_bytes=answer_bytes)

    return Stack(tmp, config=trusting(BASE, ca) if config is None else config, extra_sims={"az": azure},
                 environ={"TEST_AZURE_KEY": AZURE_KEY, **(environ or {})}, delivery=delivery,
                 ssl_context=ca.server_context(tmp / "server"), answer_bytes=answer_bytes)


DELIVERIES = {
    "one-byte": Delivery(fragment=1),
    "arbitrary-offsets-with-gaps": Delivery(fragment=64, jitter=True, gap=0.001, seed=11),
}


@pytest.fixture(scope="module", params=list(DELIVERIES))
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> Iterator[Stack]:
    with tls_stack(tmp_path_factory.mktemp("tls"), ca, DELIVERIES[request.param]) as running:
        yield running


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)


def ask(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- every provider, every path, fragmented over TLS ---------------------------------------------

@pytest.mark.parametrize("tier", TIERS)
def test_a_unary_answer_arrives_whole_at_the_first_attempt(stack: Stack, tier: str) -> None:
    assert stack.sims[TIERS[tier]].url.startswith("https://")
    raw = openai_client(stack).chat.completions.with_raw_response.create(model=tier, messages=ask())
    completion = raw.parse()
    assert f"You said: {QUESTION}" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-llmroute-provider"] == TIERS[tier]
    assert raw.headers["x-llmroute-attempts"] == "1"


@pytest.mark.parametrize("tier", TIERS)
def test_a_stream_arrives_whole_through_the_openai_sdk(stack: Stack, tier: str) -> None:
    chunks = list(openai_client(stack).chat.completions.create(
        model=tier, messages=ask(), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert f"You said: {QUESTION}" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("tier", TIERS)
def test_the_anthropic_sdk_gets_unary_and_streamed_answers(stack: Stack, tier: str) -> None:
    client = anthropic_client(stack)
    message = client.messages.create(model=tier, max_tokens=200, messages=ask())  # type: ignore[arg-type]
    assert message.content[0].type == "text" and f"You said: {QUESTION}" in message.content[0].text
    assert message.stop_reason == "end_turn"
    with client.messages.stream(model=tier, max_tokens=200, messages=ask()) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert f"You said: {QUESTION}" in "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("tier", TIERS)
def test_an_error_answer_is_read_whole_and_relayed(stack: Stack, tier: str) -> None:
    message = "temperature is wrong — ünïcödé 日本語 " + "détail " * 40
    stack.call(lambda: stack.faults[TIERS[tier]].always(Fault(FaultKind.STATUS, status=400, message=message)))
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(stack).chat.completions.create(model=tier, messages=ask())
    assert caught.value.status_code == 400
    assert message.strip() in caught.value.message
    assert caught.value.response.headers["x-llmroute-attempts"] == "1"


@pytest.mark.parametrize("tier", TIERS)
def test_an_error_answer_to_a_stream_request_is_read_whole_and_relayed(stack: Stack, tier: str) -> None:
    message = "max_tokens is too large — ünïcödé 日本語 " + "détail " * 40
    stack.call(lambda: stack.faults[TIERS[tier]].always(Fault(FaultKind.STATUS, status=400, message=message)))
    client = anthropic_client(stack)
    with pytest.raises(anthropic.BadRequestError) as caught, \
            client.messages.stream(model=tier, max_tokens=200, messages=ask()) as stream:  # type: ignore[arg-type]
        stream.get_final_message()
    assert message.strip() in caught.value.message
    assert caught.value.response.headers["x-llmroute-attempts"] == "1"


@pytest.mark.parametrize("tier", TIERS)
def test_a_retryable_error_read_in_fragments_fails_over_with_its_retry_after(stack: Stack, tier: str) -> None:
    stack.call(lambda: stack.faults[TIERS[tier]].always(Fault(FaultKind.STATUS, status=429, retry_after=30)))
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(stack).chat.completions.create(model=tier, messages=ask())
    assert caught.value.response.headers.get("retry-after") == "30"
    assert sim_requests(stack, TIERS[tier]) == 1


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("kind", [FaultKind.BREAK_AFTER_TOKENS, FaultKind.ANTHROPIC_ERROR_EVENT])
def test_a_stream_failing_after_tokens_ends_with_an_error_event(stack: Stack, tier: str, kind: FaultKind) -> None:
    stack.call(lambda: stack.faults[TIERS[tier]].always(Fault(kind, tokens=2)))
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in openai_client(stack).chat.completions.create(model=tier, messages=ask(), stream=True):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "You said" in "".join(seen)


def test_embeddings_arrive_whole(stack: Stack) -> None:
    raw = openai_client(stack).embeddings.with_raw_response.create(model="embed", input=[QUESTION, "two"])
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [16, 16]
    assert raw.headers["x-llmroute-attempts"] == "1"


# --- 512 KiB answers ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_stack(tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> Iterator[Stack]:
    delivery = Delivery(fragment=24 * 1024, jitter=True, gap=0.001, seed=5)
    with tls_stack(tmp_path_factory.mktemp("long"), ca, delivery, answer_bytes=LONG) as running:
        yield running


@pytest.mark.parametrize("tier", TIERS)
def test_a_512_kib_answer_arrives_whole_unary_and_streamed(long_stack: Stack, tier: str) -> None:
    """Claude writes at most 64,000 tokens, Gemini 2.5 65,536 and gpt-4o-mini 16,384 (their APIs refuse a
    larger max_tokens): their answers are the longest they can be, ~345, ~350 and ~85 KiB here, cut for
    length; Azure's deployment writes the whole 512 KiB."""
    client = openai_client(long_stack)
    most = {"anthropic": (64_000, 320 * 1024), "gemini": (65_536, 320 * 1024),
            "openai": (16_384, 80 * 1024)}  # tokens; bytes written at least
    room, cut_at = most.get(tier, (150_000, 0))  # tokens: as many as each provider's API allows
    raw = client.chat.completions.with_raw_response.create(model=tier, messages=ask(), max_tokens=room)
    choice = raw.parse().choices[0]
    text = choice.message.content or ""
    assert raw.headers["x-llmroute-attempts"] == "1" and f"You said: {QUESTION}" in text
    if cut_at:
        assert len(text.encode()) >= cut_at and choice.finish_reason == "length"
    else:
        assert len(text.encode()) >= LONG
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=tier, messages=ask(), stream=True, max_tokens=room) if c.choices)
    assert streamed == text


# --- trusting the CA, or not -------------------------------------------------------------------

def test_without_the_ca_the_sidecar_refuses_the_provider_certificate(tmp_path: Path, ca: LocalCA) -> None:
    with tls_stack(tmp_path, ca, None, config=BASE) as untrusting:
        with pytest.raises(openai.APIStatusError) as caught:
            openai_client(untrusting).chat.completions.create(model="openai", messages=ask())
        status = untrusting.call(lambda: untrusting.sidecar.counters_for(
            untrusting.sidecar.table.routes[0].tiers["openai"].targets[0].id).last_error)  # type: ignore[union-attr]
    assert caught.value.status_code == 502
    assert "TLS certificate not trusted" in str(status)
    assert "certificate" in caught.value.message


def test_a_bundle_for_another_ca_does_not_verify_the_provider(tmp_path: Path, ca: LocalCA) -> None:
    stranger = LocalCA.create("a stranger")
    config = trusting(BASE, stranger, inline=frozenset(TIERS.values()))
    with tls_stack(tmp_path, ca, None, config=config) as wrong, pytest.raises(openai.APIStatusError) as caught:
        openai_client(wrong).chat.completions.create(model="gemini", messages=ask())
    assert caught.value.status_code == 502


def test_ssl_cert_file_makes_the_sidecar_trust_the_ca(tmp_path: Path, ca: LocalCA,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.write_cert(tmp_path / "bundle.pem")))
    with tls_stack(tmp_path, ca, Delivery(fragment=16, jitter=True), config=BASE) as trusting_env:
        completion = openai_client(trusting_env).chat.completions.create(model="anthropic", messages=ask())
    assert f"You said: {QUESTION}" in (completion.choices[0].message.content or "")
