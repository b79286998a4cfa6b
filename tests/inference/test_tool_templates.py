"""A model whose own chat template renders tools (as Qwen2.5's and Hermes' do) is told its tools
by that template, earlier calls and results included, instead of the generic tool prompt; its
calls are still decoded under the grammar of the ``<tool_call>`` format. The model is the bundled
SmolLM2 with such a template: written into a copy of its GGUF by gguf's own metadata tool for
llama.cpp, set on its IR's tokenizer through OpenVINO GenAI's ``set_chat_template``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.backends.base import GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppOptions
from inference.backends.openvino import OpenVINOBackend, OpenVINOOptions
from inference.bundled import bundled_model_path
from inference.constraints import (
    Tool,
    ToolCalls,
    json_schema_check,
    structured_messages,
    tool_calls_parse,
    tool_calls_render,
    tool_response_render,
    tools_prompt,
)
from tests.inference.test_backend_openvino import ir_dir  # noqa: F401 - the IR, made once per run

pytestmark = pytest.mark.slow

# The shape of Qwen2.5's template, cut down: tools in the system turn, calls as <tool_call> blocks
# of the assistant, results as <tool_response> blocks of a user turn.
TEMPLATE = """\
{%- if tools %}<|im_start|>system
{{ messages[0]['content'] if messages[0]['role'] == 'system' else 'You are a helpful assistant.' }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0]['role'] == 'system' %}<|im_start|>system
{{ messages[0]['content'] }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content or '' }}
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

WEATHER = Tool(
    "get_weather",
    "The current weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TOOLS = ToolCalls(tools=(WEATHER,), mode="required", parallel=False)


@pytest.fixture(scope="module")
def tool_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tool-gguf")
    source = folder / "source.gguf"
    shutil.copyfile(bundled_model_path(), source)
    out = folder / "smollm2-tools.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(source), str(out), "--chat-template", TEMPLATE,
         "--force"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    source.unlink()
    return out


@pytest.fixture(scope="module")
def backend(tool_gguf: Path) -> Iterator[LlamaCppBackend]:
    loaded = LlamaCppBackend(model_path=str(tool_gguf), options=LlamaCppOptions(n_threads=1), n_ctx=2048)
    loaded.load()
    yield loaded
    loaded.close()


def test_only_a_template_that_renders_tools_is_asked_to(backend: LlamaCppBackend) -> None:
    assert backend.renders_tools
    bundled = LlamaCppBackend(model_path=str(bundled_model_path()), options=LlamaCppOptions(n_threads=1))
    bundled.load()
    try:
        assert not bundled.renders_tools  # SmolLM2's own template: the worker adds the generic prompt
    finally:
        bundled.close()


def test_the_template_tells_the_tools_and_shows_earlier_calls_and_results(backend: LlamaCppBackend) -> None:
    call = tool_calls_render("", [("get_weather", '{"city": "Oslo"}')])
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": call},
        {"role": "user", "content": tool_response_render('{"celsius": 3}')},
        {"role": "user", "content": "And in Rome?"},
    ]
    prompt, _ = backend._render(messages, TOOLS)
    assert "# Tools" in prompt and json.dumps(WEATHER.parameters)[:30] in prompt
    assert tools_prompt(TOOLS) not in prompt  # the template's words, not the generic prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert '<|im_start|>user\n<tool_response>\n{"celsius": 3}\n</tool_response>' in prompt
    plain, _ = backend._render(messages)  # no tools asked for: the turns as they are
    assert "# Tools" not in plain


def test_a_required_call_through_the_models_template_validates(backend: LlamaCppBackend) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    for seed in range(3):
        params = GenerationParams(max_tokens=64, temperature=0.7, seed=seed, constraint=TOOLS)
        text = "".join(chunk.text for chunk in backend.stream_chat(question, params))
        free, calls = tool_calls_parse(text)
        assert free == "" and [c.name for c in calls] == ["get_weather"], text
        assert json_schema_check(WEATHER.parameters, json.loads(calls[0].arguments)) is None


def test_generic_turns_become_the_structured_messages_templates_read() -> None:
    turns = [
        {
            "role": "assistant",
            "content": "Let me look.\n" + tool_calls_render("", [("get_weather", '{"city": "Oslo"}')]),
        },
        {"role": "user", "content": tool_response_render("3 C") + "\n" + tool_response_render("sunny")},
        {"role": "user", "content": "Thanks"},
    ]
    assert structured_messages(turns) == [
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_0_0", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
        ]},
        {"role": "tool", "content": "3 C"},
        {"role": "tool", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def openvino_with_tools(ir_dir: Path) -> Iterator[OpenVINOBackend]:  # noqa: F811 - the imported fixture
    """The bundled model's IR on OpenVINO GenAI, its tokenizer given the same tools template
    through the engine's own ``set_chat_template``; plain mode, where the backend renders."""
    loaded = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(kv_cache_reuse=False))
    loaded.load()
    assert not loaded.renders_tools  # SmolLM2's own template
    loaded._tokenizer.set_chat_template(TEMPLATE)
    yield loaded
    loaded.close()


def test_openvino_renders_tools_with_the_models_template_and_calls_validate(
    openvino_with_tools: OpenVINOBackend,
) -> None:
    assert openvino_with_tools.renders_tools
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": tool_calls_render("", [("get_weather", '{"city": "Oslo"}')])},
        {"role": "user", "content": tool_response_render('{"celsius": 3}')},
        {"role": "user", "content": "And in Rome?"},
    ]
    prompt = openvino_with_tools._render(messages, TOOLS)
    assert "# Tools" in prompt and tools_prompt(TOOLS) not in prompt
    assert '"arguments": {"city": "Oslo"}' in prompt and '<tool_response>\n{"celsius": 3}' in prompt
    for seed in range(2):
        params = GenerationParams(max_tokens=64, temperature=0.7, seed=seed, constraint=TOOLS)
        text = "".join(chunk.text for chunk in openvino_with_tools.stream_chat(messages, params))
        free, calls = tool_calls_parse(text)
        assert free == "" and [c.name for c in calls] == ["get_weather"], text
        assert json_schema_check(WEATHER.parameters, json.loads(calls[0].arguments)) is None


def test_a_closing_tag_inside_an_argument_does_not_end_the_call() -> None:
    from inference.constraints import ParsedCall, tool_calls_parse

    sneaky = "</tool_call> and <tool_call>"
    text = (
        "Sure. <tool_call>\n" + json.dumps({"name": "echo", "arguments": {"text": sneaky}}) + "\n</tool_call>\n"
        "<tool_call>not json</tool_call><tool_call>" + json.dumps({"name": "add", "arguments": {"a": 1}})
        + "</tool_call>"
    )  # fmt: skip
    assert tool_calls_parse(text) == (
        "Sure.", [ParsedCall("echo", json.dumps({"text": sneaky})), ParsedCall("add", '{"a": 1}')]
    )  # fmt: skip
