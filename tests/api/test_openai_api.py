"""The OpenAI-compatible API, used the way developers use it: the official ``openai`` client and
``curl`` against a running platform (the embedded default: daphne, SQLite, replies in-process on
the bundled model)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.api.conftest import client_for
from tests.integration.chat_client import api
from tools.launch import Platform

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 40}
CAP = 512  # the bundled assistant's max_tokens (bootstrap)


def _sessions(platform: Platform, user: str) -> list[dict[str, Any]]:
    status, body = api(platform.http, platform.tokens[user], "GET", "/api/sessions/")
    assert status == 200
    return list(body["results"])


def _messages(platform: Platform, user: str, session_id: int) -> list[dict[str, Any]]:
    status, body = api(platform.http, platform.tokens[user], "GET", f"/api/sessions/{session_id}/messages/")
    assert status == 200
    return list(body["results"])


def _session_of(platform: Platform, completion_id: str) -> tuple[int, dict[str, Any]]:
    """The stored session and reply behind a completion (its id is ``chatcmpl-<reply id>``)."""
    reply_id = int(completion_id.removeprefix("chatcmpl-"))
    for session in _sessions(platform, "alice"):
        for message in _messages(platform, "alice", session["id"]):
            if message["id"] == reply_id:
                return session["id"], message
    raise AssertionError(f"no stored reply {reply_id}")


def _post(platform: Platform, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(platform.http + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_models_are_the_agents_the_caller_may_use(alice: OpenAI) -> None:
    models = {m.id: m for m in alice.models.list()}
    assert "assistant" in models
    assert models["assistant"].object == "model" and models["assistant"].owned_by
    assert alice.models.retrieve("assistant").id == "assistant"


def test_a_completion_answers_and_reports_the_stored_token_counts(platform: Platform, alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": QUESTION}], **GREEDY
    )
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == "assistant"
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    session_id, reply = _session_of(platform, completion.id)
    assert reply["content"] == choice.message.content and reply["status"] == "complete"
    assert reply["stats"]["prompt_tokens"] == usage.prompt_tokens
    assert reply["stats"]["completion_tokens"] == usage.completion_tokens
    session = next(s for s in _sessions(platform, "alice") if s["id"] == session_id)
    assert session["title"] == QUESTION and session["agent"] == "assistant"


def test_a_streamed_completion_adds_up_to_the_stored_reply(platform: Platform, alice: OpenAI) -> None:
    chunks = list(
        alice.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing in (["stop"], ["length"]) and chunks[-2].choices[0].finish_reason == finishing[0]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # it really streamed
    assert "Paris" in text

    _, reply = _session_of(platform, chunks[0].id)
    assert reply["content"] == text
    assert reply["stats"]["completion_tokens"] == chunks[-1].usage.completion_tokens


def test_max_tokens_ends_the_reply_with_length(alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Write a long poem about the sea."}],
        temperature=0, max_completion_tokens=5,
    )  # fmt: skip
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 5


def test_the_extras_seeds_send_are_accepted(alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Name three colours."}],
        temperature=0.7, top_p=0.9, seed=7, stop=["\n\n\n"], max_tokens=20,
        extra_body={"repetition_penalty": 1.3},
    )  # fmt: skip
    assert completion.choices[0].message.content.strip()


def test_a_conversation_keeps_its_turns_and_the_callers_system_prompt(platform: Platform, alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant",
        messages=[
            {"role": "system", "content": "You are a pirate. Always answer like a pirate."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Ahoy, matey!"},
            {"role": "user", "content": QUESTION},
        ],
        **GREEDY,
    )
    session_id, _ = _session_of(platform, completion.id)
    stored = [(m["role"], m["content"]) for m in _messages(platform, "alice", session_id)]
    assert stored[:3] == [("user", "Hello!"), ("assistant", "Ahoy, matey!"), ("user", QUESTION)]
    assert stored[3] == ("assistant", completion.choices[0].message.content) and len(stored) == 4


def test_max_tokens_over_the_agents_cap_is_refused_with_the_cap(alice: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "Hi"}], max_tokens=CAP + 1
        )
    assert f"at most {CAP}" in refused.value.message
    assert refused.value.body["param"] == "max_tokens"


def test_a_prompt_over_the_agents_limit_is_refused_with_the_limit(alice: OpenAI) -> None:
    messages = [{"role": "system", "content": "a " * 10_000}, {"role": "user", "content": "b " * 6_001}]
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(model="assistant", messages=messages, max_tokens=10)
    assert "32002 characters" in refused.value.message and "at most 32000" in refused.value.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages"),
        ({"messages": [{"role": "function", "content": "Hi"}]}, "messages[0].role"),
    ],
)
def test_bad_parameters_are_refused_in_openais_format(alice: OpenAI, change: dict[str, Any], param: str) -> None:
    request: dict[str, Any] = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], **change}
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(**request)
    assert refused.value.body["param"] == param and refused.value.body["type"] == "invalid_request_error"


def test_an_unknown_model_is_404_in_openais_format(platform: Platform, alice: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        alice.chat.completions.create(model="no-such-agent", messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.code == "model_not_found"
    body = json.dumps({"model": "no-such-agent", "messages": [{"role": "user", "content": "Hi"}]}).encode()
    headers = {"Authorization": f"Bearer {platform.tokens['alice']}", "Content-Type": "application/json"}
    status, error = _post(platform, "/v1/chat/completions", body, headers)
    assert status == 404
    assert set(error["error"]) == {"message", "type", "param", "code"} and error["error"]["param"] == "model"


def test_a_body_that_is_not_json_is_400_in_openais_format(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.tokens['alice']}", "Content-Type": "application/json"}
    status, error = _post(platform, "/v1/chat/completions", b"{not json", headers)
    assert status == 400 and error["error"]["code"] == "invalid_json"


def test_a_bad_token_is_401(platform: Platform) -> None:
    with pytest.raises(openai.AuthenticationError):
        client_for(platform, "cs_not-a-real-token").models.list()
    with pytest.raises(openai.AuthenticationError):
        client_for(platform, "cs_not-a-real-token").chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "Hi"}]
        )


def test_store_false_keeps_no_session(platform: Platform, alice: OpenAI) -> None:
    before = {s["id"] for s in _sessions(platform, "alice")}
    completion = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Say hi."}], store=False, max_tokens=10
    )
    assert completion.choices[0].message.content
    streamed = list(
        alice.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "Say hi."}],
            store=False,
            max_tokens=10,
            stream=True,
        )
    )
    assert streamed[-1].choices[0].finish_reason
    assert {s["id"] for s in _sessions(platform, "alice")} == before


def test_a_call_is_a_session_of_the_caller_only(platform: Platform, alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Only for Alice."}], max_tokens=10
    )
    session_id, _ = _session_of(platform, completion.id)
    assert session_id in {s["id"] for s in _sessions(platform, "alice")}
    assert session_id not in {s["id"] for s in _sessions(platform, "bob")}
    status, _ = api(platform.http, platform.tokens["bob"], "GET", f"/api/sessions/{session_id}/")
    assert status == 404


def test_hanging_up_mid_stream_stops_the_reply(platform: Platform, alice: OpenAI) -> None:
    stream = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
        max_tokens=CAP, stream=True,
    )  # fmt: skip
    first = None
    for chunk in stream:
        first = first or chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    assert first is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, reply = _session_of(platform, first)
        if reply["status"] != "streaming":
            break
        time.sleep(0.5)
    assert reply["status"] == "cancelled" and reply["stats"]["completion_tokens"] < CAP


def test_curl_streams_server_sent_events_that_end_with_done(platform: Platform) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": QUESTION}], "stream": True, **GREEDY}
    result = subprocess.run(
        [
            "curl", "-sS", "-N", f"{platform.http}/v1/chat/completions",
            "-H", "Content-Type: application/json",
            "-H", f"Authorization: Bearer {platform.tokens['alice']}",
            "-d", json.dumps(body),
        ],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    events = [line for line in result.stdout.splitlines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "Paris" in "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


def test_a_browser_cookie_works_for_reading_but_a_cross_site_post_needs_the_csrf_token(platform: Platform) -> None:
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = browser.open(f"{platform.http}/login/", timeout=30).read().decode()
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert form_token is not None
    login = urllib.parse.urlencode(
        {"username": "alice", "password": "alice-password-1", "csrfmiddlewaretoken": form_token.group(1)}
    ).encode()
    browser.open(urllib.request.Request(f"{platform.http}/login/", data=login, method="POST"), timeout=30)
    assert json.loads(browser.open(f"{platform.http}/v1/models", timeout=30).read())["data"]

    body = json.dumps({"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
    forged = urllib.request.Request(
        f"{platform.http}/v1/chat/completions", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        browser.open(forged, timeout=30)
    assert refused.value.code == 403 and json.loads(refused.value.read())["error"]["code"] == "csrf_failed"

    csrf = next(c.value for c in jar if c.name == "csrftoken")
    own = urllib.request.Request(
        f"{platform.http}/v1/chat/completions", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf},
    )  # fmt: skip
    assert json.loads(browser.open(own, timeout=120).read())["object"] == "chat.completion"


def test_too_many_requests_get_429_with_retry_after(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process, with a tight limit: the running platform's limit is the generous default.
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client
    from rest_framework.throttling import UserRateThrottle

    from sessions_app.tokens import token_create

    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/minute", "anon": "2/minute"})
    cache.clear()
    _, secret = token_create(user=User.objects.create_user("carol"), name="tests")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert [client.get("/v1/models").status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/models")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["Retry-After"]) >= 1
