"""What the sidecar answers about a stored response beyond the response itself:
`GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`.

Input items are the request's own `input`, kept beside the stored response as the client sent it,
each given the item shape OpenAI lists (a string input is one user message with one `input_text`
part; a message's string content becomes one part; every item has an `id` and a `status`). Only
this request's items are listed, not those of the earlier turns a `previous_response_id` continued:
those are listed under their own response ids. Nothing is cancellable: the sidecar runs no response
in the background, and a client ends a running request by closing its connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llmroute_proxy.errors import BadRequest

JSON = dict[str, Any]
NewId = Callable[[str], str]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_PART_TYPES = {"user": "input_text", "system": "input_text", "developer": "input_text", "assistant": "output_text"}


def input_items(value: Any, new_id: NewId) -> list[JSON]:
    """The items of a (validated) request's `input`, as `input_items` lists them."""
    if isinstance(value, str):  # the common input, and what the loop below makes of it
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}],
                 "id": new_id("msg"), "status": "completed"}]
    items: list[JSON] = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        shaped = {"type": "message", **item}
        kind = shaped["type"]
        if kind == "message" and isinstance(shaped.get("content"), str):
            part_type = _PART_TYPES.get(str(shaped.get("role")), "input_text")
            shaped["content"] = [{"type": part_type, "text": shaped["content"]}]
        if not isinstance(shaped.get("id"), str):
            shaped["id"] = new_id(_ID_PREFIXES.get(kind, "item") if isinstance(kind, str) else "item")
        shaped.setdefault("status", "completed")
        items.append(shaped)
    return items


def page(items: list[JSON], query: Mapping[str, str]) -> JSON:
    """One page of `items`: `limit` (1–100, default 20), `order` (`desc`, the default, or `asc`) and
    `after` (an item id: the page starts after it); `include` is accepted, as every item is kept whole."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc.", param="order", code="invalid_value")
    limit_text = query.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}.", param="limit",
                         code="invalid_value")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        position = next((i for i, item in enumerate(ordered) if item.get("id") == after), None)
        if position is None:
            raise BadRequest(f"'after' {after!r} is not an input item of this response.", param="after",
                             code="invalid_value")
        ordered = ordered[position + 1:]
    data = ordered[: int(limit_text)]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > len(data)}


def not_cancellable(response_id: str) -> BadRequest:
    return BadRequest(f"Response '{response_id}' cannot be cancelled: only background responses can be, and "
                      "llmroute runs none in the background (it answers while the client waits; closing the "
                      "connection ends a running request).", code="not_cancellable")
