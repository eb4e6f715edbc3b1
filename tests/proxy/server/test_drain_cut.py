"""At the drain deadline a request still waiting for its upstream is answered, not dropped."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from llmroute_proxy.server.runner import drain
from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


async def test_a_request_still_waiting_at_the_drain_deadline_gets_503_draining_in_its_dialect(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.HANG)))
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.HANG)))
    try:
        async with aiohttp.ClientSession() as session:
            waiting = [
                asyncio.create_task(session.post(stack.url + "/v1/chat/completions",
                                                 json={"model": "openai", "messages": HELLO})),
                asyncio.create_task(session.post(stack.url + "/v1/messages", json={
                    "model": "anthropic", "max_tokens": 10, "messages": HELLO, "stream": True})),
            ]
            async with asyncio.timeout(10):
                while stack.call(lambda: stack.sidecar.in_flight) < 2:
                    await asyncio.sleep(0.01)
            stack.run(drain(stack.sidecar, 0.05))
            oai, claude = await asyncio.wait_for(asyncio.gather(*waiting), 10)
            assert stack.call(lambda: stack.sidecar.in_flight) == 0
            assert oai.status == 503 and claude.status == 503
            assert (await oai.json())["error"]["code"] == "draining"
            assert "shutting down" in (await oai.json())["error"]["message"]
            assert orjson.loads(await claude.read())["error"]["type"] == "overloaded_error"
    finally:
        def reset() -> None:
            stack.sidecar.draining = False
            stack.sidecar.drain_cut = None

        stack.call(reset)
