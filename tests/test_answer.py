"""The answer splitter: text pieces in, reasoning / content / tool-call events out, however the text is cut."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from tholos_mlx.answer import AnswerSplitter, Markers, held_prefix
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.events import Delta, Event, FinishReason, ToolCallDelta, ToolCallStart

THINK = Markers(think_start="<think>", think_end="</think>", thinking_first=True)
TOOLS = Markers(call_start="<tool_call>", call_end="</tool_call>")


def split(
    pieces: Sequence[str], markers: Markers, stops: tuple[str, ...] = ()
) -> tuple[list[Event], bool, AnswerSplitter]:
    """Feed pieces until a stop; finish() unless a stop came; the events and whether it stopped."""
    events: list[Event] = []
    splitter = AnswerSplitter(events.append, stops, markers)
    stopped = False
    for piece in pieces:
        if splitter.feed(piece):
            stopped = True
            break
    if not stopped:
        splitter.finish()
    return events, stopped, splitter


def gathered(events: list[Event]) -> Gathered:
    g = Gathered()
    for ev in events:
        g.add(ev)
    return g


def every_cut(text: str) -> list[list[str]]:
    """The text as one piece, one character per piece, and cut at every position."""
    cuts = [[text], list(text)]
    cuts += [[text[:i], text[i:]] for i in range(1, len(text))]
    return cuts


def test_a_held_prefix_is_the_longest_tail_that_could_start_the_marker() -> None:
    assert held_prefix("abc</th", "</think>") == 4
    assert held_prefix("abc", "</think>") == 0
    assert held_prefix("<", "<tool_call>") == 1
    assert held_prefix("</think>", "</think>") == 0  # a whole marker is not held, it is found


@pytest.mark.parametrize("pieces", every_cut("Let me see.</think>\n\nParis is the capital."))
def test_thinking_goes_to_reasoning_and_never_into_content(pieces: list[str]) -> None:
    events, _, _ = split(pieces, THINK)
    g = gathered(events)
    assert g.reasoning == "Let me see."
    assert g.text == "Paris is the capital."
    assert all(not isinstance(e, Delta) or "think" not in e.text for e in events)


def test_a_model_that_opens_its_own_thinking_block_is_split_the_same_way() -> None:
    markers = Markers(think_start="<think>", think_end="</think>")
    g = gathered(split(["<think>hmm", "</think>", "Yes."], markers)[0])
    assert (g.reasoning, g.text) == ("hmm", "Yes.")


def test_stop_strings_apply_to_the_content_after_thinking_only() -> None:
    events, stopped, splitter = split(
        ["I STOP thinking</think>", "Answer STOP more"], THINK, ("STOP",)
    )
    g = gathered(events)
    assert stopped and splitter.stop_sequence == "STOP"
    assert g.reasoning == "I STOP thinking"
    assert g.text == "Answer "


def test_thinking_cut_by_the_end_stays_reasoning() -> None:
    g = gathered(split(["still thin", "king </thi"], THINK)[0])
    assert g.reasoning == "still thinking </thi"
    assert g.text == ""


CALL = '<tool_call>{"name":"get_weather","arguments":{"city":"Zürich","days":[1,2]}}</tool_call>'


@pytest.mark.parametrize("pieces", every_cut(CALL))
def test_a_call_cut_anywhere_comes_out_whole_with_its_name_first(pieces: list[str]) -> None:
    events, _, splitter = split(pieces, TOOLS)
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert len(starts) == 1 and starts[0].name == "get_weather" and starts[0].index == 0
    assert starts[0].id.startswith("call_")
    first_args = next(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    assert events.index(starts[0]) < first_args
    (call,) = gathered(events).calls
    assert json.loads(call.arguments) == {"city": "Zürich", "days": [1, 2]}
    assert gathered(events).text == ""
    assert splitter.calls == 1


def test_text_before_a_call_is_content_and_parallel_calls_get_their_own_index() -> None:
    second = CALL.replace("get_weather", "get_time").replace('"city":"Zürich",', "")
    events, _, _ = split(["Let me check. ", CALL, "\n", second], TOOLS)
    g = gathered(events)
    assert g.text == "Let me check. "
    assert [c.name for c in g.calls] == ["get_weather", "get_time"]
    assert json.loads(g.calls[1].arguments) == {"days": [1, 2]}


def test_one_call_only_stops_after_the_first_call() -> None:
    markers = Markers(call_start="<tool_call>", call_end="</tool_call>", one_call=True)
    events, stopped, _ = split([CALL, CALL], markers)
    assert stopped
    assert len(gathered(events).calls) == 1


def test_without_tools_the_markers_are_plain_content() -> None:
    g = gathered(split([CALL], Markers())[0])
    assert g.text == CALL and g.calls == []


def test_stop_strings_do_not_cut_inside_a_call() -> None:
    events, stopped, _ = split([CALL], TOOLS, ("Zürich",))
    assert not stopped
    assert json.loads(gathered(events).calls[0].arguments)["city"] == "Zürich"


def test_a_call_in_another_format_goes_through_the_models_parser() -> None:
    def parse(text: str) -> dict[str, object]:
        name, _, args = text.partition("|")
        return {"name": name, "arguments": json.loads(args)}

    markers = Markers(call_start="[CALL]", call_end="[/CALL]", parse_call=parse)
    g = gathered(split(['[CALL]lookup|{"q": "x"}[/CALL]'], markers)[0])
    assert [(c.name, json.loads(c.arguments)) for c in g.calls] == [("lookup", {"q": "x"})]


def test_reasoning_then_a_call() -> None:
    markers = Markers(
        think_start="<think>",
        think_end="</think>",
        thinking_first=True,
        call_start="<tool_call>",
        call_end="</tool_call>",
    )
    g = gathered(split(["need the weather</think>", CALL], markers)[0])
    assert g.reasoning == "need the weather"
    assert [c.name for c in g.calls] == ["get_weather"]


def test_a_call_repeating_an_earlier_one_is_dropped_and_ends_the_answer() -> None:
    events, stopped, splitter = split([CALL, "\n", CALL, "\n", CALL], TOOLS)
    assert stopped
    assert len(gathered(events).calls) == 1
    assert splitter.calls == 1


def test_a_call_cut_by_the_end_keeps_what_came_but_not_the_end_markers_start() -> None:
    events, _, _ = split([CALL[:-3]], TOOLS)
    (call,) = gathered(events).calls
    assert "</tool" not in call.arguments
    assert json.loads(call.arguments) == {"city": "Zürich", "days": [1, 2]}


def test_a_later_call_cut_by_the_end_is_dropped_whole() -> None:
    events, _, splitter = split([CALL, "\n", CALL.replace("Zürich", "Bern")[:-20]], TOOLS)
    assert [c.name for c in gathered(events).calls] == ["get_weather"]
    assert splitter.calls == 1


def test_a_cut_later_call_is_flagged_so_the_answer_still_counts_as_calls() -> None:
    _, _, splitter = split([CALL, "\n", CALL.replace("Zürich", "Bern")[:-20]], TOOLS)
    assert splitter.dropped_cut_call and splitter.calls == 1
    _, _, whole = split([CALL], TOOLS)
    assert not whole.dropped_cut_call


@pytest.mark.parametrize("opening", ["<", "<tool_", "<tool_call"])
def test_a_later_calls_opening_cut_by_max_tokens_never_becomes_content(opening: str) -> None:
    events: list[Event] = []
    splitter = AnswerSplitter(events.append, (), TOOLS)
    for piece in (CALL, "\n", opening):
        assert not splitter.feed(piece)
    splitter.finish(cut=True)
    answer = gathered(events)
    assert answer.text == "" and [c.name for c in answer.calls] == ["get_weather"]
    assert splitter.dropped_cut_call  # so the whole call still reports tool_calls


def test_a_first_calls_opening_cut_by_max_tokens_leaves_no_text_and_no_call() -> None:
    events: list[Event] = []
    splitter = AnswerSplitter(events.append, (), TOOLS)
    splitter.feed("<tool_ca")
    splitter.finish(cut=True)
    assert gathered(events).text == "" and not gathered(events).calls
    assert not splitter.dropped_cut_call  # no call came: the answer is plainly cut


def test_text_that_ends_like_a_marker_is_text_when_the_model_ends_it() -> None:
    events, _, _ = split(["x <"], TOOLS)  # finish() without cut: EOS after a lone "<"
    assert gathered(events).text == "x <"


def test_text_before_a_cut_marker_stays_and_only_the_marker_goes() -> None:
    events: list[Event] = []
    splitter = AnswerSplitter(events.append, (), TOOLS)
    splitter.feed("Let me look.\n<tool")
    splitter.finish(cut=True)
    assert gathered(events).text == "Let me look.\n"


def ended(pieces: Sequence[str], reason: FinishReason, stops: tuple[str, ...] = ()) -> str:
    """Feed pieces as generation would, then end() for `reason`: the finish reason it reports."""
    splitter = AnswerSplitter(lambda ev: None, stops, TOOLS)
    for piece in pieces:
        if splitter.feed(piece):
            break
    return splitter.end(reason)


def test_an_answer_ending_on_its_calls_finishes_with_tool_calls() -> None:
    assert ended([CALL], "stop") == "tool_calls"


def test_an_answer_without_calls_keeps_its_reason() -> None:
    assert ended(["Just text."], "stop") == "stop"
    assert ended(["Just text"], "length") == "length"


def test_a_later_call_cut_by_max_tokens_leaves_whole_calls_so_the_answer_is_tool_calls() -> None:
    assert ended([CALL, "\n", CALL.replace("Zürich", "Bern")[:-20]], "length") == "tool_calls"


def test_a_first_call_cut_by_max_tokens_is_length() -> None:
    assert ended([CALL[:-20]], "length") == "length"


def test_a_stop_string_after_a_call_keeps_stop_not_tool_calls() -> None:
    assert ended([CALL, "\nDONE"], "stop", stops=("DONE",)) == "stop"
