"""One refusal, three doors: a ``PlatformError`` becomes the REST body, OpenAI's error object on
``/v1`` and the session socket's ``error`` event, each mapped in one place; and the six error
classes the services raise are all of it, with the constructors their callers use."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from inference.backends.registry import OptionsError
from inference.errors import PlatformError
from pipeline.jobs.datasets import DatasetError
from pipeline.jobs.services import JobError
from sessions_app.openai.errors import CompletionError, error_response, openai_door
from sessions_app.policy import PolicyError
from sessions_app.services import ChatError
from sessions_app.ws_errors import error_event


def _rest(exc: Exception) -> Response:
    """What a DRF view of this project answers when a service raises ``exc``."""

    class Refusing(APIView):
        authentication_classes: list[type] = []
        permission_classes: list[type] = []
        throttle_classes: list[type] = []

        def get(self, request: Request) -> Response:
            raise exc

    response = Refusing.as_view()(APIRequestFactory().get("/api/anything/"))
    response.render()
    return response


def test_a_refusal_with_a_field_is_a_rest_400_naming_it() -> None:
    response = _rest(PlatformError("must be a whole number", code="invalid_bits", field="params.bits"))
    assert response.status_code == 400
    assert json.loads(response.content) == {
        "code": "invalid_bits",
        "message": "params.bits: must be a whole number",
        "field": "params.bits",
        "errors": {"params.bits": ["must be a whole number"]},
    }


def test_a_refusal_without_a_field_is_code_and_message_with_its_status() -> None:
    response = _rest(PlatformError("That job has ended.", code="job_ended", status=409))
    assert response.status_code == 409
    assert json.loads(response.content) == {"code": "job_ended", "message": "That job has ended."}


def test_a_message_that_names_its_field_is_not_prefixed_twice() -> None:
    body = PlatformError("params.top_p must be between 0 and 1.", code="invalid_params", field="params.top_p").payload()
    assert body["message"] == "params.top_p must be between 0 and 1."


def test_a_chat_error_about_a_missing_thing_is_a_rest_404() -> None:
    response = _rest(ChatError("not_found", "No such reply in this session."))
    assert response.status_code == 404
    assert json.loads(response.content) == {"code": "not_found", "message": "No such reply in this session."}


def test_a_refusal_on_v1_is_openais_error_object() -> None:
    response = error_response(ChatError("empty_content", "The message is empty."))
    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": {"message": "The message is empty.", "type": "invalid_request_error", "param": "content",
                  "code": "empty_content"}
    }  # fmt: skip


def test_a_server_side_refusal_on_v1_is_a_server_error_not_to_retry() -> None:
    response = error_response(PlatformError("The engine is away.", code="engine_away", status=503))
    assert json.loads(response.content)["error"]["type"] == "server_error"
    assert response["x-should-retry"] == "false"


def test_a_v1_view_that_raises_answers_with_the_error_object() -> None:
    @openai_door
    async def view(request: HttpRequest) -> HttpResponse:
        raise CompletionError("No such model.", code="model_not_found", param="model", status=404)

    response = async_to_sync(view)(HttpRequest())
    assert isinstance(response, JsonResponse) and response.status_code == 404
    error = json.loads(response.content)["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")


def test_a_refusal_on_the_websocket_is_an_error_event_with_the_services_words() -> None:
    event = error_event(ChatError("empty_content", "The message is empty."))
    assert event == {"type": "error", "code": "empty_content", "message": "The message is empty."}


@pytest.mark.parametrize(
    ("exc", "code", "field", "status"),
    [
        (ChatError("unknown_agent", "No agent 'x' that you may use."), "unknown_agent", "agent", 400),
        (PolicyError("turn_policy.judge", "The judge is not a participant."), "invalid_turn_policy",
         "turn_policy.judge", 400),
        (CompletionError("Too big.", code="request_too_large", status=413), "request_too_large", None, 413),
        (JobError("no such artifact", field="params.source"), "invalid", "params.source", 400),
        (DatasetError("not valid JSON", line=3), "invalid_dataset", None, 400),
        (OptionsError(["n_ctx: too small"]), "invalid_options", "backend_options", 400),
    ],
)  # fmt: skip
def test_every_services_error_class_is_a_platform_error(
    exc: PlatformError, code: str, field: str | None, status: int
) -> None:
    assert isinstance(exc, PlatformError)
    assert (exc.code, exc.field, exc.status) == (code, field, status)


def test_the_classes_keep_what_their_callers_read() -> None:
    dataset = DatasetError("not valid JSON", line=3)
    assert (str(dataset), dataset.message, dataset.payload()["line"]) == ("line 3: not valid JSON", "not valid JSON", 3)
    options = OptionsError(["a: bad", "b: worse"])
    assert isinstance(options, ValueError) and options.messages == ["a: bad", "b: worse"]
    assert CompletionError("x", code="invalid_value", param="top_p").param == "top_p"
