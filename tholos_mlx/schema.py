"""OpenAI JSON <-> frozen dataclasses: the only reader of raw request bodies."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

import orjson

from tholos_mlx.errors import InvalidRequest, Unsupported

ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
}
MAX_STOPS = 4
MAX_STOP_CHARS = 1000
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 29  # the length of OpenAI's own "chatcmpl-" suffixes


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation, with its role normalised and its text joined."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request; inner code trusts every field."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion, as reported in `usage`."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, object]:
        """The OpenAI `usage` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def new_completion_id() -> str:
    """A fresh random completion id shaped like OpenAI's: "chatcmpl-" and 29 letters/digits."""
    return "chatcmpl-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def completion_body(
    *, id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage
) -> bytes:
    """The JSON bytes of OpenAI's non-streamed `chat.completion` object."""
    return orjson.dumps(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage.as_dict(),
            "system_fingerprint": None,
        }
    )


def parse_chat(body: bytes) -> ChatRequest:
    """Validate a raw /v1/chat/completions body; InvalidRequest names the offending param."""
    try:
        data: object = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc}). Send a JSON object such as "
            '{"messages": [{"role": "user", "content": "Hello"}]}.'
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The request body must be a JSON object; got {_kind(data)}.")

    messages = _messages(data)
    _refuse_shape_changers(data)
    max_tokens = _max_tokens(data, "max_tokens")
    max_completion_tokens = _max_tokens(data, "max_completion_tokens")
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest(
                f"'stream_options' must be an object such as {{\"include_usage\": true}}; "
                f"got {_kind(options)}.",
                param="stream_options",
            )
        include_usage = _bool(options, "include_usage", "stream_options.include_usage")
    stream = _bool(data, "stream", "stream")
    if options is not None and not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    return ChatRequest(
        messages=messages,
        model=_model(data),
        temperature=_number(data, "temperature", 1.0, low=0.0, high=2.0, low_open=False),
        top_p=_number(data, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        # max_completion_tokens is OpenAI's current name; it wins over the deprecated one.
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stop=_stop(data),
        stream=stream,
        include_usage=include_usage,
        seed=_seed(data),
    )


def _kind(value: object) -> str:
    """The JSON type of a value, for error messages ("a string", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_int(value: object) -> TypeGuard[int]:
    """Whether a JSON value is an integer (bool is not, nor is 5.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    """Whether a JSON value is a number (bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _messages(data: Mapping[str, object]) -> tuple[ChatMessage, ...]:
    """The `messages` array as ChatMessages."""
    raw = data.get("messages")
    if raw is None:
        raise InvalidRequest(
            '\'messages\' is required: an array of {"role", "content"} objects.',
            param="messages",
        )
    if not isinstance(raw, list):
        raise InvalidRequest(
            f'\'messages\' must be an array of {{"role", "content"}} objects; got {_kind(raw)}.',
            param="messages",
        )
    if not raw:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    return tuple(_message(item, f"messages[{i}]") for i, item in enumerate(raw))


def _message(item: object, where: str) -> ChatMessage:
    """One message object, its role checked and its content joined to a string."""
    if not isinstance(item, dict):
        raise InvalidRequest(
            f"'{where}' must be an object with 'role' and 'content'; got {_kind(item)}.",
            param=where,
        )
    role = item.get("role")
    allowed = "'system', 'user', 'assistant' or 'developer'"
    if role is None:
        raise InvalidRequest(
            f"'{where}.role' is required: one of {allowed}.", param=f"{where}.role"
        )
    if role in ("tool", "function"):
        raise Unsupported(
            f"'{where}.role' is {role!r}, but tools are not supported by this server; "
            f"use {allowed}.",
            param=f"{where}.role",
        )
    if not isinstance(role, str) or role not in ROLES:
        got = repr(role) if isinstance(role, str) else _kind(role)
        raise InvalidRequest(
            f"'{where}.role' must be one of {allowed}; got {got}.", param=f"{where}.role"
        )
    role = ROLES[role]
    return ChatMessage(role=role, content=_content(item.get("content"), role, f"{where}.content"))


def _content(content: object, role: str, where: str) -> str:
    """A message's content: a string, or text parts joined with ""."""
    if isinstance(content, str):
        return content
    if content is None:
        if role == "assistant":  # an assistant turn may carry no text (OpenAI allows null)
            return ""
        raise InvalidRequest(
            f"'{where}' is required: a string or an array of "
            '{"type": "text", "text": ...} parts.',
            param=where,
        )
    if not isinstance(content, list):
        raise InvalidRequest(
            f'\'{where}\' must be a string or an array of {{"type": "text", "text": ...}} '
            f"parts; got {_kind(content)}.",
            param=where,
        )
    if not content:
        raise InvalidRequest(
            f"'{where}' must not be an empty array: give at least one text part, or a string.",
            param=where,
        )
    return "".join(_text_part(part, f"{where}[{j}]") for j, part in enumerate(content))


def _text_part(part: object, where: str) -> str:
    """The text of one content part; only {"type": "text"} parts are accepted."""
    if not isinstance(part, dict):
        raise InvalidRequest(
            f'\'{where}\' must be an object {{"type": "text", "text": ...}}; got {_kind(part)}.',
            param=where,
        )
    kind = part.get("type")
    if kind != "text":
        if isinstance(kind, str):
            raise Unsupported(
                f"'{where}.type' is {kind!r}, but this server accepts only text: "
                'use {"type": "text", "text": ...} parts or a plain string.',
                param=f"{where}.type",
            )
        raise InvalidRequest(
            f"'{where}.type' must be \"text\"; got {_kind(kind)}.", param=f"{where}.type"
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(
            f"'{where}.text' must be a string; got {_kind(text)}.", param=f"{where}.text"
        )
    return text


def _model(data: Mapping[str, object]) -> str | None:
    """`model`: an id or tier name, or None for the loaded model."""
    model = data.get("model")
    if model is None or model == "":
        return None
    if not isinstance(model, str):
        raise InvalidRequest(
            f"'model' must be a string (a model id or tier from GET /v1/models); "
            f"got {_kind(model)}.",
            param="model",
        )
    return model


def _number(
    data: Mapping[str, object],
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    low_open: bool,
) -> float:
    """A number field within [low, high], or (low, high] when low_open."""
    value = data.get(name)
    if value is None:
        return default
    if low_open:
        rule = f"'{name}' must be a number greater than {low:g} and at most {high:g}"
    else:
        rule = f"'{name}' must be a number from {low:g} to {high:g}"
    if not _is_number(value):
        raise InvalidRequest(f"{rule}; got {_kind(value)}.", param=name)
    number = float(value)
    if number > high or number < low or (low_open and number == low):
        raise InvalidRequest(f"{rule}; got {value!r}.", param=name)
    return number


def _max_tokens(data: Mapping[str, object], name: str) -> int | None:
    """`max_tokens` or `max_completion_tokens`: an integer >= 1, or None."""
    value = data.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise InvalidRequest(
            f"'{name}' must be an integer of at least 1; got {_kind(value)}"
            + (f" ({value!r})." if isinstance(value, float) else "."),
            param=name,
        )
    if value < 1:
        raise InvalidRequest(f"'{name}' must be an integer of at least 1; got {value}.", param=name)
    return value


def _stop(data: Mapping[str, object]) -> tuple[str, ...]:
    """`stop`: a string or up to MAX_STOPS strings; empty strings are dropped."""
    value = data.get("stop")
    rule = f"'stop' must be a string or an array of at most {MAX_STOPS} strings"
    if value is None:
        return ()
    if isinstance(value, str):
        _check_stop_lengths((value,))
        return (value,) if value else ()
    if not isinstance(value, list):
        raise InvalidRequest(f"{rule}; got {_kind(value)}.", param="stop")
    if len(value) > MAX_STOPS:
        raise InvalidRequest(f"{rule}; got {len(value)}.", param="stop")
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequest(f"{rule}; got an array holding {_kind(item)}.", param="stop")
    stops = tuple(s for s in value if s)
    _check_stop_lengths(stops)
    return stops


def _check_stop_lengths(stops: tuple[str, ...]) -> None:
    # The matcher's work grows with the square of a stop string's length: bound it.
    for s in stops:
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(
                f"Each stop string may be at most {MAX_STOP_CHARS} characters; got {len(s)}.",
                param="stop",
            )


def _bool(data: Mapping[str, object], name: str, param: str) -> bool:
    """A boolean field; null or absent is False."""
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{param}' must be true or false; got {_kind(value)}.", param=param)
    return value


def _seed(data: Mapping[str, object]) -> int | None:
    """`seed`: any integer, or None."""
    value = data.get("seed")
    if value is None:
        return None
    if not _is_int(value):
        raise InvalidRequest(f"'seed' must be an integer; got {_kind(value)}.", param="seed")
    return value


def _refuse_shape_changers(data: Mapping[str, object]) -> None:
    """400 for OpenAI fields that would change the answer's shape; the rest are ignored."""
    n = data.get("n")
    if n is not None and not (_is_int(n) and n == 1):
        if not _is_int(n):
            raise InvalidRequest(f"'n' must be an integer; got {_kind(n)}.", param="n")
        raise Unsupported(
            f"'n' must be 1: this server returns exactly one choice; got {n}.", param="n"
        )
    logprobs = data.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise InvalidRequest(
            f"'logprobs' must be true or false; got {_kind(logprobs)}.", param="logprobs"
        )
    if logprobs:
        raise Unsupported(
            "'logprobs' is not supported by this server; leave it out or set it to false.",
            param="logprobs",
        )
    if data.get("top_logprobs") is not None:
        raise Unsupported(
            "'top_logprobs' is not supported by this server; leave it out.",
            param="top_logprobs",
        )
    fmt = data.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise InvalidRequest(
                f'\'response_format\' must be an object such as {{"type": "text"}}; '
                f"got {_kind(fmt)}.",
                param="response_format",
            )
        if fmt.get("type") != "text":
            raise Unsupported(
                f"'response_format' {{\"type\": {orjson.dumps(fmt.get('type')).decode()}}} "
                'is not supported by this server; only {"type": "text"} is.',
                param="response_format",
            )
    choice = data.get("tool_choice")
    if choice is not None and choice not in ("none", "auto"):
        raise Unsupported(
            '\'tool_choice\' can only be "none" or "auto": this server does not call tools.',
            param="tool_choice",
        )
    modalities = data.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise Unsupported(
            "'modalities' can only be [\"text\"]: this server answers in text only.",
            param="modalities",
        )
