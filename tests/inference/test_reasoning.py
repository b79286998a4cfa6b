"""A reasoning model's output split into thinking and answer, chunk by chunk (inference.reasoning),
and which agents are split: the option and the chat template."""

from __future__ import annotations

import pytest

from inference.reasoning import CONTENT, REASONING, Part, ThinkSplitter, reasoning_mode, template_opens_think

# The end of QwQ-32B's chat template: its generation prompt opens the thinking.
QWQ = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content }}"
    "{%- if message.role == 'assistant' %}{%- set content = message.content.split('</think>')[-1] %}{%- endif %}"
    "{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}\n"
)
# Qwen3's: the model opens its own thinking; the prompt writes an empty block only to switch it off.
QWEN3 = (
    "{%- if message.content is string %}{%- set reasoning_content = '' %}{%- if '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}{%- endif %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}"
)
# DeepSeek-R1's first template: only cuts the thinking out of earlier turns.
DEEPSEEK_R1 = (
    "{% if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{% endif %}"
    "{% if add_generation_prompt %}{{'<｜Assistant｜>'}}{% endif %}"
)
# SmolLM2-Instruct's (the bundled model): no thinking at all.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def split(chunks: list[str], *, opened: bool) -> tuple[str, str, list[tuple[Part, str]]]:
    """The reasoning and the answer, and every piece in order."""
    splitter = ThinkSplitter(opened=opened)
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.finish()
    reasoning = "".join(text for part, text in pieces if part == REASONING)
    content = "".join(text for part, text in pieces if part == CONTENT)
    return reasoning, content, pieces


def every_cut(text: str) -> list[list[str]]:
    """The text cut in two at every character, and into single characters."""
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


@pytest.mark.parametrize("chunks", every_cut("Okay, 2 and 2.\n</think>\n\nThe answer is 4."))
def test_an_output_with_only_the_closing_tag_splits_wherever_the_chunks_are_cut(chunks: list[str]) -> None:
    reasoning, content, _ = split(chunks, opened=True)
    assert (reasoning, content) == ("Okay, 2 and 2.", "The answer is 4.")


@pytest.mark.parametrize("chunks", every_cut("  \n<think>\nLet me see.\n</think>\n\nHello!"))
def test_a_model_that_opens_its_own_thinking_splits_wherever_the_chunks_are_cut(chunks: list[str]) -> None:
    reasoning, content, _ = split(chunks, opened=False)
    assert (reasoning, content) == ("Let me see.", "Hello!")


def test_a_prompt_that_opened_the_thinking_still_takes_a_think_tag_the_model_writes() -> None:
    assert split(["<think>", "Hmm.", "</think>", "Yes."], opened=True)[:2] == ("Hmm.", "Yes.")


def test_without_a_think_tag_the_output_is_the_answer_and_streams_at_once() -> None:
    splitter = ThinkSplitter(opened=False)
    assert splitter.feed("Hello") == [(CONTENT, "Hello")]
    assert splitter.feed(" there <think> is text here") == [(CONTENT, " there <think> is text here")]
    assert splitter.finish() == []


def test_a_model_that_never_closes_its_thinking_leaves_it_all_in_the_reasoning() -> None:
    reasoning, content, _ = split(["Still", " thinking about it ", "</thi"], opened=True)
    assert (reasoning, content) == ("Still thinking about it </thi", "")


def test_the_thinking_streams_while_a_tail_that_may_begin_the_closing_tag_waits() -> None:
    splitter = ThinkSplitter(opened=True)
    assert splitter.feed("One step") == [(REASONING, "One step")]
    assert splitter.feed(", then </") == [(REASONING, ", then")]  # " </" may begin "</think>"
    assert splitter.feed("b> is HTML") == [(REASONING, " </b> is HTML")]
    assert splitter.feed("</think>") == []
    assert splitter.feed("\n\n") == []  # whitespace after the tag is no answer
    assert splitter.feed("Done.") == [(CONTENT, "Done.")]
    assert splitter.phase == CONTENT


def test_an_empty_thinking_block_gives_no_reasoning() -> None:
    reasoning, content, pieces = split(["<think>\n\n</think>\n\n", "Hi."], opened=False)
    assert (reasoning, content) == ("", "Hi.")
    assert pieces == [(CONTENT, "Hi.")]


def test_a_prefix_of_the_opening_tag_that_is_no_tag_is_the_answer() -> None:
    assert split(["<thin", "g>"], opened=False)[:2] == ("", "<thing>")
    assert split(["<thi"], opened=False)[:2] == ("", "<thi")  # the output ended there


def test_only_whitespace_is_nothing() -> None:
    assert split([" \n", " "], opened=False)[2] == []
    assert split([" \n"], opened=True)[2] == []


@pytest.mark.parametrize(
    ("option", "template", "expected"),
    [
        ("auto", QWQ, (True, True)),
        ("auto", QWEN3, (True, False)),
        ("auto", DEEPSEEK_R1, (True, False)),
        ("auto", SMOLLM2, (False, False)),
        ("auto", "", (True, False)),  # a remote server: split what opens with <think> itself
        ("think_tags", SMOLLM2, (True, False)),
        ("think_tags", QWQ, (True, True)),
        ("think_tags", "", (True, True)),
        ("off", QWQ, (False, False)),
    ],
)
def test_the_mode_comes_from_the_option_and_the_template(
    option: str, template: str, expected: tuple[bool, bool]
) -> None:
    assert reasoning_mode(option, template) == expected


def test_a_template_that_opens_the_thinking_only_before_the_generation_prompt_does_not_open_it() -> None:
    assert not template_opens_think("{{ '<think>' }}{% if add_generation_prompt %}{{ 'assistant' }}{% endif %}")
    assert template_opens_think("{% if add_generation_prompt %}{{ 'assistant\\n<think>\\n' }}{% endif %}")


def test_an_unknown_mode_is_an_error_that_names_the_modes() -> None:
    with pytest.raises(ValueError, match="auto, think_tags, off"):
        reasoning_mode("sometimes", QWQ)
