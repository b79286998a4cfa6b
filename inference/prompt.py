"""Build the prompt for a reply: system prompt plus the newest turns that fit the context."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from inference.backends.base import ChatMessage


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    prompt_tokens: int | None  # None: not counted, the prompt is far inside the window
    max_tokens: int
    dropped: int  # history messages left out to fit


# A bound on a prompt's tokens without the tokenizer. No tokenizer we serve makes more than one
# token of a byte (byte-level BPE; SentencePiece, whose byte fallback is one token a byte), the
# messages' JSON has every byte of their text and more, and a chat template adds a few tokens a
# message and at most a default system prompt of its own.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS = 512


def tokens_at_most(messages: list[ChatMessage]) -> int:
    text = json.dumps(messages, ensure_ascii=False).encode("utf-8")
    return len(text) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS


def prompt_build(
    *,
    system_prompt: str,
    history: list[ChatMessage],
    count_tokens: Callable[[list[ChatMessage]], int],
    context_window: int,
    max_tokens: int,
    min_reply_tokens: int = 16,
) -> Prompt:
    """Keep the system prompt and the newest turns so that prompt plus reply fit the window.

    ``history`` ends with the message being answered. The reply keeps ``max_tokens`` of room
    (at most half the window), older turns are dropped first, and the returned ``max_tokens``
    is cut to the room that is really left.
    """
    if not history:
        raise PromptTooLong("There is no message to answer.")
    system = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    reserve = max(min_reply_tokens, min(max_tokens, context_window // 2))
    budget = context_window - reserve

    def build(start: int) -> list[ChatMessage]:
        turns = history[start:]
        # A chat template expects the conversation to open with a user turn.
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns = turns[1:]
        return system + turns

    # The whole conversation with the whole reply far inside the window (the usual case): no need
    # to count. A count renders the chat template and tokenizes (for vLLM, an HTTP call to the
    # engine), a few milliseconds of every reply's time to first token (issue 25).
    whole = build(0)
    if tokens_at_most(whole) + max_tokens <= context_window:
        return Prompt(
            messages=whole, prompt_tokens=None, max_tokens=max_tokens, dropped=len(history) + len(system) - len(whole)
        )

    # Each count: once per start.
    counted: dict[int, int] = {}

    def count(start: int) -> int:
        if start not in counted:
            counted[start] = count_tokens(build(start))
        return counted[start]

    lo, hi = 0, len(history) - 1
    if count(hi) > budget:
        raise PromptTooLong(
            f"The message and system prompt take {count(hi)} tokens; this agent's context window is "
            f"{context_window} tokens with {reserve} kept for the reply. Shorten the message."
        )
    # Mostly the whole history fits: one more count. Else the fewest dropped messages that fit:
    # count grows as start falls, so bisect.
    if count(lo) > budget:
        while lo < hi:
            mid = (lo + hi) // 2
            if count(mid) <= budget:
                hi = mid
            else:
                lo = mid + 1
    messages = build(lo)
    used = count(lo)
    return Prompt(
        messages=messages,
        prompt_tokens=used,
        max_tokens=max(1, min(max_tokens, context_window - used)),
        dropped=len(history) - (len(messages) - len(system)),
    )
