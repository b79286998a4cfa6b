from __future__ import annotations

import pytest

from inference.prompt import PromptTooLong, prompt_build


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) + 2 for m in messages)


def turns(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "w " * 8} for i in range(n)]


def test_everything_fits_in_a_large_window() -> None:
    prompt = prompt_build(
        system_prompt="Be kind.", history=turns(5), count_tokens=words, context_window=4096, max_tokens=100
    )
    assert prompt.messages[0] == {"role": "system", "content": "Be kind."}
    assert len(prompt.messages) == 6 and prompt.dropped == 0
    assert prompt.max_tokens == 100


def test_oldest_turns_are_dropped_and_the_system_prompt_and_newest_kept() -> None:
    history = turns(21)  # ends with a user turn
    prompt = prompt_build(system_prompt="Sys", history=history, count_tokens=words, context_window=120, max_tokens=40)
    assert prompt.messages[0]["role"] == "system"
    assert prompt.messages[-1] == history[-1]
    assert prompt.messages[1]["role"] == "user"  # the kept conversation opens with a user turn
    assert prompt.dropped > 0
    assert words(prompt.messages) <= 120 - 40
    assert prompt.prompt_tokens + prompt.max_tokens <= 120


def test_max_tokens_is_cut_to_the_room_left() -> None:
    prompt = prompt_build(system_prompt="", history=turns(1), count_tokens=words, context_window=200, max_tokens=5000)
    assert prompt.prompt_tokens + prompt.max_tokens == 200


def test_a_message_bigger_than_the_window_is_a_clear_error() -> None:
    history = [{"role": "user", "content": "w " * 500}]
    with pytest.raises(PromptTooLong, match="context window is 256"):
        prompt_build(system_prompt="", history=history, count_tokens=words, context_window=256, max_tokens=64)


@pytest.mark.parametrize(("history", "window", "most"), [(1, 600, 1), (5, 800, 2), (40, 200, 9)])
def test_each_prompt_is_counted_once(history: int, window: int, most: int) -> None:
    # A count renders the template and tokenizes (for vLLM, an HTTP call to /tokenize): a lone
    # message is counted once, a history that fits twice, a long one once per bisection step.
    seen: list[int] = []

    def counting(messages: list[dict[str, str]]) -> int:
        seen.append(len(messages))
        return words(messages)

    fitted = prompt_build(
        system_prompt="Be kind.", history=turns(history), count_tokens=counting, context_window=window,
        max_tokens=50,
    )  # fmt: skip
    assert 1 <= len(seen) <= most
    assert fitted.prompt_tokens == words(fitted.messages)


def test_a_conversation_far_inside_the_window_is_not_counted() -> None:
    """Its bytes, with room for any template, and the whole reply fit: the tokenizer (an HTTP call
    for vLLM) is skipped, and the reply keeps every token it asked for."""
    seen: list[int] = []

    def counting(messages: list[dict[str, str]]) -> int:
        seen.append(len(messages))
        return words(messages)

    fitted = prompt_build(
        system_prompt="Be kind.", history=turns(5), count_tokens=counting, context_window=8192, max_tokens=512
    )
    assert seen == []
    assert len(fitted.messages) == 6 and fitted.dropped == 0
    assert (fitted.prompt_tokens, fitted.max_tokens) == (None, 512)
    # Near the window the count decides: the same conversation in a window its bound exceeds.
    near = prompt_build(
        system_prompt="Be kind.", history=turns(5), count_tokens=counting, context_window=1000, max_tokens=512
    )
    assert seen and near.prompt_tokens == words(near.messages) and near.max_tokens == 512


@pytest.mark.parametrize("text", ["plain words " * 40, "ünïcödé " * 40, "中文字符" * 60, "🙂" * 100, "<|im_end|>" * 30])
def test_the_bound_is_above_what_the_bundled_models_tokenizer_counts(text: str) -> None:
    from llama_cpp import Llama

    from inference.bundled import bundled_model_path
    from inference.prompt import tokens_at_most

    llm = Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    messages = [{"role": "system", "content": text}, {"role": "user", "content": text}]
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    counted = len(llm.tokenize((rendered + "<|im_start|>assistant\n").encode(), add_bos=True, special=True))
    assert counted <= tokens_at_most(messages)
