"""OpenAI Responses requests: a POST /v1/responses body to a GenerationRequest.

The wire's input items (messages, function_call, function_call_output) become the one internal
conversation; `instructions` its system turn, which a follow-up does not inherit (as OpenAI
does). Reasoning input items are accepted and left out of the prompt: chat templates drop past
thinking anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from tholos_mlx.api import fields as f
from tholos_mlx.api.responses_custom import arguments as custom_arguments
from tholos_mlx.api.responses_custom import custom_tool
from tholos_mlx.api.responses_items import input_items
from tholos_mlx.api.responses_output import Echo
from tholos_mlx.api.shared_openai import json_schema_format, read_tool_choice, response_format
from tholos_mlx.api.validation import Wire, load, refuse
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

ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
}
TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
# OpenAI's hosted tools: this server cannot run them, so they are left out of the prompt.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer_use",
        "image_generation",
        "mcp",
        "local_shell",
    }
)
HOSTED_PREFIXES = ("web_search_", "computer_use_")  # dated versions: web_search_2025_08_26
_EXAMPLE = '{"input": "Hello"}'


@dataclass(frozen=True)
class ResponsesRequest:
    """A /v1/responses request: this turn's input, what the answer repeats, the sampling settings."""

    input: tuple[Message, ...]
    echo: Echo
    base: GenerationRequest  # every setting; its messages are filled in by generation()
    items: tuple[dict[str, Any], ...] = ()  # `input` as sent, with ids: for input_items

    def generation(self, history: tuple[Message, ...] = ()) -> GenerationRequest:
        """The request to run: instructions, the stored conversation, then this turn's input."""
        system = (Message("system", self.echo.instructions),) if self.echo.instructions else ()
        return replace(self.base, messages=_named_results(system + history + self.input))


# -- the request --


def _refuse(message: str) -> Callable[[Any], Any]:
    """A validator refusing any value but absent (null)."""

    def check(value: Any) -> Any:
        if value is not None:
            raise refuse(message)
        return value

    return check


def _in_foreground(value: Any) -> Any:
    if value is True:
        raise refuse(
            "responses are not supported: this server answers while you wait (stream for progress)."
        )
    return value


def _no_logprobs(value: Any) -> Any:
    if value not in (None, 0):
        raise refuse("is not supported: no logprobs.")
    return value


class ResponsesBody(Wire):
    """A /v1/responses body, fields in the order they are checked. `input`, `tools`,
    `tool_choice` and `text` are read by their own readers below (items, namespaces, custom
    and hosted tools); the agents' fields that change nothing here are accepted as anything."""

    RULE: ClassVar[str] = "a JSON object"
    background: Annotated[Any, AfterValidator(_in_foreground)] = None
    conversation: Annotated[
        Any,
        AfterValidator(
            _refuse(
                "is not supported here: pass 'previous_response_id' to continue a stored response."
            )
        ),
    ] = None
    prompt: Annotated[
        Any,
        AfterValidator(
            _refuse("is not supported here: send the prompt's text in 'instructions' and 'input'.")
        ),
    ] = None
    top_logprobs: Annotated[Any, AfterValidator(_no_logprobs)] = None
    tools: Any = None
    previous_response_id: str | None = Field(
        None, min_length=1, description="the id of a stored response"
    )
    instructions: str | None = Field(None, description="a string")
    max_output_tokens: int | None = Field(None, ge=1, description="an integer of at least 1")
    parallel_tool_calls: bool | None = Field(None, description="true or false")
    store: bool | None = Field(None, description="true or false")
    temperature: float | None = Field(None, ge=0, le=2, description="a number from 0 to 2")
    top_p: float | None = Field(
        None, gt=0, le=1, description="a number greater than 0 and at most 1"
    )
    tool_choice: Any = None
    text: Any = None
    metadata: dict[str, str] | None = Field(None, description="an object of string values")
    model: str | None = Field(None, description="a string (a model id or tier from GET /v1/models)")
    seed: int | None = Field(None, description="an integer")
    stream: bool | None = Field(None, description="true or false")
    input: Any = None
    include: Any = None
    reasoning: Any = None
    prompt_cache_key: Any = None
    client_metadata: Any = None
    safety_identifier: Any = None
    user: Any = None
    service_tier: Any = None
    truncation: Any = None


def parse_responses(body: bytes) -> ResponsesRequest:
    """Validate a raw /v1/responses body; InvalidRequest names the offending param."""
    data = load(ResponsesBody, body, _EXAMPLE)
    offered = _tools(data.tools)
    tools = tuple(offered.tools)
    echo = Echo(
        instructions=data.instructions,
        max_output_tokens=data.max_output_tokens,
        parallel_tool_calls=data.parallel_tool_calls is not False,
        previous_response_id=data.previous_response_id,
        store=data.store is not False,
        temperature=1.0 if data.temperature is None else data.temperature,
        top_p=1.0 if data.top_p is None else data.top_p,
        tools=tools,
        tool_choice=_tool_choice(data.tool_choice, tools),
        text_format=_text_format(data.text),
        metadata=data.metadata or {},
        namespaces=offered.namespaces,
        custom=offered.custom,
    )
    base = GenerationRequest(
        messages=(),
        model=data.model or None,
        temperature=echo.temperature,
        top_p=echo.top_p,
        max_tokens=echo.max_output_tokens,
        seed=data.seed,
        response_format=echo.text_format,
        tools=tools,
        tool_choice=echo.tool_choice,
        parallel_tool_calls=echo.parallel_tool_calls,
        stream=bool(data.stream),
    )
    turns = _input(data.input)
    items = input_items(data.input)
    return ResponsesRequest(turns, echo, base, items)


