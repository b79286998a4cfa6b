"""``ask_agent`` with a scripted engine: an agent consults another, whose answer (generated as a
reply of its own, in a consultation session hung on the asking reply) is the call's result; the
consultation is readable by id and never listed with the user's chats; an agent cannot ask itself,
an agent the user may not use, or one already in the chain; a consultation two deep cannot
consult; a stop while the consulted agent writes ends both within 2 s; a consultation past
``ASK_AGENT_TIMEOUT_SECONDS`` is stopped and the model reads why. The waits of a consultation
answered by another worker are checked with a broker that runs the task in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agents.models import Agent
from inference.backends.base import Chunk, GenerationParams, StopFlag, Usage
from inference.cache import model_cache
from inference.constraints import Tool, ToolCalls
from inference.grammars import gbnf_for
from inference.models import ModelArtifact
from inference.runtime.pool import task_run
from inference.tools.base import ToolCancelled, ToolError
from sessions_app import consult, services
from sessions_app.models import Message, Session
from sessions_app.replies import reply_generate
from sessions_app.selectors import session_list_for_user, session_payload
from sessions_app.tool_builtins import ASK_AGENT
from tests.fakes import FakeBackend, use_backend

# The consultation runs in the tool's thread (and the stop watcher in another): they read what the
# test wrote, so each test commits.
pytestmark = pytest.mark.django_db(transaction=True)


def call(name: str, **arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


class AgentsBackend(FakeBackend):
    """A scripted engine shared by several agents: each agent's system prompt is ``You are
    <slug>.``, and ``scripts[slug][i]`` is that agent's i-th generation (the last one repeats),
    written one chunk every ``delays[slug]`` seconds."""

    constraints = frozenset({"choice", "tools"})
    scripts: ClassVar[dict[str, list[list[str]]]] = {}
    delays: ClassVar[dict[str, float]] = {}
    seen: ClassVar[dict[str, list[GenerationParams]]] = {}

    def stream_chat(
        self, messages: Any, params: GenerationParams, *, should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        slug = messages[0]["content"].split("\n", 1)[0].removeprefix("You are ").rstrip(".")
        seen = type(self).seen.setdefault(slug, [])
        seen.append(params)
        steps = self.scripts[slug]
        step = steps[min(len(seen) - 1, len(steps) - 1)]
        for piece in step:
            if should_stop():
                yield Chunk(finish_reason="cancelled", usage=Usage(10, 1))
                return
            time.sleep(self.delays.get(slug, 0.0))
            yield Chunk(text=piece)
        yield Chunk(finish_reason="stop", usage=Usage(10, len(step)))


@pytest.fixture(autouse=True)
def agents_backend(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_backend(settings, "tests.sessions_app.test_ask_agent.AgentsBackend")
    # The test generates the user's replies itself: the embedded lane running them too would race.
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)
    settings.REPLY_BROADCAST_INTERVAL_MS = 0
    AgentsBackend.scripts, AgentsBackend.delays, AgentsBackend.seen = {}, {}, {}
    yield
    model_cache().clear()


def make_agent(artifact: ModelArtifact, slug: str, *, asks: bool = False, **fields: Any) -> Agent:
    """An agent on the scripted engine; ``asks``: it has ask_agent and must call it first."""
    if asks:
        fields.update(tools=["ask_agent"], tool_choice="required", max_tool_steps=1)
    return Agent.objects.create(
        name=slug.title(), slug=slug, backend="llama_cpp", model=artifact, system_prompt=f"You are {slug}.", **fields
    )


@pytest.fixture
def asker(gguf_artifact: ModelArtifact) -> Agent:
    return make_agent(gguf_artifact, "asker", asks=True)


@pytest.fixture
def expert(gguf_artifact: ModelArtifact) -> Agent:
    return make_agent(gguf_artifact, "expert")


def asked(user: User, agent: Agent, text: str = "Ask the expert what 6 times 7 is.") -> tuple[Session, Message]:
    """A chat with ``agent``, a message and its queued reply."""
    session = services.session_create(owner=user, agent=agent)
    _, reply = services.message_send(session=session, content=text)
    assert reply is not None
    return session, reply


def generated(user: User, agent: Agent, text: str = "Ask the expert what 6 times 7 is.") -> Message:
    _, reply = asked(user, agent, text)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    return reply


def offered(slug: str, step: int = 0) -> list[str] | None:
    """The agents ``slug``'s model could name in its ``step``-th generation (None: no ask_agent)."""
    constraint = AgentsBackend.seen[slug][step].constraint
    if not isinstance(constraint, ToolCalls):
        return None
    tool = next((t for t in constraint.tools if t.name == "ask_agent"), None)
    return None if tool is None else tool.parameters["properties"]["agent"]["enum"]


