"""Anthropic Messages requests: the /v1/messages (and count_tokens) body to a GenerationRequest.

Blocks map onto the one internal model: text joins into a turn's content, an assistant's
`tool_use` blocks become its tool calls (arguments = the JSON of `input`), and each user
`tool_result` block becomes a tool turn answering that call. Fields that only steer Anthropic's
own service (`metadata`, `cache_control`, `service_tier`, `context_management`, `output_config`'s
`effort`, thinking budgets) are accepted and ignored; a `system` turn inside `messages` (Claude
Code's mid-conversation system beta) is system text at that point of the conversation; anything
that would need images, documents or server-side tools gets a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tholos_mlx.api import fields as f
from tholos_mlx.errors import InvalidRequest, Unsupported
from tholos_mlx.request import (
    GenerationRequest,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)

MAX_STOPS = 64  # Anthropic documents no limit; the stop matcher's work grows with each one
BLOCK_JOIN = "\n\n"  # between text blocks of one turn (and of `system`)
ERROR_PREFIX = "Error: "  # a tool_result with is_error: the model should know the call failed
THINKING_ON = ("enabled", "adaptive")
_EXAMPLE = (
    '{"model": "MODEL", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}'
)
_IGNORED_BLOCKS = ("thinking", "redacted_thinking")  # our own thinking, sent back: not a prompt
_TEXT_BLOCK = '{"type": "text", "text": ...}'


@dataclass(frozen=True)
class MessagesRequest:
    """A Messages request: the internal request and what only this dialect's answer needs."""

    request: GenerationRequest
    thinking: bool = False  # the client asked for thinking blocks (`thinking.type` enabled)


