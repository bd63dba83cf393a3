"""The chat prompt: messages (and tools) through the model's chat template into token ids.

One function for the server and the benchmark. Tools go through the model's own template when
it renders `tools`; otherwise they use the documented default format: a system-prompt list of
the functions and calls written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
with results given back in a user turn inside `<tool_response>` tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import Message, Tool, ToolCall
from tholos_mlx.volatile import steady

# A plain ChatML template for model folders that ship none.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_CALL_START = "<tool_call>"
DEFAULT_CALL_END = "</tool_call>"
DEFAULT_TOOLS_PROMPT = (
    "You can call functions. The functions you may call are listed below as JSON, one per line:\n"
    "{functions}\n"
    "To call a function, answer with only this, and nothing after it:\n"
    '<tool_call>{{"name":"FUNCTION_NAME","arguments":{{...}}}}</tool_call>\n'
    "Results come back inside <tool_response></tool_response> tags."
)


@dataclass(frozen=True)
class ToolFormat:
    """How a model writes tool calls: the markers around each call, and whether its template lists tools."""

    start: str = DEFAULT_CALL_START
    end: str = DEFAULT_CALL_END
    native: bool = False


# Above any context: the server checks a prompt against the model's context itself.
_UNBOUNDED = 1 << 62


def own_length_check(tokenizer: Any) -> Any:
    """The tokenizer, told not to warn about long prompts: the server refuses those itself.

    transformers (5.x) logs "Token indices sequence length is longer than the specified maximum"
    for any encode past `model_max_length`, even for a prompt answered with a clean 400.
    """
    if getattr(tokenizer, "model_max_length", None) is not None:
        tokenizer.model_max_length = _UNBOUNDED
    return tokenizer


def tool_format(tokenizer: Any) -> ToolFormat:
    """The model's own markers when mlx-lm knows them and its template renders tools; else the default."""
    template = getattr(tokenizer, "chat_template", None)
    # A renderer in code (mlx-lm's chat_template_type: DeepSeek-V3.2, ...) knows its tools.
    native = (isinstance(template, str) and "tools" in template) or (
        template is None and _has_template(tokenizer)
    )
    if not native:
        return ToolFormat()
    start = getattr(tokenizer, "tool_call_start", None)
    end = getattr(tokenizer, "tool_call_end", None)
    if isinstance(start, str) and isinstance(end, str) and start and end:
        return ToolFormat(start, end, native=True)
    return ToolFormat(native=True)


def prompt_ids(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: Sequence[Tool] = (),
    fmt: ToolFormat | None = None,
    continue_final: bool = False,
) -> list[int]:
    """The prompt's token ids, the assistant's turn opened, as the model's template writes it.

    `continue_final`: the last message is the assistant's answer begun; its turn is left open
    (the template's own rendering, cut after that text) for the model to go on from there.
    Lines agents change every request are dropped first (volatile.py): the rest stays cached."""
    messages = steady(messages)
    try:
        return _prompt_ids(tokenizer, messages, tools, fmt, continue_final)
    except InvalidRequest:
        folded = fold_late_system(messages)
        if folded == list(messages):
            raise
        # Templates that allow one system message, first (Qwen3, Gemma...), refuse the system
        # turns agents put later in the conversation: those become user text at that point.
        return _prompt_ids(tokenizer, folded, tools, fmt, continue_final)


def fold_late_system(messages: Sequence[Message]) -> list[Message]:
    """The conversation with each system turn after its first message joined to a user turn
    next to it (or made one), its text kept where it was."""
    out: list[Message] = []
    folded = False  # the last turn of `out` is a user turn holding a late system text
    for i, m in enumerate(messages):
        late = m.role == "system" and any(p.role != "system" for p in messages[:i])
        prev = out[-1] if out else None
        joinable = prev is not None and prev.role == "user" and not prev.tool_calls
        if late and joinable and prev is not None:
            out[-1] = replace(prev, content=f"{prev.content}\n\n{m.content}")
        elif late:
            out.append(Message("user", m.content))
        elif m.role == "user" and folded and prev is not None:
            out[-1] = replace(prev, content=f"{prev.content}\n\n{m.content}")
        else:
            out.append(m)
        folded = late or (folded and m.role == "user")
    return out