def _input(raw: object) -> tuple[Message, ...]:
    if isinstance(raw, str):
        return (Message("user", raw),)
    rule = "a string, or an array of input items (messages, function_call, function_call_output)"
    if raw is None:
        raise InvalidRequest(f"'input' is required: {rule}.", param="input")
    if not isinstance(raw, list):
        raise InvalidRequest(f"'input' must be {rule}; got {f.kind(raw)}.", param="input")
    if not raw:
        raise InvalidRequest("'input' must contain at least one item.", param="input")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(
                f"'{where}' must be an object such as "
                f'{{"role": "user", "content": "..."}}; got {f.kind(item)}.',
                param=where,
            )
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _add_call(messages, _call(item, where))
        elif kind == "custom_tool_call":
            given = item.get("input")
            if not isinstance(given, str):
                raise InvalidRequest(
                    f"'{where}.input' must be a string; got {f.kind(given)}.",
                    param=f"{where}.input",
                )
            call_id, name = _string(item, "call_id", where), _string(item, "name", where)
            _add_call(messages, ToolCall(call_id, name, custom_arguments(given)))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = _string(item, "call_id", where)
            output = _text(item.get("output"), f"{where}.output", "a string")
            messages.append(Message("tool", output, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # past thinking is not replayed to the model
        elif isinstance(kind, str):
            raise Unsupported(
                f"'{where}.type' is {kind!r}; this server takes messages, and function and "
                "custom tool calls and their outputs.",
                param=f"{where}.type",
            )
        else:
            raise InvalidRequest(
                f"'{where}' needs a 'role' (a message) or a 'type'; got neither.", param=where
            )
    return tuple(messages)


def _add_call(messages: list[Message], call: ToolCall) -> None:
    """A call joins the assistant turn before it (one turn: its text and its calls)."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        messages[-1] = replace(last, tool_calls=(*last.tool_calls, call))
    else:
        messages.append(Message("assistant", "", tool_calls=(call,)))


def _message(item: Mapping[str, object], where: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        got = repr(role) if isinstance(role, str) else f.kind(role)
        raise InvalidRequest(
            f"'{where}.role' must be one of 'user', 'assistant', 'system' or 'developer'; "
            f"got {got}.",
            param=f"{where}.role",
        )
    content = _text(item.get("content"), f"{where}.content", "a string or an array of text parts")
    return Message(ROLES[role], content)


def _text(raw: object, where: str, rule: str) -> str:
    """Content: a string, or input_text / output_text parts joined."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list) or not raw:
        got = "an empty array" if raw == [] else f.kind(raw)
        raise InvalidRequest(f"'{where}' must be {rule}; got {got}.", param=where)
    texts = []
    for j, part in enumerate(raw):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise InvalidRequest(
                f'\'{at}\' must be a part such as {{"type": "input_text", "text": ...}}.', param=at
            )
        if kind not in TEXT_PARTS:
            raise Unsupported(
                f"'{at}.type' is {kind!r}, but this server reads only text: "
                "'input_text' and 'output_text' parts.",
                param=f"{at}.type",
            )
        texts.append(_string(part, TEXT_PARTS[kind], at, empty=True))
    return "".join(texts)


def _call(item: Mapping[str, object], where: str) -> ToolCall:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise InvalidRequest(
            f"'{where}.arguments' must be a string of JSON; got {f.kind(arguments)}.",
            param=f"{where}.arguments",
        )
    return ToolCall(_string(item, "call_id", where), _string(item, "name", where), arguments)


def _string(item: Mapping[str, object], name: str, where: str, *, empty: bool = False) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise InvalidRequest(
            f"'{where}.{name}' must be a {'' if empty else 'non-empty '}string; "
            f"got {f.kind(value)}.",
            param=f"{where}.{name}",
        )
    return value


def _named_results(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Tool results carry their function's name, found in the call they answer."""
    names: dict[str, str] = {}
    named = []
    for m in messages:
        names.update((c.id, c.name) for c in m.tool_calls)
        if m.role == "tool" and m.name is None and m.tool_call_id in names:
            m = replace(m, name=names[m.tool_call_id])
        named.append(m)
    return tuple(named)


@dataclass
class _Tools:
    """The tools as parsed: what the model is offered, and what the answer needs to know."""

    tools: list[Tool] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)  # function -> its namespace
    custom: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> wire tool

    def add(self, item: Mapping[str, Any], where: str, kind: str, namespace: str | None) -> None:
        if kind == "custom":
            found = custom_tool(item, where)
            self.tools.append(found.tool)
            self.custom[found.tool.name] = found.wire
        else:
            self.tools.append(_function(item, where))
        if namespace is not None:
            self.namespaces[self.tools[-1].name] = namespace


def _tools(raw: object) -> _Tools:
    """The function and custom tools, a namespace's ones flattened, and which namespace each
    of those is in; hosted tools this server cannot run are left out (Codex offers
    `web_search`)."""
    found = _Tools()
    for i, item in enumerate(f.array(raw, "tools", "function tools")):
        where = f"tools[{i}]"
        kind = _tool_type(item, where)
        if kind in HOSTED_TOOLS or kind.startswith(HOSTED_PREFIXES):
            continue  # the model is never told of it, so it never calls it
        if kind == "namespace":
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(
                    f"'{where}.name' must be a non-empty string.", param=f"{where}.name"
                )
            for j, inner in enumerate(f.array(item.get("tools"), f"{where}.tools", "functions")):
                at = f"{where}.tools[{j}]"
                inner_kind = _tool_type(inner, at)
                if inner_kind not in ("function", "custom"):
                    raise InvalidRequest(
                        f'\'{at}.type\' must be "function" or "custom" inside a namespace.',
                        param=f"{at}.type",
                    )
                found.add(inner, at, inner_kind, name)
            continue
        if kind not in ("function", "custom"):
            raise InvalidRequest(
                f'\'{where}.type\' must be "function", "custom" or "namespace" (hosted '
                "tools such as web_search are left out: this server cannot run them); got "
                f"{kind!r}.",
                param=f"{where}.type",
            )
        found.add(item, where, kind, None)
    f.distinct_names(found.tools, "name")
    return found


def _tool_type(item: object, where: str) -> str:
    kind = item.get("type") if isinstance(item, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest(
            f'\'{where}\' must be a tool such as {{"type": "function", "name": ...}}; got '
            + (f"type {f.kind(kind)}" if isinstance(item, dict) else f.kind(item))
            + ".",
            param=f"{where}.type",
        )
    return kind


def _function(item: Mapping[str, Any], where: str) -> Tool:
    get = item.get
    return f.tool(get("name"), get("description"), get("parameters"), get("strict"), where)


def _tool_choice(raw: object, tools: tuple[Tool, ...]) -> Any:
    """The Responses shapes: "none", "auto", "required" or {"type": "function", "name"}.

    Left out, it is "auto" even without tools, as OpenAI echoes it (no tools: no call)."""
    if raw is None:
        return ToolChoice("auto")
    if isinstance(raw, dict) and raw.get("type") == "custom":  # a custom tool, by its name
        raw = {**raw, "type": "function"}
    if isinstance(raw, dict) and raw.get("type") != "function":
        kind = raw.get("type")
        hosted = isinstance(kind, str) and (
            kind in HOSTED_TOOLS or kind.startswith(HOSTED_PREFIXES)
        )
        raise InvalidRequest(
            (
                f"'tool_choice' forces {kind!r}, a hosted tool this server cannot run; "
                if hosted
                else '\'tool_choice\' must be "none", "auto", "required" or '
                '{"type": "function", "name": ...}: this server has no built-in tools; got '
                f"type {kind!r}."
            )
            + ('use "auto", "required" or a function.' if hosted else ""),
            param="tool_choice",
        )
    return read_tool_choice(raw, tools)


def _text_format(raw: object) -> ResponseFormat:
    if raw is None:
        return ResponseFormat()
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f'\'text\' must be an object such as {{"format": {{"type": "json_object"}}}}; '
            f"got {f.kind(raw)}.",
            param="text",
        )
    fmt = raw.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return response_format(fmt, "text.format")
    name = fmt.get("name")
    if not isinstance(name, str) or not f.TOOL_NAME.match(name):
        raise InvalidRequest(
            "'text.format.name' is required: 1 to 64 letters, digits, '_' or '-'.",
            param="text.format.name",
        )
    if not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest(
            "'text.format.schema' is required: a JSON Schema object.", param="text.format.schema"
        )
    strict = fmt.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(
            f"'text.format.strict' must be true or false; got {f.kind(strict)}.",
            param="text.format.strict",
        )
    return json_schema_format(fmt["schema"], name, strict, "text.format")


def wire_param(param: str | None) -> str | None:
    """An internal request's field name (from the engine's errors) as this API calls it."""
    if param is None:
        return None
    if param.startswith("messages"):  # its indexes count instructions and history too
        return "input"
    if param.startswith("response_format"):
        return "text.format" + param[len("response_format") :].removeprefix(".json_schema")
    if param.startswith("tools[") and ".function" in param:
        return param.replace(".function", "", 1)
    if param == "max_tokens":  # the memory guard's refusal
        return "max_output_tokens"
    return param
