"""Tests for tholos_mlx.api.validation: a pydantic error as one 400 naming the param as written."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import orjson
import pytest
from pydantic import Discriminator, Field, Tag, field_validator
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api.validation import (
    PARENT,
    WHOLE,
    Rule,
    Wire,
    check,
    load,
    param_of,
    refuse,
    reject,
)
from tholos_mlx.errors import InvalidRequest, Unsupported


class Turn(TypedDict):
    role: Annotated[Literal["user", "assistant"], Field(description="'user' or 'assistant'")]
    text: NotRequired[Annotated[str, Field(description="a string")]]


def _shape(raw: Any) -> str | None:
    return "<one>" if isinstance(raw, str) else "<many>" if isinstance(raw, list) else None


class Inner(Wire):
    RULE: ClassVar[str] = "an object with 'size'"
    kind: Annotated[Literal["a", "b"], PARENT] = "a"
    size: int = Field(ge=1, description="an integer of at least 1")


class Body(Wire):
    RULE: ClassVar[str] = "a JSON object"
    turns: list[Annotated[Turn, Rule("an object with 'role'")]] = Field(
        min_length=1, description="a non-empty array of turns"
    )
    level: float | None = Field(None, ge=0, le=2, description="a number from 0 to 2")
    names: Annotated[list[str] | None, WHOLE, Field(description="an array of strings")] = None
    inner: Inner | None = Field(None, description=Inner.RULE)
    either: Annotated[
        Annotated[str, Tag("<one>")] | Annotated[list[int], Tag("<many>")],
        Discriminator(_shape, custom_error_type="wrong_type", custom_error_message="x"),
        Field(description="a string or an array of integers"),
    ] = "x"
    mode: str | None = Field(None, description="a string")

    @field_validator("mode")
    @classmethod
    def _mode(cls, mode: str | None) -> str | None:
        if mode == "fast":
            raise refuse("is 'fast', which this server does not have.")
        if mode == "bad":
            raise reject("must be a good mode.", at="detail")
        return mode


TURN = {"role": "user", "text": "hi"}


def failure(**fields: Any) -> InvalidRequest:
    fields.setdefault("turns", [TURN])
    with pytest.raises(InvalidRequest) as caught:
        load(Body, orjson.dumps(fields), "{}")
    return caught.value


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"turns": None}, "turns", "'turns' is required: a non-empty array of turns."),
        ({"turns": []}, "turns", "'turns' must be a non-empty array of turns; got an empty array."),
        ({"turns": "hi"}, "turns", "'turns' must be a non-empty array of turns; got a string."),
        (
            {"turns": [TURN, 5]},
            "turns[1]",
            "'turns[1]' must be an object with 'role'; got an integer.",
        ),
        (
            {"turns": [{"role": "robot"}]},
            "turns[0].role",
            "'turns[0].role' must be 'user' or 'assistant'; got 'robot'.",
        ),
        (
            {"turns": [{"text": "x"}]},
            "turns[0].role",
            "'turns[0].role' is required: 'user' or 'assistant'.",
        ),
        ({"level": 2.5}, "level", "'level' must be a number from 0 to 2; got 2.5."),
        ({"level": "1"}, "level", "'level' must be a number from 0 to 2; got a string."),
        ({"level": True}, "level", "'level' must be a number from 0 to 2; got a boolean."),
        ({"names": ["a", 5]}, "names", "'names' must be an array of strings; got an integer."),
        (
            {"inner": {"size": 0}},
            "inner.size",
            "'inner.size' must be an integer of at least 1; got 0.",
        ),
        (
            {"inner": {"size": 1.5}},
            "inner.size",
            "'inner.size' must be an integer of at least 1; got a number (1.5).",
        ),
        (
            {"inner": {"kind": "c", "size": 1}},
            "inner",
            "'inner' must be an object with 'size'; got 'c'.",
        ),
        (
            {"either": {}},
            "either",
            "'either' must be a string or an array of integers; got an object.",
        ),
        (
            {"either": [1, "2"]},
            "either[1]",
            "'either[1]' must be a string or an array of integers; got a string.",
        ),
        ({"mode": "bad"}, "mode.detail", "'mode.detail' must be a good mode."),
    ],
)
def test_each_kind_of_error_names_the_param_as_written_and_says_what_it_must_be(
    fields: dict[str, Any], param: str, message: str
) -> None:
    err = failure(**fields)
    assert type(err) is InvalidRequest
    assert (err.param, err.message) == (param, message)


def test_a_refused_value_is_unsupported_and_quotes_its_param() -> None:
    err = failure(mode="fast")
    assert isinstance(err, Unsupported) and err.code == "unsupported_parameter"
    assert err.message == "'mode' is 'fast', which this server does not have."


def test_a_body_that_is_not_a_json_object_is_a_400_without_a_param() -> None:
    for raw in (b"", b"{x", b"[]", b"null"):
        with pytest.raises(InvalidRequest) as caught:
            load(Body, raw, '{"turns": []}')
        assert caught.value.param is None
    assert '{"turns": []}' in caught.value.message or "JSON object" in caught.value.message


def test_a_long_value_is_quoted_cut_to_a_line() -> None:
    err = failure(turns=[{"role": "x" * 500}])
    assert err.param == "turns[0].role" and len(err.message) < 200 and err.message.endswith("x....")


def test_a_field_already_parsed_is_checked_with_its_params_under_a_prefix() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check(Inner, {"size": "big"}, "text.format")
    assert caught.value.param == "text.format.size"
    assert check(Inner, {"size": 3}, "x").size == 3


def test_unknown_fields_are_ignored_and_null_is_absent() -> None:
    body = load(Body, orjson.dumps({"turns": [TURN], "level": None, "new": {"x": 1}}), "{}")
    assert body.level is None and body.turns == [TURN]


def test_a_loc_is_written_as_the_client_writes_the_path() -> None:
    assert (
        param_of(("messages", 1, "content", "<parts>", 0, "text")) == "messages[1].content[0].text"
    )
    assert param_of((0, "name"), "tools") == "tools[0].name"
    assert param_of(()) == ""
