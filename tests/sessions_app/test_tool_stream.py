"""The generic tool-call format streamed in OpenAI's shapes: free text as content, each call whole
as one ``delta.tool_calls`` piece, whatever way the text is cut into pieces."""

from __future__ import annotations

import json

import pytest

from inference.constraints import tool_calls_parse, tool_calls_render, tool_response_render
from sessions_app.openai.tool_stream import ToolCallStream, message_of

ANSWER = (
    "Let me look.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
)


def _streamed(text: str, size: int) -> list[dict]:
    stream = ToolCallStream(reply_id=7)
    deltas = []
    for start in range(0, len(text), size):
        deltas += stream.feed(text[start : start + size])
    return deltas + stream.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 11, 1000])
def test_any_cut_gives_the_same_content_and_calls(size: int) -> None:
    deltas = _streamed(ANSWER, size)
    content = "".join(d.get("content", "") for d in deltas)
    calls = [piece for d in deltas for piece in d.get("tool_calls", [])]
    assert content == "Let me look."
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, "call_7_0", "get_weather"), (1, "call_7_1", "get_time")
    ]  # fmt: skip
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_text_without_calls_comes_through_whole(size: int) -> None:
    text = "Paris is sunny <today>, with < 5 mm of rain.\n"
    deltas = _streamed(text, size)
    assert "".join(d["content"] for d in deltas) == text
    assert not [d for d in deltas if "tool_calls" in d]


def test_a_call_cut_by_max_tokens_is_dropped() -> None:
    deltas = _streamed('Sure.<tool_call>\n{"name": "get_wea', 3)
    assert "".join(d["content"] for d in deltas) == "Sure." and all("tool_calls" not in d for d in deltas)


def test_the_whole_answer_as_openais_message() -> None:
    message, called = message_of(3, ANSWER)
    assert called and message["content"] == "Let me look." and len(message["tool_calls"]) == 2
    plain, called = message_of(3, "Just text.")
    assert not called and plain == {"role": "assistant", "content": "Just text.", "refusal": None}


def test_rendered_calls_parse_back() -> None:
    text = tool_calls_render("", [("get_time", '{"zone": "UTC"}')])
    assert tool_calls_parse(text)[1][0].arguments == '{"zone": "UTC"}'
    assert tool_response_render("21 C") == "<tool_response>\n21 C\n</tool_response>"
