"""The ``/v1`` endpoints in the OpenAPI document.

The ``/v1`` views are plain async Django views (they stream from daphne's event loop), which
drf-spectacular cannot see; this postprocessing hook describes them so the schema covers every
endpoint and schemathesis fuzzes them too. The request body's schema is the one pydantic gives
for ``ChatCompletionRequest``, the model that validates it, turned from JSON Schema into the
OpenAPI 3.0 dialect drf-spectacular writes.
"""

from __future__ import annotations

from typing import Any

from sessions_app.openai.request import ChatCompletionRequest

REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type"],
        }
    },
}
_MODEL = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["model"]},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
    "required": ["id", "object"],
}
_TOOL_CALL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            "required": ["name", "arguments"],
        },
    },
    "required": ["id", "type", "function"],
}
# An extension: a call the platform ran for the agent's own tools (sessions_app.openai.tool_stream).
_EXECUTED_TOOL_CALL = {
    "type": "object",
    "description": "A call the platform ran with the agent's own tools; the client has nothing to run.",
    "properties": {
        **_TOOL_CALL["properties"],
        "function": {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "description": 'The tool as the agent lists it ("calculator", "<server>.<tool>").',
                },
                "arguments": {"type": "string", "description": "The arguments as JSON text."},
            },
            "required": ["name", "arguments"],
        },
        "status": {"type": "string", "enum": ["ok", "error", "cancelled"]},
        "result": {"type": "string", "description": "The tool's output; empty on an error."},
        "error": {"type": "string", "description": "Why the call failed; empty when ok."},
        "duration_ms": {"type": "integer"},
    },
    "required": ["id", "type", "function", "status", "result", "error", "duration_ms"],
}
_CHOICE = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "message": {
            "type": "object",
            "properties": {
                "role": {"type": "string", "enum": ["assistant"]},
                "content": {"type": "string", "nullable": True},
                "refusal": {"type": "string", "nullable": True},
                "reasoning_content": {"type": "string", "description": "A reasoning model's thinking."},
                "tool_calls": {
                    "type": "array",
                    "items": _TOOL_CALL,
                    "description": "Calls of the request's tools, for the client to run (finish_reason tool_calls).",
                },
                "executed_tool_calls": {
                    "type": "array",
                    "items": _EXECUTED_TOOL_CALL,
                    "description": "Extension: the calls the platform ran with the agent's own tools before "
                    "this answer, in order; absent when none ran. Streamed, each is one chunk's "
                    "delta.executed_tool_calls (with its index) as it ends.",
                },
            },
            "required": ["role", "content"],
        },
        "finish_reason": {"type": "string", "enum": ["stop", "length", "tool_calls"]},
    },
}
_COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": _CHOICE},
        "usage": {
            "type": "object",
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "completion_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}


def openapi_30(schema: Any) -> Any:
    """A pydantic (JSON Schema 2020-12) schema in OpenAPI 3.0's dialect: ``{"type": "null"}`` in an
    ``anyOf`` becomes ``nullable``, and ``const`` a one-value ``enum``."""
    if isinstance(schema, list):
        return [openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: openapi_30(value) for key, value in schema.items()}
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    members = schema.get("anyOf")
    if members and {"type": "null"} in members:
        members = [member for member in members if member != {"type": "null"}]
        del schema["anyOf"]
        schema["nullable"] = True
        if len(members) > 1:
            schema["anyOf"] = members
        elif "$ref" in members[0]:
            schema["allOf"] = members  # beside a $ref, 3.0 ignores every other key
        else:
            schema = {**members[0], **schema}
    return schema


def request_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat completion request's schema (a reference) and the components it refers to."""
    schema = ChatCompletionRequest.model_json_schema(ref_template=REF)
    components = {name: openapi_30(part) for name, part in schema.pop("$defs", {}).items()}
    components[ChatCompletionRequest.__name__] = openapi_30(schema)
    return {"$ref": REF.format(model=ChatCompletionRequest.__name__)}, components


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": "An error, in OpenAI's format.", "content": {"application/json": {"schema": _ERROR}}}
        for code in codes
    }


def add_openai_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"tokenAuth": []}, {"cookieAuth": []}]
    body, components = request_schemas()
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    clashes = {name for name in components if name in schemas}
    if clashes:
        raise ValueError(f"The /v1 schemas {sorted(clashes)} have the names of REST API schemas.")
    schemas.update(components)
    result.setdefault("paths", {}).update(
        {
            "/v1/models": {
                "get": {
                    "operationId": "v1_models_list",
                    "summary": "Agents the caller may use, as OpenAI models (id = the agent's slug).",
                    "tags": ["v1"],
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "A list of models.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "object": {"type": "string"},
                                            "data": {"type": "array", "items": _MODEL},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(401, 429),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "operationId": "v1_models_retrieve",
                    "tags": ["v1"],
                    "security": security,
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "One model.", "content": {"application/json": {"schema": _MODEL}}},
                        **_errors(401, 404, 429),
                    },
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "operationId": "v1_chat_completions_create",
                    "summary": "A chat completion by an agent; with stream=true, server-sent events ending in [DONE].",
                    "tags": ["v1"],
                    "security": security,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                    "responses": {
                        "200": {
                            "description": "The completion (or an event stream when stream=true).",
                            "content": {
                                "application/json": {"schema": _COMPLETION},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 403, 404, 413, 429, 502),
                    },
                }
            },
        }
    )
    return result
