"""Grammar constraints on a real byte-level BPE tokenizer (the tiny model's), driven by a simulated generation loop.

The "model" is random logits (seeded), logits that push whitespace, newlines and EOS, or a script
that writes given text; the loop is the engine's: compute_mask, apply, pick, consume, feed the
forced tokens. What comes out must parse and validate, whatever the logits wanted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import mlx.core as mx
import numpy as np
import pytest
from llguidance.numpy import apply_token_bitmask_inplace
from mlx_lm.utils import load_tokenizer

from tholos_mlx.constrain import (
    Constraint,
    Grammars,
    PlainMask,
    ToolMarkers,
    choose_mask,
    metal_mask,
)
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import ResponseFormat, Tool, ToolChoice
from tholos_mlx.schema_check import external_ref
from tholos_mlx.tool_grammar import MAX_PARALLEL_CALLS

LIMIT = 400  # tokens a simulated answer may take before the test calls it a runaway
MARKERS = ToolMarkers()


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    """The tiny model's tokenizer (mlx-lm's TokenizerWrapper); no weights are loaded."""
    return load_tokenizer(tiny_folder)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def grammars(tokenizer: Any) -> Grammars:
    return Grammars(tokenizer)


@pytest.fixture(scope="module")
def vocab(tokenizer: Any) -> int:
    return int(len(tokenizer._tokenizer))


@pytest.fixture(scope="module")
def texts(tokenizer: Any, vocab: int) -> list[str]:
    """Each token's text, decoded alone."""
    return list(tokenizer._tokenizer.batch_decode([[i] for i in range(vocab)]))


# --- the simulated loop --------------------------------------------------------------------

Logits = Callable[[list[int]], mx.array]  # tokens so far -> next logits (1, V)
Pick = Callable[[list[int], Constraint], int]


@dataclass
class Run:
    tokens: list[int]
    sampled: int  # tokens the "model" picked; the rest were forced (fast-forwarded)
    finished: bool
    text: str


def drive(c: Constraint, pick: Pick, tokenizer: Any, limit: int = LIMIT) -> Run:
    """The engine's loop: mask, pick, consume, append the forced tokens, until done."""
    tokens = list(c.begin())
    sampled = 0
    while not c.finished and len(tokens) < limit:
        c.compute_mask()
        token = pick(tokens, c)
        tokens.append(token)
        sampled += 1
        tokens += c.consume(token)
        assert c.error() is None, c.error()
    eos = tokenizer.eos_token_ids
    return Run(tokens, sampled, c.finished, tokenizer.decode([t for t in tokens if t not in eos]))


def random_logits(vocab: int, seed: int, favour: list[int] | None = None) -> Logits:
    """Seeded random logits; `favour` tokens get a bonus that would win every step unmasked."""
    rng = np.random.default_rng(seed)

    def logits(tokens: list[int]) -> mx.array:
        row = rng.standard_normal((1, vocab)).astype(np.float32) * 4
        if favour:
            row[0, favour] += 100.0
        return mx.array(row)

    return logits


def first(token: mx.array) -> int:
    """The one token id in an MLX array of shape (1,)."""
    return int(np.array(token).reshape(-1)[0])


def argmax(logits: Logits) -> Pick:
    return lambda tokens, c: first(mx.argmax(c.apply(logits(tokens)), axis=-1))


def sample(logits: Logits, seed: int) -> Pick:
    """Temperature 1: a draw from the softmax of the masked logits."""
    keys = iter(mx.random.split(mx.random.key(seed), LIMIT))

    def pick(tokens: list[int], c: Constraint) -> int:
        return first(mx.random.categorical(c.apply(logits(tokens)), key=next(keys)))

    return pick


