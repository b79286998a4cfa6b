"""The OpenAI-compatible door under ``/v1``: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``request`` validates a call (one pydantic model, which also gives the OpenAPI schema), ``services``
keeps it as a session and queues its reply, ``views`` are the async doors, ``stream`` answers in
OpenAI's shapes, ``errors`` holds OpenAI's error object and ``schema`` adds ``/v1`` to the OpenAPI
document.
"""