def _prompt_ids(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: Sequence[Tool],
    fmt: ToolFormat | None,
    continue_final: bool,
) -> list[int]:
    fmt = fmt or tool_format(tokenizer)
    extra: dict[str, Any] = {}
    if not _has_template(tokenizer):
        extra["chat_template"] = FALLBACK_TEMPLATE
    if continue_final:  # named only when asked: a template renderer in code may not know it
        extra["continue_final_message"] = True
    if fmt.native:
        turns = [_native_turn(m) for m in messages]
        if tools:
            extra["tools"] = [_tool_object(t) for t in tools]
    else:
        turns = _default_turns(messages, tools, fmt)
    try:
        text = tokenizer.apply_chat_template(
            turns, add_generation_prompt=not continue_final, tokenize=False, **extra
        )
    except Exception as exc:  # jinja's raise_exception(): the template refuses these messages
        raise InvalidRequest(
            f"The model's chat template refused these messages: {exc}", param="messages"
        ) from None
    ids: list[int] = list(tokenizer.encode(text, add_special_tokens=False))
    bos = getattr(tokenizer, "bos_token_id", None)
    if (
        getattr(tokenizer, "add_bos_token", False)
        and bos is not None
        and (not ids or ids[0] != bos)
    ):
        ids.insert(0, bos)
    return ids


def opens_thinking(tokenizer: Any, prompt: list[int]) -> bool:
    """The template opened a thinking block it did not close: the answer starts inside it."""
    if not getattr(tokenizer, "has_thinking", False):
        return False
    starts = list(getattr(tokenizer, "think_start_tokens", None) or ())
    ends = list(getattr(tokenizer, "think_end_tokens", None) or ())
    return bool(starts) and _rfind(prompt, starts) > _rfind(prompt, ends)


def _rfind(tokens: list[int], seq: list[int]) -> int:
    """Where `seq` last starts in `tokens`, else -1."""
    n = len(seq)
    for i in range(len(tokens) - n, -1, -1):
        if tokens[i : i + n] == seq:
            return i
    return -1


def _has_template(tokenizer: Any) -> bool:
    """Whether the model renders chats itself: a Jinja template, or mlx-lm's renderer in code."""
    known = getattr(tokenizer, "has_chat_template", None)  # mlx-lm's TokenizerWrapper says
    if isinstance(known, bool):
        return known
    return bool(getattr(tokenizer, "chat_template", None))


def call_text(call: ToolCall, fmt: ToolFormat) -> str:
    """A call as the default format writes it (also what the grammar makes the model write)."""
    return f'{fmt.start}{{"name":{_dumps(call.name)},"arguments":{call.arguments}}}{fmt.end}'


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _tool_object(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _arguments(text: str) -> Any:
    """Arguments as templates expect them (an object); text that is not JSON stays text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _native_turn(m: Message) -> dict[str, Any]:
    turn: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        turn["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.role == "tool":
        turn["tool_call_id"] = m.tool_call_id
        if m.name:
            turn["name"] = m.name
    return turn


def _default_turns(
    messages: Sequence[Message], tools: Sequence[Tool], fmt: ToolFormat
) -> list[dict[str, str]]:
    """Messages in plain system/user/assistant turns: tools in the system prompt, calls as text."""
    turns: list[dict[str, str]] = []
    if tools:
        listing = "\n".join(_dumps(_tool_object(t)["function"]) for t in tools)
        prompt = DEFAULT_TOOLS_PROMPT.format(functions=listing)
        if messages and messages[0].role == "system":
            prompt = f"{messages[0].content}\n\n{prompt}"
            messages = messages[1:]
        turns.append({"role": "system", "content": prompt})
    for m in messages:
        if m.role == "tool":
            body = f"<tool_response>\n{m.content}\n</tool_response>"
            if (
                turns
                and turns[-1]["role"] == "user"
                and turns[-1]["content"].endswith("</tool_response>")
            ):
                turns[-1]["content"] += "\n" + body  # the results of parallel calls, one turn
            else:
                turns.append({"role": "user", "content": body})
            continue
        content = m.content
        if m.tool_calls:
            calls = "\n".join(call_text(c, fmt) for c in m.tool_calls)
            content = f"{content}\n{calls}" if content else calls
        turns.append({"role": m.role, "content": content})
    return turns
