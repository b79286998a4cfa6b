"""Take the README's screenshots of the chat page: ``python -m tests.ui.screenshots``.

A real platform and the bundled model: an earlier answer with a code block and a table is stored
in the database, then a new question is sent in the browser and its reply streamed. Writes
docs/screenshot-chat.png (light), docs/screenshot-chat-dark.png and docs/screenshot-chat-phone.png.
Emoji avatars need a colour emoji font on the machine (Debian: fonts-noto-color-emoji).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.ui.helpers import ask, wait_final
from tests.ui.site import launch, log_in, open_session, running_platform, seed_session
from tools.launch import ROOT, manage

DOCS = ROOT / "docs"

QUESTION = "How do I sort a list of dicts by a key in Python?"
ANSWER = """Use `sorted()` with a `key` function. `operator.itemgetter` is the fastest way to read the key:

```python
from operator import itemgetter

people = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}, {"name": "Grace", "age": 28}]
by_age = sorted(people, key=itemgetter("age"))
oldest_first = sorted(people, key=itemgetter("age"), reverse=True)
```

| call | sorts | returns |
| --- | --- | --- |
| `sorted(xs, key=...)` | a copy | a new list |
| `xs.sort(key=...)` | in place | `None` |

Both are **stable**: people of the same age keep their order.
"""
OTHER_CHATS = ["Trip ideas for Lisbon", "Raspberry Pi 5 setup", "Summarize the Q3 report", "Regex for ISO dates"]


def main() -> None:
    with tempfile.TemporaryDirectory() as data, running_platform(Path(data)) as platform, sync_playwright() as p:
        for title in OTHER_CHATS:
            seed_session(platform, "alice", title, [("user", title)])
        session_id = seed_session(
            platform, "alice", "Sorting dicts in Python", [("user", QUESTION), ("assistant", ANSWER)]
        )
        # A short streamed reply, so the page shows the question, the code and table and the reply.
        manage(
            platform.env,
            "shell",
            "-c",
            "from agents.models import Agent; Agent.objects.filter(slug='assistant').update(max_tokens=90)",
        )
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page = log_in(context, platform, "alice")
        open_session(page, platform, session_id)
        reply = ask(page, "Thanks, that helps!")
        assert wait_final(reply) in ("complete", "cancelled")
        page.mouse.move(0, 0)
        page.evaluate("document.getElementById('thread').scrollTop = 0")
        page.wait_for_timeout(300)
        page.screenshot(path=DOCS / "screenshot-chat.png")

        page.get_by_role("button", name="Switch to dark theme").click()
        page.wait_for_timeout(300)
        page.screenshot(path=DOCS / "screenshot-chat-dark.png")
        page.get_by_role("button", name="Switch to light theme").click()

        phone = browser.new_context(
            storage_state=context.storage_state(), viewport={"width": 390, "height": 844}, is_mobile=True,
            has_touch=True, device_scale_factor=1,
        )  # fmt: skip
        small = phone.new_page()
        open_session(small, platform, session_id)
        small.wait_for_timeout(300)
        small.screenshot(path=DOCS / "screenshot-chat-phone.png")
        browser.close()
    for name in ("screenshot-chat.png", "screenshot-chat-dark.png", "screenshot-chat-phone.png"):
        print(DOCS / name)


if __name__ == "__main__":
    main()
