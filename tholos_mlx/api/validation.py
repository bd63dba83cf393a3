"""Request bodies declared as pydantic structures, and a validation error as one 400 naming its param.

Every dialect declares its request as TypedDicts and `Wire` models (the body and the many small
parts are TypedDicts, which pydantic fills without making a model): strict JSON types (no "5"
for 5, no true for 1), unknown fields ignored, null as absent. Each field says in its `description` what it must
be; a failed check becomes an `InvalidRequest` whose `param` is pydantic's `loc` written as the
client wrote the field (`messages[1].content[0].text`) and whose message quotes it:
"'temperature' must be a number from 0 to 2; got 2.5.". The mapping reads the error's `type`,
`loc`, `input` and `ctx`, never its message text.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    ClassVar,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import NotRequired, Required, get_type_hints, is_typeddict

from tholos_mlx.api.fields import MAX_STOP_CHARS, kind, load_object
from tholos_mlx.errors import InvalidRequest, Unsupported

T = TypeVar("T")
UNSUPPORTED = (
    "unsupported"  # a custom error type: the field is understood and refused (Unsupported)
)
INVALID = "invalid"  # a custom error type whose message is the rule it broke
_SHOWN_CHARS = 80
TAG = "<"  # union tags are written "<str>", "<list>": never a field's name, so left out of params
# pydantic's error types that say the value was of the wrong JSON type (the rest judge its value)
_VALUE_ERRORS = frozenset(
    {
        "literal_error",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "string_pattern_mismatch",
        "string_too_short",
        "enum",
    }
)


WIRE = ConfigDict(strict=True, extra="ignore")  # a body declared as a TypedDict: with_config(WIRE)


class Wire(BaseModel):
    """A declared part of a request: strict JSON types, unknown fields ignored, null as absent."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    RULE: ClassVar[str] = "an object"  # what an item of this type must be, for error messages


@dataclass(frozen=True)
class Rule:
    """Item metadata: what an item of a list must be, for error messages (a TypedDict's RULE)."""

    text: str


class Whole:
    """Field metadata: an error anywhere inside the field is named by the field itself."""


class Parent:
    """Field metadata: an error about the field's own value is named by the object holding it
    (errors inside it keep their path)."""


WHOLE = Whole()


def _one_or_many(raw: Any) -> Any:
    return [raw] if isinstance(raw, str) else raw


def stop_strings(most: int) -> Any:
    """The declared type of a dialect's stop strings: one string or a list of at most `most`."""
    return Annotated[
        Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]], Field(max_length=most)]
        | None,
        BeforeValidator(_one_or_many),
        WHOLE,
        Field(
            description=f"a string or an array of at most {most} strings, each at most "
            f"{MAX_STOP_CHARS} characters"
        ),
    ]


PARENT = Parent()
TEXT_TAG, LIST_TAG = "<text>", "<list>"  # the two shapes of content: a string or an array


def type_of(raw: Any) -> str | None:
    """A JSON object's `type` when it is a string (what tagged unions are told apart by)."""
    found = raw.get("type") if isinstance(raw, dict) else None
    return found if isinstance(found, str) else None


def text_or_list(raw: Any) -> str | None:
    """The tag of a string-or-array field's shape (every dialect's content), None for neither."""
    if isinstance(raw, str):
        return TEXT_TAG
    return LIST_TAG if isinstance(raw, list) else None


def refuse(message: str) -> PydanticCustomError:
    """A validator's error for a value understood but not supported (400 unsupported_parameter)."""
    return PydanticCustomError(UNSUPPORTED, message)


def reject(message: str, at: str | None = None) -> PydanticCustomError:
    """A validator's error whose message says what the field must be (after the quoted param);
    `at` names a field inside the one validated, where the error belongs."""
    return PydanticCustomError(INVALID, message, {"at": at} if at else None)


def load(declared: type[T], body: bytes, example: str) -> T:
    """The body validated as `declared`, or the first error as a 400 naming its param."""
    # orjson then the Python validator: measured faster than pydantic's own JSON reader here.
    return check(declared, load_object(body, example), "")


def check(declared: type[T], raw: object, prefix: str) -> T:
    """Parsed JSON validated as `declared` (a `Wire` model or a TypedDict of them); params
    start with `prefix`."""
    try:
        valid: T = _validator(declared).validate_python(raw)
    except ValidationError as exc:
        raise as_invalid(declared, exc.errors(include_url=False)[0], prefix=prefix) from None
    return valid


def _build_validator(declared: Any) -> Any:
    """The validator of a declared type (a body is a TypedDict: no model to fill)."""
    return TypeAdapter(declared).validator


_validator: Callable[[Any], Any] = functools.cache(_build_validator)  # built once per type


