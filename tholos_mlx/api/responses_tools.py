"""Responses `tools`, declared: tagged by `type`, to the functions the model is offered.

Function and custom tools are offered; a `namespace` (Codex) offers its functions, and a call
names the one the model chose as the client looks it up; hosted tools this server cannot run
(Codex offers `web_search`) are accepted and left out, so the model is never told of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api.fields import NonEmpty, distinct_names, kind
from tholos_mlx.api.responses_custom import CustomSpec, custom_tool
from tholos_mlx.api.shared_openai import FunctionSpec, function_tool
from tholos_mlx.api.validation import Rule, reject, type_of
from tholos_mlx.request import Tool

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
TOOL_RULE = 'a tool such as {"type": "function", "name": ...}'


def hosted(kind: object) -> bool:
    """Whether a tool type names one of OpenAI's hosted tools."""
    return isinstance(kind, str) and (kind in HOSTED_TOOLS or kind.startswith(HOSTED_PREFIXES))


class FunctionTool(FunctionSpec):
    """`{"type": "function", "name", "description", "parameters", "strict"}`."""

    type: Literal["function"]


def _untyped(raw: Any) -> Any:
    got = f"type {kind(raw.get('type'))}" if isinstance(raw, dict) else kind(raw)
    raise reject(f"must be {TOOL_RULE}; got {got}.", at="type")


def _not_in_namespace(raw: Any) -> Any:
    raise reject('must be "function" or "custom" inside a namespace.', at="type")


def _unknown(raw: Any) -> Any:
    raise reject(
        'must be "function", "custom" or "namespace" (hosted tools such as web_search are left '
        f"out: this server cannot run them); got {raw['type']!r}.",
        at="type",
    )


_INNER = {"function": "<function>", "custom": "<custom>"}


def _inner_kind(raw: Any) -> str:
    found = type_of(raw)
    return "<untyped>" if found is None else _INNER.get(found, "<other>")


InnerTool = Annotated[
    Annotated[FunctionTool, Tag("<function>")]
    | Annotated[CustomSpec, Tag("<custom>")]
    | Annotated[Any, AfterValidator(_not_in_namespace), Tag("<other>")]
    | Annotated[Any, AfterValidator(_untyped), Tag("<untyped>")],
    Discriminator(_inner_kind),
    Rule(TOOL_RULE),
]


class NamespaceSpec(TypedDict):
    """`{"type": "namespace", "name", "tools": [...]}`: functions grouped under a name (Codex)."""

    type: Literal["namespace"]
    name: NonEmpty
    tools: NotRequired[
        Annotated[list[InnerTool] | None, Field(description="an array of functions")]
    ]


_OUTER = {**_INNER, "namespace": "<namespace>"}


def _tool_kind(raw: Any) -> str:
    found = type_of(raw)
    if found is None:
        return "<untyped>"
    return _OUTER.get(found) or ("<hosted>" if hosted(found) else "<other>")


ToolSpec = Annotated[
    Annotated[FunctionTool, Tag("<function>")]
    | Annotated[CustomSpec, Tag("<custom>")]
    | Annotated[NamespaceSpec, Tag("<namespace>")]
    | Annotated[Any, Tag("<hosted>")]
    | Annotated[Any, AfterValidator(_unknown), Tag("<other>")]
    | Annotated[Any, AfterValidator(_untyped), Tag("<untyped>")],
    Discriminator(_tool_kind),
    Rule(TOOL_RULE),
]
Tools = Annotated[list[ToolSpec] | None, Field(description="an array of function tools")]


@dataclass
class Offered:
    """The tools as offered: the functions, and what the answer needs to know of them."""

    tools: list[Tool] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)  # function -> its namespace
    custom: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> tool as sent

    def add(self, spec: Any, sent: dict[str, Any], where: str, namespace: str | None) -> None:
        """One declared function or custom tool (`sent`: as the client wrote it)."""
        if spec["type"] == "custom":
            custom = custom_tool(spec, where, sent)
            self.tools.append(custom.tool)
            self.custom[custom.tool.name] = custom.wire
        else:
            self.tools.append(function_tool(spec, where))
        if namespace is not None:
            self.namespaces[self.tools[-1].name] = namespace


def offered(specs: list[Any], wire: list[Any]) -> Offered:
    """The declared tools (`wire`: the same, as sent) as functions, a namespace's flattened and
    hosted ones left out; two with one name are a 400."""
    found = Offered()
    for i, spec in enumerate(specs):
        if spec["type"] == "namespace":
            inner = zip(spec.get("tools") or (), wire[i].get("tools") or (), strict=True)
            for j, (one, sent) in enumerate(inner):
                found.add(one, sent, f"tools[{i}].tools[{j}]", spec["name"])
        elif spec["type"] in ("function", "custom"):
            found.add(spec, wire[i], f"tools[{i}]", None)
    distinct_names(found.tools, "name")
    return found
