"""OpenAPI additions: the token scheme, and the OpenAI-compatible ``/v1`` endpoints.

The ``/v1`` views are plain async Django views (they stream from daphne's event loop), which
drf-spectacular cannot see; a postprocessing hook describes them so the schema covers every
endpoint and schemathesis fuzzes them too.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "sessions_app.tokens.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: `Authorization: Bearer <token>` (or `Token <token>`).",
        }


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
_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "An agent's slug (GET /v1/models)."},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                    "content": {"type": "string"},
                },
            },
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "At most the agent's max_tokens."},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 8}]},
        "seed": {"type": "integer"},
        "n": {"type": "integer", "enum": [1]},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "repetition_penalty": {"type": "number", "minimum": 0.5, "maximum": 2},
        "store": {"type": "boolean", "description": "false: do not keep this call as a session."},
    },
}
_COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
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


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": "An error, in OpenAI's format.", "content": {"application/json": {"schema": _ERROR}}}
        for code in codes
    }


def add_openai_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"tokenAuth": []}, {"cookieAuth": []}]
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
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _COMPLETION_REQUEST}},
                    },
                    "responses": {
                        "200": {
                            "description": "The completion (or an event stream when stream=true).",
                            "content": {
                                "application/json": {"schema": _COMPLETION},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 404, 413, 429, 502),
                    },
                }
            },
        }
    )
    return result
