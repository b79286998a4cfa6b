"""Multi-agent sessions with a scripted backend: who answers, in which order, what each agent
sees, and that one stop ends the chain. The worker side runs here as the worker runs it
(the reply task, ``sessions_app.tasks.reply_generate``); each next turn is queued by it once the
previous reply is stored."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import ModelArtifact
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.supervisor import turn_choose
from sessions_app.tasks import reply_generate
from sessions_app.turns import turn_next
from tests.fakes import FakeBackend
from tests.sessions_app.test_reply_lifecycle import fake_backend  # noqa: F401 - the autouse fixture


def make_agent(model: ModelArtifact, slug: str, name: str, prompt: str = "") -> Agent:
    return Agent.objects.create(name=name, slug=slug, backend="llama_cpp", model=model, system_prompt=prompt)


@pytest.fixture
def poet(gguf_artifact: ModelArtifact) -> Agent:
    return make_agent(gguf_artifact, "poet", "Poet", "You write verse.")


@pytest.fixture
def critic(gguf_artifact: ModelArtifact) -> Agent:
    return make_agent(gguf_artifact, "critic", "Critic", "You judge verse.")


@pytest.fixture
def judge(gguf_artifact: ModelArtifact) -> Agent:
    return make_agent(gguf_artifact, "judge", "Judge", "You decide.")


def run_chain(user_message: Message, limit: int = 20) -> list[Message]:
    """Run the queued replies to ``user_message`` one after another, as workers would."""
    for _ in range(limit):
        queued = Message.objects.filter(reply_to=user_message, status=Message.Status.QUEUED).order_by("pk").first()
        if queued is None:
            break
        reply_generate(message_id=queued.pk)
    return list(Message.objects.filter(reply_to=user_message).order_by("pk").select_related("agent"))


def test_round_robin_over_two_rounds_gives_four_replies_in_order(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 2}
    )
    sent, first = services.message_send(session=session, content="A poem about rain, please.")
    assert first.agent == poet and first.turn == 1
    chain = run_chain(sent)
    assert [(m.agent.slug, m.turn, m.status) for m in chain] == [
        ("poet", 1, "complete"),
        ("critic", 2, "complete"),
        ("poet", 3, "complete"),
        ("critic", 4, "complete"),
    ]


def test_each_agent_sees_its_own_turns_as_assistant_and_others_by_name(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 2}
    )
    sent, _ = services.message_send(session=session, content="A poem about rain, please.")
    run_chain(sent)
    prompts = FakeBackend.seen_messages
    # The critic's first turn: its own system prompt, the user's words, the poet's by name.
    assert prompts[1] == [
        {"role": "system", "content": "You judge verse."},
        {"role": "user", "content": "A poem about rain, please.\n\nPoet: Hello, world."},
    ]
    # The poet's second turn: its own first turn is `assistant`, the critic's is named.
    assert prompts[2] == [
        {"role": "system", "content": "You write verse."},
        {"role": "user", "content": "A poem about rain, please."},
        {"role": "assistant", "content": "Hello, world."},
        {"role": "user", "content": "Critic: Hello, world."},
    ]


def test_a_mention_reaches_only_the_agents_named_in_order(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(owner=user, agents=[poet, critic])
    sent, first = services.message_send(session=session, content="@critic what do you think?")
    assert [m.agent.slug for m in run_chain(sent)] == ["critic"]
    sent, _ = services.message_send(session=session, content="@critic first, then @poet. And @nobody.")
    assert [m.agent.slug for m in run_chain(sent)] == ["critic", "poet"]
    sent, _ = services.message_send(session=session, content="No mention: the default answers.")
    assert [m.agent.slug for m in run_chain(sent)] == ["poet"]
    assert first.turn == 1


def test_a_debate_alternates_then_the_judge_speaks(user: Any, poet: Agent, critic: Agent, judge: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[judge, poet, critic], turn_policy={"kind": "debate", "rounds": 2, "judge": "judge"}
    )
    sent, _ = services.message_send(session=session, content="Is rain better than snow?")
    assert [m.agent.slug for m in run_chain(sent)] == ["poet", "critic", "poet", "critic", "judge"]


def test_one_stop_ends_the_whole_chain(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 2}
    )
    sent, first = services.message_send(session=session, content="Go.")
    reply_generate(message_id=first.pk)
    second = Message.objects.get(reply_to=sent, turn=2)
    assert second.status == "queued"
    assert services.reply_stop(session=session) == [second.pk]
    second.refresh_from_db()
    assert second.status == "cancelled"
    assert run_chain(sent) and Message.objects.filter(reply_to=sent).count() == 2


def test_a_reply_ending_as_stop_is_pressed_starts_no_next_turn(user: Any, poet: Agent, critic: Agent) -> None:
    """The stop lands while the first turn is streaming and the reply still ends complete (its
    last token was out): the chain is marked stopped, so no next turn starts."""
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 1}
    )
    sent, first = services.message_send(session=session, content="Go.")

    def stop_at_last_chunk(index: int) -> None:
        if index == len(FakeBackend.script) - 1:
            services.reply_stop(session=Session.objects.get(pk=session.pk))
            # The worker does not see the flag in time: the reply is stored complete.
            Message.objects.filter(pk=first.pk).update(cancel_requested=False)

    FakeBackend.on_chunk = stop_at_last_chunk
    reply_generate(message_id=first.pk)
    first.refresh_from_db()
    assert first.status == "complete"
    assert Message.objects.filter(reply_to=sent).count() == 1
    assert turn_next(reply_id=first.pk) is None


def test_a_failed_turn_ends_the_chain(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 2}
    )
    sent, _ = services.message_send(session=session, content="Go.")
    FakeBackend.fail_with = RuntimeError("engine crashed")
    chain = run_chain(sent)
    assert [(m.agent.slug, m.status) for m in chain] == [("poet", "failed")]


def test_regenerate_runs_the_chain_again_from_its_first_speaker(user: Any, poet: Agent, critic: Agent) -> None:
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 1}
    )
    sent, _ = services.message_send(session=session, content="Go.")
    run_chain(sent)
    reply = services.reply_regenerate(session=session)
    assert reply.agent == poet
    assert [m.agent.slug for m in run_chain(sent)] == ["poet", "critic"]


@pytest.mark.django_db(transaction=True)
def test_in_the_embedded_default_the_reply_task_queues_each_next_turn(
    settings: Any, user: Any, poet: Agent, critic: Agent
) -> None:
    """The chain goes on in-process too: the embedded pool runs the reply task, not the reply alone."""
    settings.EMBEDDED = True
    session = services.session_create(
        owner=user, agents=[poet, critic], turn_policy={"kind": "round_robin", "rounds": 1}
    )
    sent, _ = services.message_send(session=session, content="Go.")
    deadline = time.monotonic() + 60
    chain: list[tuple[str, str]] = []
    while time.monotonic() < deadline and chain != [("poet", "complete"), ("critic", "complete")]:
        time.sleep(0.1)
        chain = list(Message.objects.filter(reply_to=sent).order_by("pk").values_list("agent__slug", "status"))
    assert chain == [("poet", "complete"), ("critic", "complete")]


# --- the REST door ----------------------------------------------------------------------------


def test_sessions_are_created_and_changed_with_agents_and_a_policy(api: APIClient, poet: Agent, critic: Agent) -> None:
    body = {"agents": ["poet", "critic"], "turn_policy": {"kind": "round_robin", "rounds": 2}}
    response = api.post("/api/sessions/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["agent"] == "poet" and created["agents"] == ["poet", "critic"]
    assert created["turn_policy"] == {"kind": "round_robin", "rounds": 2}
    response = api.patch(
        f"/api/sessions/{created['id']}/", {"agents": ["critic", "poet"], "turn_policy": {"kind": "manual"}}, "json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["agents"] == ["critic", "poet"] and response.json()["agent"] == "critic"
    assert api.get(f"/api/sessions/{created['id']}/").json()["turn_policy"] == {"kind": "manual"}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"agents": ["poet", "ghost"]}, "agents", "ghost"),
        ({"agents": ["poet", "poet"]}, "agents", "once"),
        ({"agents": ["poet"], "turn_policy": {"kind": "chaos"}}, "turn_policy", "kinds"),
        ({"agents": ["poet"], "turn_policy": {"kind": "round_robin", "rounds": 0}}, "turn_policy.rounds", "1"),
        (
            {"agents": ["poet", "critic"], "turn_policy": {"kind": "round_robin", "rounds": 7}},
            "turn_policy.rounds",
            "12",
        ),
        (
            {"agents": ["poet", "critic"], "turn_policy": {"kind": "debate", "judge": "nobody"}},
            "turn_policy.judge",
            "nobody",
        ),
        ({"agents": ["poet", "critic"], "turn_policy": {"kind": "debate", "judge": "poet"}}, "turn_policy", "two"),
        ({"agents": ["poet"], "turn_policy": {"kind": "manual", "extra": 1}}, "turn_policy.extra", "xtra"),
    ],
)
def test_a_bad_participant_list_or_policy_answers_400_naming_the_field(
    api: APIClient, poet: Agent, critic: Agent, body: dict[str, Any], field: str, words: str
) -> None:
    before = Session.objects.count()
    response = api.post("/api/sessions/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert words in response.json()["message"]
    assert Session.objects.count() == before


def test_another_users_session_cannot_be_changed(api: APIClient, other_api: APIClient, poet: Agent) -> None:
    created = api.post("/api/sessions/", {"agents": ["poet"]}, format="json").json()
    response = other_api.patch(f"/api/sessions/{created['id']}/", {"turn_policy": {"kind": "manual"}}, "json")
    assert response.status_code == 404


# --- the supervisor --------------------------------------------------------------------------


def supervisor_says(*picks: str) -> list[list[dict[str, str]]]:
    """The supervisor answers ``picks`` in turn; every other agent says "Hello, world."."""
    asked: list[list[dict[str, str]]] = []
    left = list(picks)

    def answer(messages: list[dict[str, str]]) -> str:
        if "Reply with exactly one word" in messages[0]["content"]:
            asked.append(messages)
            return left.pop(0) if left else "END"
        return "Hello, world."

    FakeBackend.answer = answer
    return asked


def run_supervised(user_message: Message, limit: int = 20) -> list[Message]:
    """What the workers do under a supervisor: a pick, the picked reply, a pick, ..."""
    for _ in range(limit):
        turn_choose(user_message_id=user_message.pk)
        queued = Message.objects.filter(reply_to=user_message, status=Message.Status.QUEUED).first()
        if queued is None:
            break
        reply_generate(message_id=queued.pk)
    return list(Message.objects.filter(reply_to=user_message).order_by("pk").select_related("agent"))


@pytest.fixture
def supervised(user: Any, poet: Agent, critic: Agent, judge: Agent) -> Session:
    return services.session_create(
        owner=user,
        agents=[judge, poet, critic],
        turn_policy={"kind": "supervisor", "supervisor": "judge", "max_turns": 3},
    )


def test_the_supervisor_picks_each_speaker_until_it_ends_the_round(supervised: Session) -> None:
    asked = supervisor_says("critic", "[poet]", "END")
    sent, reply = services.message_send(session=supervised, content="Rain or snow?")
    assert reply is None  # the supervisor picks the first speaker, on its worker
    chain = run_supervised(sent)
    assert [(m.role, m.agent.slug if m.agent else None, m.turn) for m in chain] == [
        ("assistant", "critic", 1),
        ("assistant", "poet", 2),
    ]
    # It was shown who it may pick and, later, the turns so far by name.
    assert "- Poet [poet]" in asked[0][0]["content"] and "- Critic [critic]" in asked[0][0]["content"]
    assert "[judge]" not in asked[0][0]["content"]
    assert asked[1][-1] == {"role": "user", "content": "Rain or snow?\n\nCritic: Hello, world."}


def test_a_bad_pick_ends_the_round_with_a_visible_note(supervised: Session) -> None:
    supervisor_says("poet, then the critic")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    chain = run_supervised(sent)
    assert [m.role for m in chain] == ["system"]
    assert "names no participant" in chain[0].content and "poet, then the critic" in chain[0].content


def test_the_supervisor_is_capped_at_max_turns(supervised: Session) -> None:
    asked = supervisor_says(*["poet"] * 10)
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    chain = run_supervised(sent)
    assert [m.agent.slug for m in chain] == ["poet", "poet", "poet"]
    assert len(asked) == 3  # no pick is asked for past the cap


def test_a_stop_ends_a_supervised_round(supervised: Session) -> None:
    supervisor_says("critic", "poet")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    turn_choose(user_message_id=sent.pk)
    queued = Message.objects.get(reply_to=sent, status=Message.Status.QUEUED)
    services.reply_stop(session=supervised)
    assert turn_choose(user_message_id=sent.pk) is None
    assert list(Message.objects.filter(reply_to=sent).values_list("pk", "status")) == [(queued.pk, "cancelled")]


def test_a_supervisor_must_be_a_participant(api: APIClient, poet: Agent, critic: Agent) -> None:
    body = {"agents": ["poet", "critic"], "turn_policy": {"kind": "supervisor", "supervisor": "judge"}}
    response = api.post("/api/sessions/", body, format="json")
    assert response.status_code == 400 and "turn_policy.supervisor" in response.json()["errors"]


def test_a_round_ended_before_any_answer_says_so(supervised: Session) -> None:
    supervisor_says("END")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    chain = run_supervised(sent)
    assert [(m.role, m.content) for m in chain] == [
        ("system", "The supervisor Judge ended the round before any agent answered.")
    ]