def as_invalid(model: type, error: ErrorDetails, prefix: str = "") -> InvalidRequest:
    """One pydantic error as the 400 a client reads: the param, the rule, what it got."""
    loc, rule = _named(model, error["loc"])
    named_inside = len(loc) < len(error["loc"])  # the error is inside the field it names
    at = (error.get("ctx") or {}).get("at")
    param = param_of([*loc, at] if at else loc, prefix)
    kind_ = error["type"]
    value = error["input"]
    if not param:  # a check of the whole body
        return InvalidRequest(f"The request body must be {rule}: {error['msg']}")
    if kind_ == UNSUPPORTED:
        return Unsupported(f"'{param}' {error['msg']}", param=param)
    if kind_ == INVALID:
        return InvalidRequest(f"'{param}' {error['msg']}", param=param)
    if kind_ == "missing" and named_inside:  # a part the field needs is missing
        return InvalidRequest(f"'{param}' must be {rule}.", param=param)
    if kind_ == "missing" or (value is None and kind_ not in _VALUE_ERRORS):
        return InvalidRequest(f"'{param}' is required: {rule}.", param=param)
    if kind_ in ("too_short", "too_long") and isinstance(value, (list, dict)):
        got = "an empty array" if not value else f"{len(value)} items"
    elif kind_ == "string_too_long" and isinstance(value, str):
        got = f"a string of {len(value)} characters"
    elif kind_ in _VALUE_ERRORS:
        got = _shown(value)
    else:
        got = kind(value) + (f" ({value!r})" if isinstance(value, float) else "")
    return InvalidRequest(f"'{param}' must be {rule}; got {got}.", param=param)


def _shown(value: object) -> str:
    """A value the client sent, as an error message quotes it: never more than a line."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def param_of(loc: Sequence[int | str], prefix: str = "") -> str:
    """A pydantic `loc` as the client's path: ("messages", 1, "role") -> "messages[1].role"."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(TAG):
            out += f".{part}" if out else part
    return out


def _named(model: type, loc: Sequence[int | str]) -> tuple[list[int | str], str]:
    """The part of `loc` that names the param (up to a `Whole` field), and the rule it broke."""
    rule = getattr(model, "RULE", "a JSON object")
    annotation: Any = model
    named: list[int | str] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and part.startswith(TAG):
            annotation = _tagged(annotation, part)
            named.append(part)
            continue
        if isinstance(part, int):
            annotation = _item(annotation)
            rule = _rule_of(annotation) or rule
            named.append(part)
            continue
        field = _fields(annotation).get(part)
        if field is None:  # a key inside a free-form object: the field holding it is named
            break
        annotation, description, metadata = field
        last = all(isinstance(p, str) and p.startswith(TAG) for p in loc[i + 1 :])
        if last and any(isinstance(m, Parent) for m in metadata):
            break
        named.append(part)
        rule = description or rule
        if any(isinstance(m, Whole) for m in metadata):
            break
    return named, rule


_Field = tuple[Any, str | None, tuple[Any, ...]]  # annotation, description, metadata


@functools.cache
def _declared(cls: type) -> dict[str, _Field]:
    """A model's or TypedDict's fields by the name the wire gives them."""
    if issubclass(cls, BaseModel):
        return {
            (f.alias or name): (f.annotation, f.description, tuple(f.metadata))
            for name, f in cls.model_fields.items()
        }
    out: dict[str, _Field] = {}
    hint: Any
    for name, hint in get_type_hints(cls, include_extras=True).items():
        while get_origin(hint) in (Required, NotRequired):
            hint = get_args(hint)[0]
        metadata = tuple(hint.__metadata__) if get_origin(hint) is Annotated else ()
        info = next((m for m in metadata if isinstance(m, FieldInfo)), None)
        out[name] = (hint, info.description if info else None, metadata)
    return out


def _fields(annotation: Any) -> dict[str, _Field]:
    """The fields of the model or TypedDict an annotation holds (inside a union or Annotated)."""
    for arg in _args(annotation):
        if isinstance(arg, type) and (issubclass(arg, BaseModel) or is_typeddict(arg)):
            return _declared(arg)
    return {}


def _rule_of(annotation: Any) -> str | None:
    """What an item must be: its `Rule` marker, or its model's RULE."""
    if get_origin(annotation) is Annotated:
        for m in annotation.__metadata__:
            if isinstance(m, Rule):
                return m.text
    for arg in _args(annotation):
        if isinstance(arg, type) and issubclass(arg, Wire):
            return arg.RULE
    return None


def _args(annotation: Any) -> tuple[Any, ...]:
    """The types inside an annotation's union or Annotated wrapper (itself when none)."""
    origin = get_origin(annotation)
    if origin in (Annotated, Required, NotRequired):
        return _args(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return tuple(a for arg in get_args(annotation) for a in _args(arg))
    return (annotation,)


def _tagged(annotation: Any, tag: str) -> Any:
    """The member of a tagged union that `tag` names (the annotation itself when none does)."""
    return next((m for m in _members(annotation) if _has_tag(m, tag)), annotation)


def _members(annotation: Any) -> Iterator[Any]:
    """An annotation and, through Annotated wrappers and unions, every type inside it."""
    yield annotation
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _members(get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _members(arg)


def _has_tag(annotation: Any, tag: str) -> bool:
    return get_origin(annotation) is Annotated and any(
        isinstance(m, Tag) and m.tag == tag for m in annotation.__metadata__
    )


def _item(annotation: Any) -> Any:
    """The item type of the list an annotation holds (inside a union or Annotated)."""
    for arg in _args(annotation):
        if get_origin(arg) is list:
            return get_args(arg)[0]
    return annotation
