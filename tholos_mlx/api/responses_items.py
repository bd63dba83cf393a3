"""A stored response's input items, as GET /v1/responses/{id}/input_items lists them.

Each item of the request's `input` is kept as the client sent it, given an id where it had
none (a string input is one user message), and listed a page at a time in the shape the
OpenAI SDK's cursor pages read: `object: "list"`, `data`, `first_id`, `last_id`, `has_more`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tholos_mlx.api.responses_output import new_id
from tholos_mlx.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def input_items(raw: object) -> tuple[dict[str, Any], ...]:
    """The items of an already validated `input`, each with an id and a type."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    assert isinstance(raw, list)
    return tuple(_item(dict(item)) for item in raw)


def _item(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.setdefault("type", "message")
    item.setdefault("id", new_id(_PREFIXES.get(kind, kind.split("_")[0])))
    if kind == "message":
        item.setdefault("status", "completed")
        if isinstance(item.get("content"), str):  # as OpenAI lists it: a part, not a string
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        if item.get("role") == "assistant":
            for part in item["content"]:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    part.setdefault("annotations", [])
    elif kind in ("function_call", "function_call_output"):
        item.setdefault("status", "completed")
    return item


def page(items: Sequence[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of the items: `order` asc or desc (OpenAI's default), `after` an item id,
    `limit` 1 to 100 (default 20); a 400 names a bad one."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"'order' must be 'asc' or 'desc'; got {order!r}.", param="order")
    limit = _limit(query.get("limit"))
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after is not None:
        ids = [i["id"] for i in ordered]
        if after not in ids:
            raise InvalidRequest(
                f"'after' is {after!r}, which is not an item of this response.", param="after"
            )
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    rule = f"'limit' must be an integer from 1 to {MAX_LIMIT}"
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{rule}; got {raw!r}.", param="limit") from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"{rule}; got {value}.", param="limit")
    return value
