"""The one internal request every API dialect parses into, and the engine runs.

Dialect modules in `api/` translate their wire format to a `GenerationRequest` and back from
the engine's events (`channel.py`); nothing below `api/` knows which dialect asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FormatKind = Literal["text", "json_object", "json_schema"]
ChoiceMode = Literal["none", "auto", "required", "function"]


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: its id, the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One turn of the conversation, in the roles every chat template knows."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns only
    tool_call_id: str | None = None  # tool turns: which call this answers
    name: str | None = None  # tool turns: the function's name, where the dialect gives it


@dataclass(frozen=True)
class TextInput:
    """A tool whose arguments are one string, `{KEY: TEXT}`, TEXT held to a Lark grammar."""

    key: str
    lark: str  # the grammar of TEXT as written inside its JSON string (lark_quote.quote_lark)


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema of an object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    strict: bool = False  # the client asked for strict: its schema must be closed and whole
    # Where the dialect's wire puts `parameters`, for errors ("tools[0].input_schema").
    schema_path: str = field(default="", compare=False)
    text_input: TextInput | None = None  # a custom tool's grammar, beyond what `parameters` say


@dataclass(frozen=True)
class ResponseFormat:
    """The shape the answer's text must take; `schema` only for json_schema."""

    kind: FormatKind = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False  # the client asked for strict: the schema must be closed and whole
    path: str = field(default="response_format", compare=False)  # the wire's name, for errors


@dataclass(frozen=True)
class ToolChoice:
    """Whether and which tool the model must call; `name` only for mode "function"."""

    mode: ChoiceMode = "auto"
    name: str | None = None

    @property
    def forced(self) -> bool:
        """Whether the answer must be a tool call ("required", or a named function)."""
        return self.mode in ("required", "function")


TEXT = ResponseFormat()
NO_TOOLS = ToolChoice("none")


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request, whatever its dialect; inner code trusts every field."""

    messages: tuple[Message, ...]
    model: str | None = None  # id or tier; None: the loaded (or last loaded) model
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k
    max_tokens: int | None = None  # None: as many as fit
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: ResponseFormat = TEXT
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = NO_TOOLS
    parallel_tool_calls: bool = True
    stream: bool = False
    # The last message is an answer begun, which the model continues (Anthropic's prefill):
    # its turn stays open and the answer holds only what follows.
    continue_final: bool = False
    # OpenAI's Predicted Outputs: text the answer is expected to repeat, drafted from first.
    prediction: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation; `cached_tokens` of the prompt came from the prompt cache."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    accepted_prediction_tokens: int = 0  # of a prediction's tokens: in the answer...
    rejected_prediction_tokens: int = 0  # ...and not (OpenAI's completion_tokens_details)
