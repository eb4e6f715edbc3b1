"""Web pages cannot spend the sidecar's keys: browser-originated requests are refused unless allowed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anthropic
import openai
import orjson
import pytest

from llmroute_proxy.cli import listen, parser, settings
from llmroute_proxy.server.origins import normal_origin, parse_origins, refused_header
from llmroute_proxy.server.state import Settings
from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import Stack

ALLOWED = "https://app.example.com"
HELLO = [{"role": "user", "content": "hello"}]
CHAT = orjson.dumps({"model": "openai", "messages": HELLO})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack"), Settings(allow_origins=parse_origins([ALLOWED]))) as running:
        yield running


async def post(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object],
                                                                                        aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as session, session.post(stack.url + path, data=body,
                                                                headers=headers) as response:
        return response.status, orjson.loads(await response.read()), response


async def test_a_text_plain_post_from_a_web_page_is_refused_in_openai_shape(stack: Stack) -> None:
    # a page needs no CORS preflight for this one: it used to reach the provider
    status, body, response = await post(stack, "/v1/chat/completions", CHAT,
                                        {"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert status == 403
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "browser_origin_refused" and error["type"] == "permission_error"
    assert error["param"] == "Origin" and "https://evil.example" in error["message"]
    assert response.headers["x-llmroute-attempts"] == "0"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert sim_requests(stack, "oai") == 0


async def test_a_web_page_on_the_anthropic_endpoint_is_refused_in_anthropic_shape(stack: Stack) -> None:
    body = orjson.dumps({"model": "anthropic", "max_tokens": 10, "messages": HELLO})
    status, answer, _ = await post(stack, "/v1/messages", body,
                                   {"Content-Type": "text/plain", "Origin": "http://localhost:8080"})
    assert status == 403
    assert answer["type"] == "error"
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["type"] == "permission_error" and "Origin" in error["message"]
    assert sim_requests(stack, "claude") == 0


@pytest.mark.parametrize("site", ["cross-site", "same-site", "same-origin"])
async def test_a_browser_fetch_without_origin_is_refused_by_its_sec_fetch_site(stack: Stack, site: str) -> None:
    status, body, _ = await post(stack, "/v1/chat/completions", CHAT, {"Sec-Fetch-Site": site})
    assert status == 403
    error = body["error"]
    assert isinstance(error, dict) and error["param"] == "Sec-Fetch-Site" and site in error["message"]


async def test_a_cross_site_get_of_the_model_list_is_refused(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            stack.url + "/v1/models", headers={"Sec-Fetch-Site": "cross-site"}) as response:
        assert response.status == 403


async def test_a_typed_url_and_a_plain_curl_post_are_served(stack: Stack) -> None:
    # Sec-Fetch-Site: none is a person's own navigation; curl -d sends a form content type and no Origin
    status, _, _ = await post(stack, "/v1/chat/completions", CHAT, {"Sec-Fetch-Site": "none"})
    assert status == 200
    status, body, _ = await post(stack, "/v1/chat/completions", CHAT,
                                 {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "curl/8.5.0"})
    assert status == 200 and body["object"] == "chat.completion"


def test_the_official_sdks_are_served(stack: Stack) -> None:
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    assert oai.chat.completions.create(model="openai", messages=HELLO).choices[0].message.content  # type: ignore[arg-type]
    assert any(c.choices for c in oai.chat.completions.create(model="openai", messages=HELLO,  # type: ignore[arg-type]
                                                                   stream=True))
    claude = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    assert claude.messages.create(model="anthropic", max_tokens=10, messages=HELLO).content  # type: ignore[arg-type]


async def test_an_allowed_origin_is_served_with_cors_headers_also_when_streaming(stack: Stack) -> None:
    stream = orjson.dumps({"model": "openai", "messages": HELLO, "stream": True})
    async with aiohttp.ClientSession() as session:
        for body in (CHAT, stream):
            async with session.post(stack.url + "/v1/chat/completions", data=body,
                                    headers={"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"}) as response:
                await response.read()
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
                assert "x-llmroute-provider" in response.headers["Access-Control-Expose-Headers"]
                assert "Origin" in response.headers.getall("Vary")


async def test_an_allowed_origin_gets_its_preflight_answered_and_another_does_not(stack: Stack) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    async with aiohttp.ClientSession() as session:
        async with session.options(stack.url + "/v1/chat/completions",
                                   headers={"Origin": ALLOWED, **asked}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert response.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
        async with session.options(stack.url + "/v1/chat/completions",
                                   headers={"Origin": "https://evil.example", **asked}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, None),
    ({"Sec-Fetch-Mode": "cors"}, None),  # Node's fetch sends it on every request
    ({"Sec-Fetch-Site": "None"}, None),
    ({"Origin": "null"}, ("Origin", "null")),
    ({"Origin": "HTTPS://APP.example.com:443"}, None),
    ({"Origin": "https://app.example.com:8443"}, ("Origin", "https://app.example.com:8443")),
    ({"Origin": "http://app.example.com"}, ("Origin", "http://app.example.com")),
    ({"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"}, None),
    ({"Sec-Fetch-Site": "same-origin"}, ("Sec-Fetch-Site", "same-origin")),
])
def test_which_headers_mark_a_refused_browser_request(headers: dict[str, str],
                                                      refused: tuple[str, str] | None) -> None:
    assert refused_header(headers, parse_origins([ALLOWED])) == refused


def test_origins_are_compared_as_browsers_write_them() -> None:
    assert parse_origins(["https://App.Example.com/", " http://localhost:3000", ""]) == {
        "https://app.example.com", "http://localhost:3000"}
    assert normal_origin("http://h:80") == "http://h"


@pytest.mark.parametrize("bad", ["*", "https://*.example.com", "https://app.example.com/path", "app.example.com",
                                 "ftp://x", "https://u@app.example.com"])
def test_what_is_not_an_origin_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        parse_origins([bad])


def test_flags_and_environment_set_the_origins_and_admin_hosts(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    args = parser().parse_args(["serve", "--allow-origins", "https://a.example,http://b.example:81",
                                "--admin-hosts", "10.1.2.3, llmroute.local"])
    assert settings(args).allow_origins == {"https://a.example", "http://b.example:81"}
    assert listen(args).admin_hosts == {"10.1.2.3", "llmroute.local"}
    monkeypatch.setenv("LLMROUTE_ALLOW_ORIGINS", "https://c.example")
    monkeypatch.setenv("LLMROUTE_ADMIN_HOSTS", "10.9.9.9")
    args = parser().parse_args(["serve"])
    assert settings(args).allow_origins == {"https://c.example"}
    assert listen(args).admin_hosts == {"10.9.9.9"}
    monkeypatch.delenv("LLMROUTE_ALLOW_ORIGINS")
    monkeypatch.delenv("LLMROUTE_ADMIN_HOSTS")
    args = parser().parse_args(["serve"])
    assert settings(args).allow_origins == frozenset() and listen(args).admin_hosts == frozenset()


async def test_the_admin_plane_shows_status_to_a_configured_host_name(tmp_path: Path) -> None:
    from llmroute_proxy.server.runner import Listen, build_sidecar, start_listeners

    sidecar = build_sidecar()
    runners = await start_listeners(sidecar, Listen(port=0, admin_port=0, admin_hosts=frozenset({"10.1.2.3"})))
    try:
        admin = f"http://127.0.0.1:{runners[1].addresses[0][1]}"
        async with aiohttp.ClientSession() as session:
            async with session.get(admin + "/status", headers={"Host": "10.1.2.3:15401"}) as allowed:
                assert allowed.status == 200
            async with session.get(admin + "/status", headers={"Host": "evil.example:15401"}) as foreign:
                assert foreign.status == 403
    finally:
        for runner in runners:
            await runner.cleanup()
        await sidecar.upstream.close()
        sidecar.telemetry.shutdown()