def script(text: str, tokenizer: Any, then: Pick | None = None) -> Pick:
    """Writes `text` (as the tokenizer would), then hands over to `then`."""

    def pick(tokens: list[int], c: Constraint) -> int:
        done = tokenizer.decode(tokens)
        if len(done) >= len(text) and then is not None:
            return then(tokens, c)
        assert text.startswith(done), (text, done)
        token = int(tokenizer.encode(text[len(done) :], add_special_tokens=False)[0])
        assert allowed(c, token), f"the script's token {token} is masked at {done!r}"
        return token

    return pick


def allowed(c: Constraint, token: int) -> bool:
    return bool(mx.isfinite(c.apply(mx.zeros((1, token + 1)))[0, token]).item())


def allowed_set(c: Constraint, vocab: int) -> set[int]:
    row = np.array(c.apply(mx.zeros((1, vocab))))[0]
    return set(np.flatnonzero(np.isfinite(row)).tolist())


@pytest.fixture(scope="module")
def blank(texts: list[str], tokenizer: Any) -> list[int]:
    """Whitespace-only tokens and EOS: what a small model spins on."""
    return [i for i, t in enumerate(texts) if t and not t.strip()] + sorted(tokenizer.eos_token_ids)


def pickers(vocab: int, blank: list[int]) -> list[tuple[str, Pick]]:
    return [
        ("argmax", argmax(random_logits(vocab, 1))),
        ("sample", sample(random_logits(vocab, 2), 3)),
        ("argmax-blank", argmax(random_logits(vocab, 4, blank))),
        ("sample-blank", sample(random_logits(vocab, 5, blank), 6)),
    ]


STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def outside_strings(text: str) -> str:
    return STRINGS.sub('""', text)


# --- structured output -----------------------------------------------------------------------


def obj(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "enum": obj({"color": {"enum": ["red", "green", "blue"]}}),
    "integer-range": obj({"n": {"type": "integer", "minimum": -20, "maximum": 1000}}),
    "nested": obj(
        {
            "person": obj(
                {
                    "name": {"type": "string", "maxLength": 10},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150},
                }
            ),
            "ok": {"type": "boolean"},
        }
    ),
    "array-bounds": obj(
        {
            "xs": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 9},
                "minItems": 2,
                "maxItems": 4,
            }
        }
    ),
    "pattern": obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    "non-ascii": obj(
        {
            "city": {"enum": ["Zürich", "東京", "São Paulo"]},
            "note": {"type": "string", "maxLength": 6},
            "greeting": {"const": "¡hola, 世界!"},
        }
    ),
    "local-ref": {
        "$defs": {"digit": {"type": "integer", "minimum": 0, "maximum": 9}},
        **obj({"a": {"$ref": "#/$defs/digit"}, "b": {"$ref": "#/$defs/digit"}}),
    },
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_json_schema_answers_parse_and_validate_whatever_the_logits_want(
    name: str, grammars: Grammars, tokenizer: Any, vocab: int, blank: list[int]
) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    for how, pick in pickers(vocab, blank):
        c = grammars.for_format(ResponseFormat("json_schema", schema))
        assert c is not None
        run = drive(c, pick, tokenizer)
        assert run.finished, (how, run.text)
        jsonschema.validate(json.loads(run.text), schema)
        # compact: no whitespace between tokens, none before or after the object
        assert not re.search(r"\s", outside_strings(run.text)), (how, run.text)


def test_json_object_is_any_object_and_ends(
    grammars: Grammars, tokenizer: Any, vocab: int, texts: list[str]
) -> None:
    closing = [i for i, t in enumerate(texts) if '"' in t or "}" in t]
    for seed in range(3):
        c = grammars.for_format(ResponseFormat("json_object"))
        assert c is not None
        run = drive(c, argmax(random_logits(vocab, seed, closing)), tokenizer)
        assert run.finished, run.text
        assert isinstance(json.loads(run.text), dict)


def test_text_format_has_no_constraint(grammars: Grammars) -> None:
    assert grammars.for_format(ResponseFormat("text")) is None