def test_the_consulted_agents_answer_is_the_calls_result_and_its_session_is_not_listed(
    user: User, asker: Agent, expert: Agent, gguf_artifact: ModelArtifact, api: APIClient
) -> None:
    make_agent(gguf_artifact, "hidden", visibility=Agent.Visibility.RESTRICTED)  # the user may not use it
    AgentsBackend.scripts = {
        "asker": [[call("ask_agent", agent="expert", question="What is 6 times 7?")], ["The expert says 42."]],
        "expert": [["It is", " 42."]],
    }
    reply = generated(user, asker)
    assert (reply.status, reply.content) == ("complete", "The expert says 42.")
    [stored] = reply.tool_calls
    assert (stored["name"], stored["status"], stored["result"], stored["error"]) == ("ask_agent", "ok", "It is 42.", "")
    assert offered("asker") == ["expert"]  # itself and the agent the user may not use are not offered
    # The consultation: a session of the user's, hung on the asking reply, answered by the expert.
    consultation = Session.objects.get(consulted_by=reply)
    assert (consultation.owner, consultation.agent) == (user, expert)
    assert consultation.title == "Consulted by Asker: What is 6 times 7?"
    question, answer = consultation.messages.order_by("pk")
    assert (question.role, question.content) == ("user", "What is 6 times 7?")
    assert (answer.agent, answer.status, answer.content) == (expert, "complete", "It is 42.")
    assert answer.backend == "llama_cpp"
    assert session_payload(consultation)["consulted_by"] == reply.pk
    assert session_payload(reply.session)["consulted_by"] is None
    # Not listed with the user's chats (the REST list, the sidebar's selector), but readable by id.
    assert list(session_list_for_user(user=user)) == [reply.session]
    assert list(session_list_for_user(user=user, search="6 times 7")) == [reply.session]
    listed = api.get("/api/sessions/").json()
    assert [s["id"] for s in listed["results"]] == [reply.session_id]
    detail = api.get(f"/api/sessions/{consultation.pk}/")
    assert detail.status_code == 200 and detail.json()["agent"] == "expert"
    messages = api.get(f"/api/sessions/{consultation.pk}/messages/").json()["results"]
    assert [m["content"] for m in messages] == ["What is 6 times 7?", "It is 42."]


def test_an_agent_cannot_ask_itself_nor_an_agent_the_user_may_not_use(
    user: User, asker: Agent, expert: Agent, gguf_artifact: ModelArtifact
) -> None:
    make_agent(gguf_artifact, "hidden", visibility=Agent.Visibility.RESTRICTED)
    AgentsBackend.scripts = {"asker": [[call("ask_agent", agent="asker", question="Hi?")], ["I answer myself."]]}
    reply = generated(user, asker)
    [stored] = reply.tool_calls
    assert stored["status"] == "error" and "cannot ask itself" in stored["error"], stored
    assert reply.content == "I answer myself."
    AgentsBackend.scripts = {"asker": [[call("ask_agent", agent="hidden", question="Hi?")], ["Nobody answered."]]}
    AgentsBackend.seen = {}
    reply = generated(user, asker)
    [stored] = reply.tool_calls
    assert stored["status"] == "error" and "no agent 'hidden' that the user may use" in stored["error"], stored
    assert not Session.objects.filter(consulted_by__isnull=False).exists()  # nothing was opened
    assert "expert" not in AgentsBackend.seen  # and nobody was asked


