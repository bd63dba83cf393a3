"""A Lark grammar rewritten for the inside of a JSON string: the same sentences, escaped.

Checked with llguidance itself on the tiny model's tokenizer: a text is in the original
grammar's language exactly when its JSON-escaped form is in the rewritten one; and a forced
custom call, whatever the logits want, writes JSON whose input the original grammar accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load_tokenizer

from tests.test_constrain import argmax, drive, random_logits, sample, script
from tholos_mlx.api.responses_custom import custom_tool
from tholos_mlx.constrain import Grammars, ToolMarkers
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.lark_quote import LarkQuoteError, escaped, quote_lark
from tholos_mlx.request import ToolChoice

# Codex CLI 0.171's apply_patch grammar, as it sends it (a custom tool, syntax lark).
PATCH = r"""start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""
GOOD_PATCH = (
    '*** Begin Patch\n*** Update File: src/a "b".py\n@@ def f():\n'
    '-    return "x\\\\y"\n+    return "x\ty" # café 🙂\n*** End Patch\n'
)
# Grammars of every kind of terminal, each with texts in and out of its language.
CASES: list[tuple[str, list[str], list[str]]] = [
    (
        PATCH,
        [GOOD_PATCH, "*** Begin Patch\n*** Delete File: x\n*** End Patch"],
        [
            "*** Begin Patch\n*** End Patch",
            "*** Begin Patch\n*** Delete File: \n*** End Patch",
            "*** Begin Patch\n*** Add File: a\nno plus\n*** End Patch",
        ],
    ),
    (
        'start: "say " WORD ("," WS? WORD)* "."\n%import common (WORD, WS)\n',
        ["say a.", "say a,\n\tb, c.", "say x,\r\n y."],
        ["say .", "say a,,b.", "say 1."],
    ),
    (
        'start: QUOTED+\nQUOTED: /"[^"\\\\\\n]*"/\n%ignore " "\n',
        ['"a" "b"', '""', '"é\t"'],
        ['"a', '"a"b"', '"line\nbreak"', '"back\\slash"'],
    ),
    (
        'start: pair ("," pair)*\npair: NAME "=" NAME\nNAME: /[a-z]+/\n'
        "%import common.WS\n%ignore WS\n",
        ["a=b", "a = b , c=d", "a =  b"],
        ["a=", "a b=c", "a=b,"],
    ),
    (
        'start: ("a".."f" | "\\x00".."\\x1f")+ | "yes"i | /\\d+\\s?/ | /(?s:x.y)/\n',
        ["abf", "\x00\x1f\x01", "YeS", "42", "7\n", "x\ny", 'x"y', "x\\y"],
        ["g", "ab\x20", "yess", "4 2", 'x""y'],
    ),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    return load_tokenizer(tiny_folder)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def ll(tokenizer: Any) -> llguidance.LLTokenizer:
    return llguidance.hf.from_tokenizer(tokenizer._tokenizer, eos_token=tokenizer.eos_token_id)


def in_language(ll: llguidance.LLTokenizer, lark: str, text: str) -> bool:
    """Whether llguidance's matcher of `lark` accepts exactly `text`."""
    matcher = llguidance.LLMatcher(ll, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    tokens = ll.tokenize_str(text)
    return matcher.consume_tokens(tokens) and matcher.is_accepting()


@pytest.mark.parametrize(("grammar", "inside", "outside"), CASES)
def test_the_quoted_grammar_accepts_a_text_escaped_exactly_when_the_grammar_accepts_it(
    ll: llguidance.LLTokenizer, grammar: str, inside: list[str], outside: list[str]
) -> None:
    quoted = quote_lark(grammar)
    for text in inside:
        assert in_language(ll, grammar, text), f"the case itself is wrong: {text!r}"
        assert in_language(ll, quoted, escaped(text)), text
        if any(c in text for c in '"\\\n\t\x00'):
            assert not in_language(ll, quoted, text), f"unescaped {text!r} got through"
    for text in outside:
        assert not in_language(ll, grammar, text), f"the case itself is wrong: {text!r}"
        assert not in_language(ll, quoted, escaped(text)), text


def test_ignored_text_is_skipped_only_where_json_writes_it_as_itself(
    ll: llguidance.LLTokenizer,
) -> None:
    # An ignored escape would take the backslash that begins the next lexeme (`\\"` of a
    # string): the model may put spaces between terminals, not newlines or tabs.
    grammar = 'start: CNAME "=" ESCAPED_STRING\n%import common (CNAME, WS, ESCAPED_STRING)\n'
    grammar += "%ignore WS"
    quoted = quote_lark(grammar)
    assert in_language(ll, quoted, escaped('a = "b c"'))
    assert in_language(ll, grammar, 'a =\n"b"')
    assert not in_language(ll, quoted, escaped('a =\n"b"'))


def test_escaping_is_what_json_decodes_back() -> None:
    text = 'a"b\\c\nd\te\x01\x1f\u00e9\U0001f642/'
    assert json.loads(f'"{escaped(text)}"') == text


@pytest.mark.parametrize(
    ("grammar", "said"),
    [
        ('start: %json {"type": "string"}', "%json"),
        ("start: <|im_end|>", "<|im_end|>"),
        ("start: @other", "@other"),
        ("start: NAME\n%import common.CPP_COMMENT -> NAME", "CPP_COMMENT"),
        ("start: X\n%import other.X", "%import"),
        ("start: /(a)\\1/", "regex"),
        ("start: /^a$/", "regex construct"),
    ],
)
def test_what_cannot_be_rewritten_is_refused_by_name(grammar: str, said: str) -> None:
    with pytest.raises(LarkQuoteError, match=None) as caught:
        quote_lark(grammar)
    assert said in str(caught.value)


def test_a_lark_grammar_that_cannot_be_held_is_a_400_naming_its_definition() -> None:
    tool = {
        "type": "custom",
        "name": "x",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /(a)\\1/"},
    }
    with pytest.raises(InvalidRequest) as caught:
        custom_tool(tool, "tools[3]")
    assert caught.value.param == "tools[3].format.definition"
    assert "regex" in str(caught.value)


def apply_patch() -> Any:
    tool = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": PATCH},
    }
    return custom_tool(tool, "tools[0]").tool


def patch_favoured(tokenizer: Any, vocab: int, seed: int) -> Any:
    """Random logits leaning towards the patch's own words, so that a patch gets finished."""
    words = ["*** End Patch", "\\n", "+", " Add", "Add", "a"]
    favour = sorted({t for w in words for t in tokenizer.encode(w, add_special_tokens=False)})
    rng = np.random.default_rng(seed)

    def logits(tokens: list[int]) -> mx.array:
        row = rng.standard_normal((1, vocab)).astype(np.float32) * 4
        row[0, favour] += 16.0
        return mx.array(row)

    return logits


def test_a_forced_custom_call_writes_json_whose_input_the_lark_grammar_accepts(
    tokenizer: Any, ll: llguidance.LLTokenizer
) -> None:
    grammars = Grammars(tokenizer)
    tool = apply_patch()
    vocab = int(len(tokenizer._tokenizer))
    pickers = [
        argmax(patch_favoured(tokenizer, vocab, 1)),
        sample(patch_favoured(tokenizer, vocab, 2), 3),
        sample(random_logits(vocab, 4), 5),
    ]
    finished = 0
    for pick in pickers:
        c = grammars.for_tool_call(
            [tool], ToolChoice("function", "apply_patch"), False, ToolMarkers()
        )
        run = drive(c, pick, tokenizer)
        if not run.finished:
            continue  # random text may still be inside a long line: nothing to parse yet
        finished += 1
        body = run.text.removeprefix("<tool_call>").removesuffix("</tool_call>").strip()
        call = json.loads(body)
        assert call["name"] == "apply_patch" and set(call["arguments"]) == {"input"}
        assert in_language(ll, PATCH, call["arguments"]["input"]), call
    assert finished >= 1, "no simulated call ended within the limit"


def test_a_scripted_patch_with_quotes_and_newlines_passes_and_a_bad_line_is_masked(
    tokenizer: Any,
) -> None:
    grammars = Grammars(tokenizer)
    tool = apply_patch()
    opening = '<tool_call>{"name":"apply_patch","arguments":{"input":"'
    whole = opening + escaped(GOOD_PATCH) + '"}}</tool_call>'
    c = grammars.for_tool_call([tool], ToolChoice("function", "apply_patch"), False, ToolMarkers())
    run = drive(c, script(whole, tokenizer), tokenizer)
    assert run.finished and json.loads(run.text[11:-12])["arguments"]["input"] == GOOD_PATCH
    c = grammars.for_tool_call([tool], ToolChoice("function", "apply_patch"), False, ToolMarkers())
    with pytest.raises(AssertionError, match="masked"):
        drive(c, script(opening + "*** Begin Patch\\n*** Remove File", tokenizer), tokenizer)


def test_a_call_the_model_starts_itself_holds_its_input_to_the_grammar_too(
    tokenizer: Any, ll: llguidance.LLTokenizer
) -> None:
    grammars = Grammars(tokenizer)
    tool = apply_patch()
    vocab = int(len(tokenizer._tokenizer))
    c = grammars.lazy_tool_call([tool], False, ToolMarkers())
    opening = 'Let me edit it.<tool_call>{"name":"apply_patch","arguments":{"input":"'
    run = drive(
        c, script(opening, tokenizer, argmax(patch_favoured(tokenizer, vocab, 7))), tokenizer
    )
    assert run.finished, run.text
    body = run.text.removeprefix("Let me edit it.<tool_call>").removesuffix("</tool_call>")
    call = json.loads(body)
    assert in_language(ll, PATCH, call["arguments"]["input"]), call
