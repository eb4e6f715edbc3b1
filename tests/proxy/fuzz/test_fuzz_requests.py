"""Fuzz: any request body gets through both front doors and every request translator as either a
translated request or a `BadRequest` naming a field — never another exception."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import given

from llmroute_proxy.dialects.anthropic.request_in import AnthropicOnly, request_to_canonical, routing_summary
from llmroute_proxy.dialects.base import ChatRequest, NativeBody, NativeDialect, UpstreamRequest
from llmroute_proxy.dialects.responses import request_in as responses
from llmroute_proxy.errors import BadRequest
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.table import ProviderType, Target
from llmroute_proxy.validation import validate_chat, validate_embeddings
from tests.proxy.fuzz.strategies import (
    FUZZ,
    chat_requests,
    embedding_requests,
    messages_requests,
    responses_requests,
)
from tests.proxy.fuzz.targets import PROVIDERS


def translate_everywhere(build: Callable[[Provider, Target], UpstreamRequest]) -> None:
    """Every provider either builds a JSON request or refuses with a BadRequest."""
    for provider, target in PROVIDERS:
        try:
            upstream = build(provider, target)
        except BadRequest as refused:
            assert refused.message
            continue
        assert upstream.url.startswith(("http://", "https://"))
        assert isinstance(orjson.loads(upstream.body or b"{}"), dict)


@FUZZ
@given(chat_requests)
def test_any_chat_body_is_translated_or_refused_by_name(body: Any) -> None:
    try:
        checked = validate_chat(body)
    except BadRequest as refused:
        assert refused.message
        return
    chat = ChatRequest(checked)
    translate_everywhere(lambda provider, target: provider.chat_request(chat, target))


@FUZZ
@given(messages_requests)
def test_any_messages_body_is_translated_or_refused_by_name(body: Any) -> None:
    try:
        canonical = request_to_canonical(body)
    except AnthropicOnly:
        chat = ChatRequest(validate_chat(routing_summary(body)),
                           NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body, AnthropicOnly("")))
        anthropic = [(p, t) for p, t in PROVIDERS if t.provider_type is ProviderType.ANTHROPIC]
        for provider, target in anthropic:
            assert isinstance(orjson.loads(provider.chat_request(chat, target).body or b"{}"), dict)
        return
    except BadRequest as refused:
        assert refused.message
        return
    # what the front door derived must pass the same checks as a client's own OpenAI request
    chat = ChatRequest(validate_chat(canonical), NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body))
    translate_everywhere(lambda provider, target: provider.chat_request(chat, target))


@FUZZ
@given(embedding_requests)
def test_any_embeddings_body_is_translated_or_refused_by_name(body: Any) -> None:
    try:
        checked = validate_embeddings(body)
    except BadRequest:
        return
    translate_everywhere(lambda provider, target: provider.embeddings_request(checked, target))


@FUZZ
@given(responses_requests)
def test_any_responses_body_is_translated_or_refused_by_name(body: Any) -> None:
    try:
        turn = responses.request_to_canonical(body, ())
        chat = ChatRequest(validate_chat(turn.canonical))
    except BadRequest as refused:
        assert refused.message
        return
    translate_everywhere(lambda provider, target: provider.chat_request(chat, target))