def test_a_short_answer_ends_right_after_its_closing_brace(
    grammars: Grammars, tokenizer: Any
) -> None:
    c = grammars.for_format(ResponseFormat("json_schema", obj({"answer": {"type": "string"}})))
    assert c is not None
    run = drive(c, script('{"answer":"Paris"}', tokenizer), tokenizer)
    assert run.finished
    assert run.text == '{"answer":"Paris"}'


def test_no_whitespace_is_allowed_between_the_tokens_of_the_json(
    grammars: Grammars, tokenizer: Any, vocab: int, texts: list[str]
) -> None:
    schema = obj({"n": {"type": "integer"}, "xs": {"type": "array", "items": {"type": "integer"}}})
    c = grammars.for_format(ResponseFormat("json_schema", schema))
    assert c is not None
    for prefix in ('{"n":12', '{"n":12,"xs":[', '{"n":12,"xs":[3'):
        drive(c, script(prefix, tokenizer), tokenizer, limit=len(tokenizer.encode(prefix)))
        options = {texts[t] for t in allowed_set(c, vocab)}
        assert any(t[0] in "]},0123456789" for t in options), (prefix, options)
        assert not any(t[0].isspace() for t in options), (prefix, options)
        c = grammars.for_format(ResponseFormat("json_schema", schema))
        assert c is not None


def test_fast_forward_gives_the_fixed_opening_of_a_schema(
    grammars: Grammars, tokenizer: Any
) -> None:
    schema = obj({"answer": {"type": "string"}})
    c = grammars.for_format(ResponseFormat("json_schema", schema))
    assert c is not None
    forced = tokenizer.decode(c.begin())
    # llguidance stops where the tokenization of what follows is still open (`":"` vs `":`)
    assert forced.startswith('{"answer') and '{"answer":"'.startswith(forced)
    assert c.consume(tokenizer.encode('":"', add_special_tokens=False)[0]) == []


def test_forced_tokens_are_the_tokenizers_own_tokens_of_their_text(
    grammars: Grammars, tokenizer: Any
) -> None:
    named = ToolChoice("function", "ping")
    schema = ResponseFormat("json_schema", obj({"answer": {"type": "string"}}))
    for c in (grammars.for_tool_call(TOOLS, named, False, MARKERS), grammars.for_format(schema)):
        assert c is not None
        forced = c.begin()
        assert forced and forced == tokenizer.encode(
            tokenizer.decode(forced), add_special_tokens=False
        )


# --- tool calls ------------------------------------------------------------------------------

