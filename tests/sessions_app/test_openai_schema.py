"""The OpenAPI document describes ``/v1/chat/completions`` with the rules its validation applies."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator

from inference import generation


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    schemathesis.openapi.from_dict(document).validate()
    assert {"/v1/models", "/v1/models/{model}", "/v1/chat/completions"} <= set(document["paths"])


def test_the_request_body_is_the_validating_model_with_its_bounds(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    fields = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for name, bound in [("temperature", generation.TEMPERATURE), ("seed", generation.SEED)]:
        assert (fields[name]["minimum"], fields[name]["maximum"]) == (bound.low, bound.high)
    assert fields["stop"]["anyOf"][1]["maxItems"] == generation.MAX_STOP_STRINGS
    assert "functions" not in fields and "logprobs" not in fields  # refused, so not offered
    assert {"tools", "tool_choice", "parallel_tool_calls", "response_format"} <= set(fields)
    message = document["components"]["schemas"]["ChatCompletionMessage"]
    assert message["properties"]["role"]["enum"] == ["system", "developer", "user", "assistant", "tool"]
    assert {"tool_calls", "tool_call_id"} <= set(message["properties"])


def test_the_document_holds_no_json_schema_only_keywords(document: dict[str, Any]) -> None:
    nodes = list(_walk(document))
    assert not [n for n in nodes if n.get("type") == "null" or "$defs" in n or "const" in n]
    assert all(ref.startswith("#/components/") for n in nodes if isinstance(ref := n.get("$ref"), str))