def parse_messages(body: bytes, *, count_only: bool = False) -> MessagesRequest:
    """Validate a raw /v1/messages body (count_only: /v1/messages/count_tokens, no max_tokens)."""
    data = f.load_object(body, _EXAMPLE)
    max_tokens = f.positive_int(data, "max_tokens")
    if max_tokens is None and not count_only:
        raise InvalidRequest(
            "'max_tokens' is required: the most tokens the answer may have, such as 1024.",
            param="max_tokens",
        )
    tools = _tools(data.get("tools"))
    choice, parallel = _tool_choice(data.get("tool_choice"), tools)
    turns = _messages(data.get("messages"))
    fmt = _output_format(data)
    prefill = _prefill(turns)
    if prefill and (fmt.kind != "text" or choice.mode in ("required", "function")):
        raise InvalidRequest(
            "A begun answer (a last assistant message) cannot be combined with output_format "
            "or a forced tool_choice: those write the answer from its start.",
            param="messages",
        )
    request = GenerationRequest(
        messages=_system(data.get("system")) + turns,
        continue_final=prefill,
        model=f.model_name(data),
        temperature=f.number(data, "temperature", 1.0, low=0.0, high=1.0, low_open=False),
        top_p=f.number(data, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        top_k=_top_k(data.get("top_k")),
        max_tokens=max_tokens,
        stop=f.stop_strings(data, "stop_sequences", MAX_STOPS),
        stream=False if count_only else f.boolean(data, "stream"),
        response_format=fmt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    return MessagesRequest(request, thinking=_thinking(data.get("thinking")))


# -- the conversation --


def _prefill(turns: tuple[Message, ...]) -> bool:
    """Whether the conversation ends with the answer begun (Anthropic's prefill): text in a
    last assistant turn, which the model continues. As Anthropic, no trailing whitespace."""
    last = turns[-1] if turns else None
    if last is None or last.role != "assistant" or last.tool_calls or not last.content:
        return False
    if last.content != last.content.rstrip():
        raise InvalidRequest(
            "final assistant content cannot end with trailing whitespace", param="messages"
        )
    return True


def _system(raw: object) -> tuple[Message, ...]:
    return () if raw is None else _system_turn(raw, "system")


def _system_turn(raw: object, where: str) -> tuple[Message, ...]:
    """A `system` turn inside `messages`: its text blocks as one system message; none if empty."""
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        text = BLOCK_JOIN.join(_text_block(b, f"{where}[{i}]") for i, b in enumerate(raw))
    else:
        raise InvalidRequest(
            f"'{where}' must be a string or an array of {_TEXT_BLOCK} blocks; got {f.kind(raw)}.",
            param=where,
        )
    return (Message("system", text),) if text else ()


def _messages(given_messages: object) -> tuple[Message, ...]:
    raw = f.messages(given_messages)
    turns: list[Message] = []
    names: dict[str, str] = {}  # tool_use id -> tool name, so a tool turn can name its function
    for i, raw_item in enumerate(raw):
        where = f"messages[{i}]"
        item = f.message_object(raw_item, where)
        given = item.get("role")
        if given not in ("user", "assistant", "system"):
            got = repr(given) if isinstance(given, str) else f.kind(given)
            raise InvalidRequest(
                f"'{where}.role' must be 'user', 'assistant' or 'system'; got {got}.",
                param=f"{where}.role",
            )
        content = item.get("content")
        if given == "system":
            turns.extend(_system_turn(content, f"{where}.content"))
            continue
        role: Role = "user" if given == "user" else "assistant"
        last = i == len(raw) - 1
        if isinstance(content, str):
            if content or not (role == "assistant" and last):  # "" ending the list: no prefill
                turns.append(Message(role, content))
            continue
        if not isinstance(content, list):
            raise InvalidRequest(
                f"'{where}.content' must be a string or an array of content blocks; "
                f"got {f.kind(content)}.",
                param=f"{where}.content",
            )
        if role == "assistant":
            turn = _assistant(content, f"{where}.content", names)
            if turn.content or turn.tool_calls or not last:
                turns.append(turn)
        else:
            if not content:
                raise InvalidRequest(
                    f"'{where}.content' must not be an empty array.", param=f"{where}.content"
                )
            turns.extend(_user(content, f"{where}.content", names))
    return tuple(turns)


def _assistant(blocks: list[Any], where: str, names: dict[str, str]) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            texts.append(_text_block(block, at))
        elif kind == "tool_use":
            call = _tool_use(block, at)
            names[call.id] = call.name
            calls.append(call)
        elif kind not in _IGNORED_BLOCKS:
            _refuse_block(kind, at, "an assistant")
    return Message("assistant", BLOCK_JOIN.join(texts), tool_calls=tuple(calls))


def _user(blocks: list[Any], where: str, names: dict[str, str]) -> list[Message]:
    """A user turn's blocks in order: tool results become tool turns, text a user turn."""
    turns: list[Message] = []
    texts: list[str] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            texts.append(_text_block(block, at))
        elif kind == "tool_result":
            if texts:
                turns.append(Message("user", BLOCK_JOIN.join(texts)))
                texts = []
            turns.append(_tool_result(block, at, names))
        else:
            _refuse_block(kind, at, "a user")
    if texts:
        turns.append(Message("user", BLOCK_JOIN.join(texts)))
    return turns


def _block_type(block: object, where: str) -> str:
    if not isinstance(block, dict):
        raise InvalidRequest(
            f"'{where}' must be a content block such as {_TEXT_BLOCK}; got {f.kind(block)}.",
            param=where,
        )
    kind = block.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest(
            f"'{where}.type' must be a string such as \"text\"; got {f.kind(kind)}.",
            param=f"{where}.type",
        )
    return kind


def _refuse_block(kind: str, where: str, whose: str) -> None:
    if kind in ("tool_use", "tool_result"):
        other = "an assistant" if kind == "tool_use" else "a user"
        raise InvalidRequest(
            f"'{where}.type' is {kind!r} in {whose} message; that block belongs in {other} "
            "message.",
            param=f"{where}.type",
        )
    raise Unsupported(
        f"'{where}.type' is {kind!r}, a block this server cannot read: it takes text, "
        "tool_use and tool_result blocks only.",
        param=f"{where}.type",
    )


def _text_block(block: object, where: str) -> str:
    kind = _block_type(block, where)
    if kind != "text":
        raise Unsupported(
            f"'{where}.type' is {kind!r}; only text blocks ({_TEXT_BLOCK}) are allowed here.",
            param=f"{where}.type",
        )
    assert isinstance(block, dict)
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(
            f"'{where}.text' must be a string; got {f.kind(text)}.", param=f"{where}.text"
        )
    return text


def _tool_use(block: dict[str, Any], where: str) -> ToolCall:
    call_id, name, given = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{where}.id' must be a non-empty string.", param=f"{where}.id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{where}.name' must be a non-empty string.", param=f"{where}.name")
    if not isinstance(given, dict):
        raise InvalidRequest(
            f"'{where}.input' must be an object (the tool's arguments); got {f.kind(given)}.",
            param=f"{where}.input",
        )
    return ToolCall(call_id, name, orjson.dumps(given).decode())


def _tool_result(block: dict[str, Any], where: str, names: dict[str, str]) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(
            f"'{where}.tool_use_id' is required: the id of the tool_use block it answers.",
            param=f"{where}.tool_use_id",
        )
    raw = block.get("content")
    if raw is None:
        text = ""
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        text = BLOCK_JOIN.join(_text_block(b, f"{where}.content[{k}]") for k, b in enumerate(raw))
    else:
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of {_TEXT_BLOCK} blocks; "
            f"got {f.kind(raw)}.",
            param=f"{where}.content",
        )
    if f.boolean(block, "is_error", param=f"{where}.is_error"):
        text = ERROR_PREFIX + text
    return Message("tool", text, tool_call_id=call_id, name=names.get(call_id))


# -- sampling, tools, format --


def _top_k(raw: object) -> int:
    if raw is None:
        return 0
    if not f.is_int(raw) or raw < 0:
        got = repr(raw) if f.is_number(raw) else f.kind(raw)
        raise InvalidRequest(
            f"'top_k' must be an integer of at least 0 (0: no top-k); got {got}.", param="top_k"
        )
    return raw


def _tools(raw: object) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(
            f'\'tools\' must be an array of {{"name", "description", "input_schema"}} '
            f"objects; got {f.kind(raw)}.",
            param="tools",
        )
    tools = []
    for i, item in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(
                f"'{where}' must be an object with 'name' and 'input_schema'; got {f.kind(item)}.",
                param=where,
            )
        kind = item.get("type")
        if kind not in (None, "custom"):
            got = repr(kind) if isinstance(kind, str) else f.kind(kind)
            raise Unsupported(
                f"'{where}.type' is {got}, a tool Anthropic's servers run; this server runs "
                'none: give your own tools as {"name", "description", "input_schema"}.',
                param=f"{where}.type",
            )
        if "input_schema" not in item:
            raise InvalidRequest(
                f"'{where}.input_schema' is required: a JSON Schema of the tool's input object.",
                param=f"{where}.input_schema",
            )
        tools.append(
            f.tool(
                item.get("name"),
                item.get("description"),
                item.get("input_schema"),
                item.get("strict"),
                where,
                schema_field="input_schema",
            )
        )
    return f.distinct_names(tools, "name")


def _tool_choice(raw: object, tools: tuple[Tool, ...]) -> tuple[ToolChoice, bool]:
    """`tool_choice` as a ToolChoice, and whether parallel calls are allowed."""
    if raw is None:
        return ToolChoice("auto" if tools else "none"), True
    kind = raw.get("type") if isinstance(raw, dict) else None
    modes = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}
    if not isinstance(raw, dict) or kind not in modes:
        got = f"type {kind!r}" if isinstance(raw, dict) and kind is not None else f.kind(raw)
        raise InvalidRequest(
            '\'tool_choice\' must be {"type": "auto"}, {"type": "any"}, '
            f'{{"type": "tool", "name": ...}} or {{"type": "none"}}; got {got}.',
            param="tool_choice",
        )
    name = raw.get("name")
    if kind == "tool" and not isinstance(name, str):
        raise InvalidRequest(
            '\'tool_choice.name\' is required with {"type": "tool"}: the tool to call.',
            param="tool_choice.name",
        )
    choice = ToolChoice(modes[kind], name if kind == "tool" else None)  # type: ignore[arg-type]
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(
            f"'tool_choice' is {kind!r}, which asks for a tool call, but 'tools' is empty "
            "or missing.",
            param="tool_choice",
        )
    if kind == "tool" and name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"'tool_choice.name' is {name!r}, which is not one of the names in 'tools'.",
            param="tool_choice.name",
        )
    disabled = f.boolean(
        raw, "disable_parallel_tool_use", param="tool_choice.disable_parallel_tool_use"
    )
    return choice, not disabled


def _output_format(data: Mapping[str, object]) -> ResponseFormat:
    """`output_config.format` (or the beta's top-level `output_format`): a JSON schema, or text."""
    config = data.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequest(
            f"'output_config' must be an object; got {f.kind(config)}.", param="output_config"
        )
    raw, param = (config or {}).get("format"), "output_config.format"
    if raw is None:
        raw, param = data.get("output_format"), "output_format"
    if raw is None:
        return ResponseFormat()
    if not isinstance(raw, dict) or raw.get("type") != "json_schema":
        raise InvalidRequest(
            f'\'{param}\' must be {{"type": "json_schema", "schema": {{...}}}}.', param=param
        )
    schema = raw.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"'{param}.schema' must be a JSON Schema object; got {f.kind(schema)}.",
            param=f"{param}.schema",
        )
    # Not strict: Anthropic's format has no such switch, and a keyword llguidance cannot
    # enforce (a zod record's propertyNames) is reported in a header rather than refused.
    return ResponseFormat("json_schema", schema=schema, path=param)


def _thinking(raw: object) -> bool:
    """Whether the client wants thinking blocks; budgets are Anthropic's and are ignored."""
    return isinstance(raw, dict) and raw.get("type") in THINKING_ON