TOOLS = [
    Tool(
        "get_weather",
        "Weather of a city",
        obj({"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}),
    ),
    Tool("add", None, obj({"x": {"type": "integer"}, "y": {"type": "integer", "maximum": 99}})),
    Tool("ping", None, {"type": "object", "additionalProperties": False}),
]


def calls(text: str, markers: ToolMarkers = MARKERS) -> tuple[list[dict[str, Any]], str]:
    """The calls in a text (their JSON, checked against TOOLS) and the text around them."""
    pattern = re.compile(re.escape(markers.start) + "(.*?)" + re.escape(markers.end), re.S)
    found = []
    for body in pattern.findall(text):
        call = json.loads(body)
        assert set(call) == {"name", "arguments"}
        tool = next(t for t in TOOLS if t.name == call["name"])
        jsonschema.validate(call["arguments"], tool.parameters)
        found.append(call)
    return found, pattern.sub("", text)


def test_a_required_call_names_a_tool_and_has_valid_arguments(
    grammars: Grammars, tokenizer: Any, vocab: int, blank: list[int]
) -> None:
    for how, pick in pickers(vocab, blank):
        c = grammars.for_tool_call(TOOLS, ToolChoice("required"), False, MARKERS)
        run = drive(c, pick, tokenizer)
        assert run.finished, (how, run.text)
        found, rest = calls(run.text)
        assert len(found) == 1 and rest == "", (how, run.text)


def test_parallel_required_calls_are_each_valid_and_bounded(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    c = grammars.for_tool_call(TOOLS, ToolChoice("required"), True, MARKERS)
    run = drive(c, argmax(random_logits(vocab, 8)), tokenizer, limit=1000)
    assert run.finished, run.text
    found, rest = calls(run.text)
    assert 1 <= len(found) <= MAX_PARALLEL_CALLS
    assert rest.strip() == ""


def test_a_named_call_calls_that_function_only(
    grammars: Grammars, tokenizer: Any, vocab: int, blank: list[int]
) -> None:
    for how, pick in pickers(vocab, blank):
        c = grammars.for_tool_call(TOOLS, ToolChoice("function", "add"), True, MARKERS)
        run = drive(c, pick, tokenizer)
        found, _ = calls(run.text)
        assert run.finished and [f["name"] for f in found] == ["add"], (how, run.text)


def test_fast_forward_writes_most_of_a_named_call(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    c = grammars.for_tool_call(TOOLS, ToolChoice("function", "ping"), False, MARKERS)
    run = drive(c, argmax(random_logits(vocab, 9)), tokenizer)
    assert calls(run.text)[0] == [{"name": "ping", "arguments": {}}]
    assert run.sampled * 3 <= len(run.tokens), (run.sampled, len(run.tokens))


def test_auto_lets_free_text_through_unconstrained_until_the_marker(
    grammars: Grammars, tokenizer: Any, vocab: int, texts: list[str]
) -> None:
    c = grammars.lazy_tool_call(TOOLS, False, MARKERS)
    rng = np.random.default_rng(10)
    # Text is valid UTF-8 without special tokens: leave out the tokens that are neither
    # (a lone continuation byte, <|im_start|>); the mask must then change no pick.
    odd = sorted(
        {i for i, t in tokenizer._tokenizer.added_tokens_decoder.items() if t.special}
        | {i for i, t in enumerate(texts) if "\ufffd" in t}
    )
    for _ in range(40):
        c.compute_mask()
        numbers = rng.standard_normal((1, vocab)).astype(np.float32)
        numbers[0, odd] = -1e9
        row = mx.array(numbers)
        free = first(mx.argmax(row, axis=-1))
        assert first(mx.argmax(c.apply(row), axis=-1)) == free
        assert c.consume(free) == []
    assert not c.finished and c.error() is None
    free_text = allowed_set(c, vocab)
    assert set(range(vocab)) - set(odd) <= free_text and tokenizer.eos_token_ids <= free_text


def test_auto_constrains_a_call_from_its_opening_marker_on(
    grammars: Grammars, tokenizer: Any, vocab: int, blank: list[int]
) -> None:
    prose = 'Let me look: {not json] "<tool> <tool_ '
    for how, rest in pickers(vocab, blank):
        c = grammars.lazy_tool_call(TOOLS, False, MARKERS)
        run = drive(c, script(prose + MARKERS.start, tokenizer, rest), tokenizer)
        assert run.finished, (how, run.text)
        found, around = calls(run.text)
        assert len(found) == 1 and around == prose, (how, run.text)


def test_auto_with_parallel_calls_allows_several_valid_calls(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    c = grammars.lazy_tool_call(TOOLS, True, MARKERS)
    run = drive(c, script("ok <tool_call>", tokenizer, argmax(random_logits(vocab, 11))), tokenizer)
    assert run.finished, run.text
    found, around = calls(run.text)
    assert 1 <= len(found) <= MAX_PARALLEL_CALLS and around.strip() == "ok"


def test_auto_free_text_may_simply_end(grammars: Grammars, tokenizer: Any) -> None:
    c = grammars.lazy_tool_call(TOOLS, True, MARKERS)
    eos = min(tokenizer.eos_token_ids)
    run = drive(c, script("Just text.", tokenizer, lambda tokens, c: eos), tokenizer)
    assert run.finished and run.text == "Just text."


def test_auto_with_a_json_format_answers_that_json_or_calls(
    grammars: Grammars, tokenizer: Any, vocab: int, blank: list[int]
) -> None:
    schema = SCHEMAS["nested"]
    fmt = ResponseFormat("json_schema", schema)
    for how, pick in pickers(vocab, blank):
        for opening in ("{", MARKERS.start):
            c = grammars.lazy_tool_call(TOOLS, True, MARKERS, fmt)
            run = drive(c, script(opening, tokenizer, pick), tokenizer)
            assert run.finished, (how, run.text)
            if opening == "{":
                jsonschema.validate(json.loads(run.text), schema)
            else:
                found, around = calls(run.text)
                assert found and around.strip() == "", (how, run.text)
    c = grammars.lazy_tool_call(TOOLS, True, MARKERS, fmt)
    c.compute_mask()
    assert not allowed(c, tokenizer.encode("Hello", add_special_tokens=False)[0])


def test_special_token_markers_are_matched_by_their_ids(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    start, end = (
        "<|im_start|>",
        "<|endoftext|>",
    )  # special tokens of the tiny tokenizer (as of the demo one)
    markers = ToolMarkers(start, end)
    ids = tokenizer._tokenizer.convert_tokens_to_ids([start, end])
    c = grammars.for_tool_call(TOOLS, ToolChoice("function", "ping"), False, markers)
    assert c.begin() == [ids[0]]
    run = drive(c, argmax(random_logits(vocab, 12)), tokenizer)
    assert ids[1] in run.tokens
    lazy = grammars.lazy_tool_call(TOOLS, False, markers)
    run = drive(lazy, script("hi " + start, tokenizer, argmax(random_logits(vocab, 13))), tokenizer)
    assert run.finished
    assert len(calls(run.text, markers)[0]) == 1


# --- errors ----------------------------------------------------------------------------------


def refusal(call: Callable[[], object]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as e:
        call()
    return e.value


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": 5}, ["type"]),
        ({"type": "string", "format": "zipcode"}, ["format", "zipcode"]),
        ({"type": "string", "pattern": "(?=a)b"}, ["look-around"]),
        ({"type": "object", "not": {"required": ["a"]}}, ["not"]),
        ({"type": "integer", "minimum": 5, "maximum": 1}, ["minimum", "maximum"]),
        ({"type": "string", "minLength": "x"}, ["minLength"]),
        ({"$ref": "#/$defs/missing"}, ["/$defs/missing"]),
    ],
)
def test_a_schema_that_cannot_compile_is_a_400_on_response_format(
    schema: dict[str, Any], words: list[str], grammars: Grammars
) -> None:
    fmt = ResponseFormat("json_schema", schema, strict=True)
    e = refusal(lambda: grammars.check(fmt, (), ToolChoice("none"), True))
    assert e.status == 400 and e.param == "response_format"
    assert all(w in e.message for w in words), e.message
    assert "\n" not in e.message
    assert refusal(lambda: grammars.for_format(fmt)).param == "response_format"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "zipcode"},
        {"type": "object", "not": {"required": ["a"]}},
        {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
    ],
)
def test_a_keyword_llguidance_cannot_enforce_is_left_out_of_a_schema_that_is_not_strict(
    schema: dict[str, Any], grammars: Grammars, tokenizer: Any
) -> None:
    fmt = ResponseFormat("json_schema", schema)
    grammars.check(fmt, (), ToolChoice("none"), True)
    c = grammars.for_format(fmt)
    assert c is not None and c.error() is None
    tool = Tool("loose", None, {"type": "object", "properties": {"a": schema}})
    grammars.check(ResponseFormat(), (tool,), ToolChoice("required"), True)
    strict = Tool("tight", None, tool.parameters, strict=True)
    refusal(lambda: grammars.check(ResponseFormat(), (strict,), ToolChoice("required"), True))


@pytest.mark.parametrize(
    "ref", ["http://example.com/schema.json", "other.json#/$defs/x", "file:///etc/passwd"]
)
def test_a_ref_outside_the_schema_is_refused(ref: str, grammars: Grammars) -> None:
    fmt = ResponseFormat("json_schema", obj({"a": {"$ref": ref}}))
    e = refusal(lambda: grammars.check(fmt, (), ToolChoice("none"), True))
    assert e.param == "response_format" and ref in e.message


def test_external_refs_are_found_but_data_and_local_ids_are_not_refs() -> None:
    assert external_ref({"anyOf": [{"items": {"$ref": "http://x/y"}}]}) == "http://x/y"
    assert external_ref({"const": {"$ref": "http://x/y"}}) is None
    assert external_ref({"enum": [{"$ref": "http://x/y"}]}) is None
    assert external_ref({"$id": "urn:a", "items": {"$ref": "urn:a#/$defs/b"}}) is None
    assert external_ref({"items": {"$ref": "#/$defs/b"}}) is None


def test_a_tool_whose_parameters_cannot_compile_is_named_in_the_error(
    grammars: Grammars,
) -> None:
    bad = Tool(
        "broken", None, {"type": "object", "properties": {"d": {"format": "nope"}}}, strict=True
    )
    tools = (*TOOLS, bad)
    for choice in (ToolChoice("auto"), ToolChoice("required")):

        def check(choice: ToolChoice = choice) -> None:
            grammars.check(ResponseFormat(), tools, choice, True)

        e = refusal(check)
        assert e.param == "tools[3].function.parameters", e.message
        assert "nope" in e.message and "broken" in e.message
    outside = Tool("far", None, obj({"a": {"$ref": "https://example.com/a.json"}}))
    e = refusal(lambda: grammars.check(ResponseFormat(), (outside,), ToolChoice("auto"), True))
    assert e.param == "tools[0].function.parameters"
    bad_format = ResponseFormat("json_schema", {"type": 5})
    e = refusal(lambda: grammars.check(bad_format, TOOLS, ToolChoice("auto"), True))
    assert e.param == "response_format"
    # tool_choice "none": no call, no grammar, nothing to refuse
    grammars.check(ResponseFormat(), tools, ToolChoice("none"), True)


def test_a_named_function_that_is_not_a_tool_is_refused(grammars: Grammars) -> None:
    e = refusal(lambda: grammars.for_tool_call(TOOLS, ToolChoice("function", "x"), True, MARKERS))
    assert e.param == "tool_choice" and "'x'" in e.message


def test_check_accepts_what_compiles(grammars: Grammars) -> None:
    for schema in SCHEMAS.values():
        grammars.check(ResponseFormat("json_schema", schema), TOOLS, ToolChoice("auto"), True)
    grammars.check(ResponseFormat("json_object"), TOOLS, ToolChoice("required"), False)


def test_a_token_the_grammar_does_not_allow_is_an_error_not_a_crash(
    grammars: Grammars, tokenizer: Any
) -> None:
    c = grammars.for_format(ResponseFormat("json_object"))
    assert c is not None
    assert c.consume(tokenizer.encode("hello", add_special_tokens=False)[0]) == []
    assert c.error() and c.finished


# --- the compile cache -----------------------------------------------------------------------


def test_the_same_schema_twice_compiles_once(tokenizer: Any) -> None:
    g = Grammars(tokenizer, cache_size=2)
    one, two, three = (
        ResponseFormat("json_schema", SCHEMAS[n]) for n in ("enum", "nested", "pattern")
    )
    g.check(one, (), ToolChoice("none"), True)
    g.for_format(ResponseFormat("json_schema", json.loads(json.dumps(SCHEMAS["enum"]))))
    assert g.compiles == 1
    g.for_format(two)
    g.for_format(one)  # refreshes `one`: `two` is now the least recently used
    g.for_format(three)  # evicts `two`
    assert g.compiles == 3
    g.for_format(one)
    assert g.compiles == 3
    g.for_format(two)
    assert g.compiles == 4
    bad = ResponseFormat("json_schema", {"type": 5})
    for _ in range(2):
        refusal(lambda: g.for_format(bad))
    assert g.compiles == 5
    for _ in range(2):
        g.check(ResponseFormat(), TOOLS, ToolChoice("required"), True, MARKERS)
        g.for_tool_call(TOOLS, ToolChoice("required"), True, MARKERS)
    assert g.compiles == 6


def test_each_constraint_starts_fresh_from_the_cached_grammar(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    fmt = ResponseFormat("json_schema", SCHEMAS["enum"])
    first = grammars.for_format(fmt)
    assert first is not None
    drive(first, argmax(random_logits(vocab, 14)), tokenizer)
    second = grammars.for_format(fmt)
    assert second is not None and not second.finished
    assert tokenizer.decode(second.begin()).startswith('{"color')


# --- masking ---------------------------------------------------------------------------------


def reference(logits: np.ndarray, bitmask: np.ndarray) -> np.ndarray:
    out = logits.copy()
    apply_token_bitmask_inplace(out, bitmask)
    return out


@pytest.mark.parametrize("vocab_model", [64 * 32, 64 * 32 + 50, 64 * 32 - 7])
def test_the_plain_mask_matches_llguidances_reference(vocab_model: int) -> None:
    rng = np.random.default_rng(vocab_model)
    bitmask = rng.integers(-(2**31), 2**31, size=(1, 64), dtype=np.int64).astype(np.int32)
    logits = rng.standard_normal((1, vocab_model)).astype(np.float32)
    got = np.array(PlainMask()(mx.array(logits), bitmask))
    want = reference(logits, bitmask) if vocab_model <= 64 * 32 else None
    if want is None:  # rows past the tokenizer's vocabulary are never allowed
        want = np.concatenate(
            [reference(logits[:, : 64 * 32], bitmask), np.full((1, 50), -np.inf, np.float32)], 1
        )
    np.testing.assert_array_equal(got, want)


def test_the_mask_keeps_the_logits_dtype() -> None:
    logits = mx.zeros((1, 64), dtype=mx.bfloat16)
    bitmask = np.array([[1, 0]], dtype=np.int32)
    out = PlainMask()(logits, bitmask)
    assert out.dtype == mx.bfloat16
    assert np.isfinite(np.array(out.astype(mx.float32))).sum() == 1


def test_a_mask_applied_lazily_survives_the_next_compute_mask(
    grammars: Grammars, tokenizer: Any, vocab: int
) -> None:
    c = grammars.for_format(ResponseFormat("json_schema", SCHEMAS["enum"]))
    assert c is not None
    c.begin()
    c.compute_mask()
    before = allowed_set(c, vocab)
    masked = c.apply(mx.zeros((1, vocab)))  # not evaluated yet: MLX is lazy
    c.consume(min(before))
    c.compute_mask()  # overwrites the one reused bitmask buffer
    assert set(np.flatnonzero(np.isfinite(np.array(masked)[0])).tolist()) == before


def test_metal_gets_llguidances_kernel_and_everything_else_plain_mlx(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert choose_mask(True) is metal_mask
    assert isinstance(choose_mask(False), PlainMask)
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    assert Grammars(tokenizer).mask is metal_mask
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    assert isinstance(Grammars(tokenizer).mask, PlainMask)


@pytest.mark.skipif(not mx.metal.is_available(), reason="llguidance's kernel runs on Metal only")
def test_the_metal_kernel_matches_the_plain_mask() -> None:
    rng = np.random.default_rng(0)
    bitmask = rng.integers(-(2**31), 2**31, size=(1, 64), dtype=np.int64).astype(np.int32)
    logits = mx.array(rng.standard_normal((1, 64 * 32 + 50)).astype(np.float32))
    np.testing.assert_array_equal(
        np.array(metal_mask(logits, bitmask)), np.array(PlainMask()(logits, bitmask))
    )
