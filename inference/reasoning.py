"""A reasoning model's output split into its thinking and its answer, as the text streams.

Reasoning models (QwQ, DeepSeek-R1, Qwen3) write their thinking between ``<think>`` and
``</think>``, then the answer. Some chat templates open ``<think>`` in the prompt itself (QwQ-32B's
does), so the output holds only the closing tag: ``ThinkSplitter(opened=True)`` expects that. A
tag may arrive split across chunks at any character, so a tail that could begin one is held back
until the next chunk (or ``finish()``) decides it.

Which agents are split, and how, comes from ``reasoning_mode``: the agent's option and the model's
chat template. Free of Django: it knows no agent, only the option's value.
"""

from __future__ import annotations

from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

Part = Literal["reasoning", "content"]
REASONING: Part = "reasoning"
CONTENT: Part = "content"

# An agent's ``reasoning`` option.
MODE_AUTO = "auto"
MODE_THINK_TAGS = "think_tags"
MODE_OFF = "off"
MODES = (MODE_AUTO, MODE_THINK_TAGS, MODE_OFF)

# Where the generation prompt starts in a chat template (the Jinja variable every template uses).
_GENERATION_PROMPT = "add_generation_prompt"


class ThinkSplitter:
    """Feeds on the output's chunks; returns ``(part, text)`` pieces in order.

    ``opened``: the prompt already opened ``<think>``, so the output starts in the thinking and
    holds only ``</think>`` (a ``<think>`` the model writes itself at the start is taken too).
    Otherwise whitespace then ``<think>`` starts the thinking, and any other start is the answer.
    Whitespace around the thinking (after ``<think>``, before and after ``</think>``) belongs to
    neither part. Only the first block is thinking: a later ``<think>`` is text of the answer. A
    model that never closes its thinking leaves everything in the reasoning.
    """

    def __init__(self, *, opened: bool) -> None:
        self.phase: Literal["start", "reasoning", "content"] = "start"
        self._fallback: Part = REASONING if opened else CONTENT
        self._held = ""
        self._trim = False  # the part just began after a tag: leading whitespace is not its text

    def feed(self, text: str) -> list[tuple[Part, str]]:
        self._held += text
        out: list[tuple[Part, str]] = []
        if self.phase == "start":
            self._start()
        if self.phase == REASONING:
            self._reason(out)
        if self.phase == CONTENT:
            self._answer(out)
        return out

    def finish(self) -> list[tuple[Part, str]]:
        """What was held back, once the output ended: a tail that began no tag after all."""
        held, self._held = self._held, ""
        if not held.strip():
            return []
        return [(self._fallback if self.phase == "start" else self.phase, held)]

    def _start(self) -> None:
        stripped = self._held.lstrip()
        if stripped.startswith(THINK_OPEN):
            self._held = stripped[len(THINK_OPEN) :]
            self.phase, self._trim = REASONING, True
        elif not THINK_OPEN.startswith(stripped):  # neither empty nor the start of the tag
            self.phase = self._fallback
            self._trim = self._fallback == REASONING

    def _reason(self, out: list[tuple[Part, str]]) -> None:
        if self._trim:
            self._held = self._held.lstrip()
        end = self._held.find(THINK_CLOSE)
        if end >= 0:
            piece = self._held[:end].rstrip()
            self._held = self._held[end + len(THINK_CLOSE) :]
            self.phase, self._trim = CONTENT, True
            if piece:
                out.append((REASONING, piece))
            return
        cut = tag_safe_end(self._held, THINK_CLOSE)
        if cut:
            out.append((REASONING, self._held[:cut]))
            self._held, self._trim = self._held[cut:], False

    def _answer(self, out: list[tuple[Part, str]]) -> None:
        if self._trim:
            self._held = self._held.lstrip()
        if self._held:
            out.append((CONTENT, self._held))
            self._held, self._trim = "", False


def tag_safe_end(text: str, tag: str) -> int:
    """How much of ``text`` can go out now: all but a tail that could begin ``tag`` and the
    whitespace before it (whitespace before the tag belongs to no part)."""
    hold = 0
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            hold = size
            break
    end = len(text) - hold
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end


def reasoning_mode(option: str, chat_template: str) -> tuple[bool, bool]:
    """``(enabled, opened)`` for an agent whose ``reasoning`` option is ``option`` and whose model's
    chat template is ``chat_template`` ("" when the backend cannot read it: a remote server).

    - "off": no splitting, all output is the answer.
    - "auto": split when the template mentions ``<think>`` or ``</think>`` at all (DeepSeek-R1's
      first template only cuts ``</think>`` out of earlier turns; a template that knows no
      thinking belongs to a model that does not think in tags). With no template to read (a
      remote server), split only what opens with ``<think>`` itself: the ``openai_compat``
      backend writes a server's separate ``reasoning_content`` so.
    - "think_tags": always split. Opened when the template's generation prompt writes ``<think>``
      without closing it; with no template to read, opened too, as QwQ's and DeepSeek-R1's are
      (the splitter also takes a ``<think>`` the model writes itself, so either way is read right).
    """
    if option == MODE_OFF:
        return False, False
    if option == MODE_THINK_TAGS:
        return True, template_opens_think(chat_template) or not chat_template
    if option == MODE_AUTO:
        if not chat_template:
            return True, False
        return THINK_OPEN in chat_template or THINK_CLOSE in chat_template, template_opens_think(chat_template)
    raise ValueError(f"Unknown reasoning mode {option!r}; one of: {', '.join(MODES)}.")


def template_opens_think(chat_template: str) -> bool:
    """Whether the template's generation prompt (its text after the last ``add_generation_prompt``)
    writes ``<think>`` and leaves it open: QwQ's ``'<|im_start|>assistant\\n<think>\\n'`` does;
    Qwen3's ``'<think>\\n\\n</think>\\n\\n'`` (thinking switched off) does not."""
    at = chat_template.rfind(_GENERATION_PROMPT)
    if at < 0:
        return False
    tail = chat_template[at:]
    return tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)
