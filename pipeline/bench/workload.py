"""The benchmark's prompts: ``requests`` different user messages of ``input_tokens`` tokens each.

Each prompt starts differently (its number and a different place in the text), so an engine that
keeps the previous prompt's cache (llama.cpp does) cannot skip the prefill of the next one. Lengths
are counted with the model's own tokenizer when the benchmark has it, else estimated at 1.3 tokens
a word; the prompt tokens each door reports (the chat template included) are what the results use.
"""

from __future__ import annotations

from collections.abc import Callable

INSTRUCTION = "Read the notes below, then write a long story that continues them.\n\n"
TEXT = (
    "The harbour town woke before the sun. Fishing boats slid out past the breakwater while the baker "
    "pulled the first loaves from an oven older than anyone could remember. On the hill the lighthouse "
    "keeper climbed the spiral stairs, counting each of the one hundred and twelve steps as his father "
    "had done, and wiped the salt from the great lens. Below him the market stalls opened one by one: "
    "oranges from the south, copper pans, bright scarves, crates of silver sardines still cold from the "
    "sea. A girl with a notebook walked between them, writing down the price of everything, because her "
    "grandmother had told her that a town can be read like a book if you know where to look. "
    "In the afternoon the wind turned. Clouds gathered over the western cliffs and the harbour master "
    "raised the blue flag that meant the boats should come home early. Most of them did. One did not. "
    "The keeper watched the empty place at the end of the quay and lit the lamp an hour before dusk. "
    "Steam engines once worked the quarry above the town; their iron bones still lay in the grass, and "
    "children told each other that on stormy nights you could hear the pistons breathing. The school "
    "teacher explained, patiently and every year, how water turned to steam pushes a piston, how the "
    "piston turns a wheel, and how the wheel once carried stone down to ships that took it to build "
    "cities far away. The children listened, and then went up the hill to listen to the pistons anyway. "
)
WORDS = TEXT.split()


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 1.3))


def prompt_make(index: int, input_tokens: int, count: Callable[[str], int] = estimate_tokens) -> str:
    """A user message of about ``input_tokens`` tokens, different for each ``index``."""
    head = f"Request {index + 1}. {INSTRUCTION}"
    start = (index * 37) % len(WORDS)

    def text(n_words: int) -> str:
        words = [WORDS[(start + i) % len(WORDS)] for i in range(n_words)]
        return head + " ".join(words)

    lo, hi = 0, max(8, input_tokens * 2)
    while count(text(hi)) < input_tokens:
        hi *= 2
    while lo < hi:  # the most words that stay within input_tokens
        mid = (lo + hi + 1) // 2
        if count(text(mid)) <= input_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


def prompts_make(
    requests: int, input_tokens: int, count: Callable[[str], int] = estimate_tokens, *, first: int = 0
) -> list[str]:
    """``requests`` prompts numbered from ``first``: give each target its own numbers, so that two
    targets on one engine (the platform's doors share a worker) never reuse each other's cache."""
    distinct = [prompt_make(first + i, input_tokens, count) for i in range(min(requests, 256))]
    return [distinct[i % len(distinct)] for i in range(requests)]
