"""Benchmarks of an agent or a model artifact: the seeds' numbers, side by side with the raw engine.

``stats`` (one request's timings and a run's summary: vLLM's serving metrics and mnn-llm's prefill
and decode speed), ``workload`` (prompts of a given token length), ``doors`` (the clients: the
platform's ``/v1`` and websocket, an engine's own server, the engine in process), ``machine`` (what
the numbers were measured on, memory bandwidth included), ``report`` (JSON, CSV, pictures) and
``sweep`` (the whole run: every target at every concurrency).
"""
