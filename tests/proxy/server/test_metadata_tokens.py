"""The pod's token from the metadata server (`GoogleTokens.metadata_token`), on an injected clock and fetch:
one fetch for many waiting requests, kept until near its end, a failure shared by those waiting and not
remembered, and the metadata server's answers read strictly."""

from __future__ import annotations

import asyncio

import pytest

from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.google_tokens import GoogleTokens, _token_answer


class Metadata:
    """A metadata server's answers, one per fetch, each after the event loop turns once."""

    def __init__(self, *answers: tuple[str, float] | UpstreamError) -> None:
        self.answers = list(answers)
        self.fetches = 0

    async def __call__(self) -> tuple[str, float]:
        self.fetches += 1
        await asyncio.sleep(0)
        answer = self.answers.pop(0)
        if isinstance(answer, UpstreamError):
            raise answer
        return answer


def test_requests_waiting_for_a_token_share_one_fetch() -> None:
    metadata = Metadata(("ya29.one", 3599))
    tokens = GoogleTokens(lambda: 1000.0, metadata)

    async def many() -> list[str]:
        return await asyncio.gather(*(tokens.metadata_token() for _ in range(20)))

    assert asyncio.run(many()) == ["ya29.one"] * 20
    assert metadata.fetches == 1


def test_a_token_is_kept_until_five_minutes_before_its_end_or_half_its_life() -> None:
    now = [0.0]
    metadata = Metadata(("ya29.one", 3600), ("ya29.two", 400), ("ya29.three", 3600))
    tokens = GoogleTokens(lambda: now[0], metadata)

    async def at(seconds: float) -> str:
        now[0] = seconds
        return await tokens.metadata_token()

    assert asyncio.run(at(0)) == "ya29.one"
    assert asyncio.run(at(3299)) == "ya29.one"
    assert asyncio.run(at(3300)) == "ya29.two"  # 300 s before its end
    assert asyncio.run(at(3499)) == "ya29.two"  # given with 400 s left: kept for half of them
    assert asyncio.run(at(3500)) == "ya29.three"
    assert metadata.fetches == 3


def test_a_failed_fetch_fails_every_waiting_request_and_the_next_one_asks_again() -> None:
    down = UpstreamError(FailureKind.SERVER_ERROR, "the metadata server at m gave no token: HTTP 503")
    metadata = Metadata(down, ("ya29.back", 3599))
    tokens = GoogleTokens(lambda: 0.0, metadata)

    async def two() -> list[str | BaseException]:
        return await asyncio.gather(tokens.metadata_token(), tokens.metadata_token(), return_exceptions=True)

    assert asyncio.run(two()) == [down, down]
    assert asyncio.run(tokens.metadata_token()) == "ya29.back"
    assert metadata.fetches == 2


def test_without_a_metadata_server_a_token_is_the_targets_auth_failure() -> None:
    with pytest.raises(UpstreamError) as failed:
        asyncio.run(GoogleTokens(lambda: 0.0).metadata_token())
    assert failed.value.kind is FailureKind.AUTH


@pytest.mark.parametrize("body", [b"", b"{}", b'{"access_token": "", "expires_in": 3599}',
                                  b'{"access_token": "ya29.x", "expires_in": 0}',
                                  b'{"access_token": "ya29.x", "expires_in": "3599"}', b"[1]"])
def test_an_answer_without_a_token_and_a_positive_life_is_the_servers_failure(body: bytes) -> None:
    with pytest.raises(UpstreamError) as failed:
        _token_answer(body, "metadata.google.internal")
    assert failed.value.kind is FailureKind.SERVER_ERROR
    assert "metadata.google.internal" in failed.value.message


def test_a_well_formed_answer_gives_its_token_and_life() -> None:
    assert _token_answer(b'{"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}', "m") == (
        "ya29.x", 3599.0)