def test_a_chain_of_three_the_third_cannot_consult_and_nobody_asks_back(
    user: User, asker: Agent, gguf_artifact: ModelArtifact
) -> None:
    make_agent(gguf_artifact, "middle", asks=True)
    make_agent(gguf_artifact, "last", asks=True)  # it has ask_agent, but two deep it is not offered
    AgentsBackend.scripts = {
        "asker": [[call("ask_agent", agent="middle", question="Ask last, please.")], ["Done."]],
        "middle": [[call("ask_agent", agent="last", question="What do you say?")], ["Last says hello."]],
        "last": [["Hello from last."]],
    }
    reply = generated(user, asker)
    assert reply.status == "complete" and reply.tool_calls[0]["result"] == "Last says hello."
    first = Session.objects.get(consulted_by=reply)
    middle_reply = first.messages.get(role="assistant")
    assert middle_reply.tool_calls[0]["status"] == "ok" and middle_reply.tool_calls[0]["result"] == "Hello from last."
    second = Session.objects.get(consulted_by=middle_reply)
    last_reply = second.messages.get(role="assistant")
    assert (last_reply.status, last_reply.content) == ("complete", "Hello from last.")
    assert offered("asker") == ["last", "middle"]
    assert offered("middle") == ["last"]  # not the asker: it is in the chain
    assert AgentsBackend.seen["last"][0].constraint is None  # two deep: no tool at all
    assert [len(consult.consultation_chain(m)) - 1 for m in (reply, middle_reply, last_reply)] == [0, 1, 2]
    # Called anyway (the engine does not forbid it here), the tool refuses, as it refuses asking back.
    with pytest.raises(ToolError, match="2 deep"):
        consult.ask_agent(
            agent=last_reply.agent, user=user, reply=last_reply, arguments={"agent": "asker", "question": "Hi?"},
            cancel=None,
        )  # fmt: skip
    with pytest.raises(ToolError, match="already in this chain"):
        consult.ask_agent(
            agent=middle_reply.agent, user=user, reply=middle_reply, arguments={"agent": "asker", "question": "Hi?"},
            cancel=None,
        )  # fmt: skip
    assert Session.objects.filter(consulted_by__isnull=False).count() == 2


def test_llama_cpp_accepts_the_grammar_of_each_ask_agent_call(
    user: User, asker: Agent, expert: Agent, gguf_artifact: ModelArtifact
) -> None:
    """The engine parses the tool-call grammar before a token (a refused one fails the reply): the
    per-reply spec and the static one, the first step's and an opened call's."""
    from llama_cpp import llama_cpp as capi

    from inference.bundled import bundled_model_path
    from inference.llama_runtime import llama_load

    make_agent(gguf_artifact, "second-expert")
    spec = consult.ask_agent_spec(agent=asker, user=user, reply=None)
    assert spec is not None and spec.input_schema["properties"]["agent"]["enum"] == ["expert", "second-expert"]
    vocab = llama_load(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    for told in (spec, ASK_AGENT):
        for mode in ("required", "auto"):
            for opened in (False, True):
                tools = ToolCalls((Tool(told.name, told.description, told.input_schema),), mode=mode)
                sampler = capi.llama_sampler_init_grammar(
                    vocab._model.vocab, gbnf_for(tools, call_opened=opened).encode(), b"root"
                )
                assert sampler, (told.input_schema, mode, opened)
                capi.llama_sampler_free(sampler)


def consultation_reply(asking: Message, timeout: float = 10.0) -> Message:
    """The consulted reply once it is streaming with some text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = Message.objects.filter(session__consulted_by=asking, role="assistant", status="streaming").first()
        if found is not None and found.content:
            return found
        time.sleep(0.05)
    raise AssertionError("the consulted agent never started writing")


def final_at(message_id: int, timeout: float = 10.0) -> tuple[str, float]:
    """The reply's final status and when it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Message.objects.get(pk=message_id).status
        if status in Message.FINAL_STATUSES:
            return status, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"reply {message_id} never ended")


def test_a_stop_while_the_consulted_agent_writes_ends_both_within_two_seconds(
    user: User, asker: Agent, expert: Agent
) -> None:
    AgentsBackend.scripts = {
        "asker": [[call("ask_agent", agent="expert", question="Write at length.")], ["Never said."]],
        "expert": [["word "] * 400],
    }
    AgentsBackend.delays = {"expert": 0.05}  # 20 s of text
    session, reply = asked(user, asker)
    stopped: list[float] = []
    ends: dict[str, tuple[str, float]] = {}

    def stop_while_consulted() -> None:
        consulted = consultation_reply(reply)
        stopped.append(time.monotonic())
        services.reply_stop(session=session, message_id=reply.pk)
        ends["expert"] = final_at(consulted.pk)

    stopper = threading.Thread(target=stop_while_consulted)
    stopper.start()
    reply_generate(message_id=reply.pk)
    ends["asker"] = (Message.objects.get(pk=reply.pk).status, time.monotonic())
    stopper.join()
    assert stopped, "the stop was never sent"
    assert ends["asker"][0] == "cancelled" and ends["expert"][0] == "cancelled"
    assert ends["asker"][1] - stopped[0] < 2.0 and ends["expert"][1] - stopped[0] < 2.0
    reply.refresh_from_db()
    assert [c["status"] for c in reply.tool_calls] == ["cancelled"]
    assert len(AgentsBackend.seen["asker"]) == 1  # no generation after the stop


def test_a_consultation_past_the_timeout_is_stopped_and_the_model_reads_why(
    user: User, asker: Agent, expert: Agent, settings: Any
) -> None:
    settings.ASK_AGENT_TIMEOUT_SECONDS = 1.0
    AgentsBackend.scripts = {
        "asker": [[call("ask_agent", agent="expert", question="Write at length.")], ["It took too long."]],
        "expert": [["word "] * 400],
    }
    AgentsBackend.delays = {"expert": 0.05}
    started = time.monotonic()
    reply = generated(user, asker)
    assert time.monotonic() - started < 1.0 + 3.0
    [stored] = reply.tool_calls
    assert stored["status"] == "error" and "did not answer within 1 s" in stored["error"], stored
    assert reply.status == "complete" and reply.content == "It took too long."
    consulted = Message.objects.get(session__consulted_by=reply, role="assistant")
    assert consulted.status == "cancelled" and consulted.content.startswith("word ")


class ThreadBroker:
    """Stands in for Celery when the consulted agent's queue is another worker's: ``send_task``
    runs the task in a thread of its own, as that worker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.threads: list[threading.Thread] = []
        self.amqp = SimpleNamespace(queues=SimpleNamespace(consume_from={"llama_cpp": None}))

    def send_task(self, name: str, *, kwargs: dict[str, Any], queue: str) -> None:
        self.sent.append((name, kwargs, queue))
        thread = threading.Thread(target=task_run, args=(name, kwargs))
        thread.start()
        self.threads.append(thread)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[ThreadBroker]:
    """A Celery worker of the ``llama_cpp`` queue (its decision, not the embedded default's), whose
    broker has another worker serve ``llama_cpp.edge``."""
    settings.ASK_AGENT_TIMEOUT_SECONDS = 20  # a failure here fails in seconds, not minutes
    fake = ThreadBroker()
    monkeypatch.setattr(consult, "current_app", fake)
    monkeypatch.setattr(consult, "_this_worker_serves", consult._celery_worker_serves)
    yield fake
    for thread in fake.threads:
        thread.join(10)


def test_a_consultation_on_another_workers_queue_is_sent_there_and_waited_for(
    user: User, asker: Agent, gguf_artifact: ModelArtifact, broker: ThreadBroker
) -> None:
    edge = make_agent(gguf_artifact, "edge", node="edge")
    assert edge.queue == "llama_cpp.edge"
    AgentsBackend.scripts = {"edge": [["From the edge."]]}
    session, reply = asked(user, asker)
    cancel = threading.Event()
    answer = consult.ask_agent(
        agent=asker, user=user, reply=reply, arguments={"agent": "edge", "question": "Hi?"}, cancel=cancel
    )
    assert answer == "From the edge."
    [(name, kwargs, queue)] = broker.sent
    assert name == "sessions_app.tasks.reply_generate" and queue == "llama_cpp.edge"
    # A stop while that worker writes: the call ends at once, the consulted reply at its next poll.
    AgentsBackend.delays = {"edge": 0.05}
    AgentsBackend.scripts = {"edge": [["word "] * 400]}
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    with pytest.raises(ToolCancelled):
        consult.ask_agent(
            agent=asker, user=user, reply=reply, arguments={"agent": "edge", "question": "Write at length."},
            cancel=cancel,
        )  # fmt: skip
    stopped = time.monotonic()
    timer.join()
    consulted = Message.objects.filter(session__consulted_by=reply, role="assistant").order_by("-pk").first()
    assert consulted is not None
    status, ended = final_at(consulted.pk)
    assert status == "cancelled" and ended - stopped < 2.0
    # The asking agent's own queue is this worker's: that reply is generated here, not sent.
    AgentsBackend.scripts["expert"] = [["Here."]]
    make_agent(gguf_artifact, "expert")
    assert consult.ask_agent(agent=asker, user=user, reply=reply, arguments={"agent": "expert", "question": "Hi?"},
                             cancel=None) == "Here."  # fmt: skip
    assert len(broker.sent) == 2
