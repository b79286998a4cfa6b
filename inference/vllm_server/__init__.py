"""Supervise vLLM's OpenAI-compatible server as a child process of a worker.

A vllm worker hosts its engine this way rather than in-process: the engine's own processes,
memory and crashes stay out of the Celery worker, and every reply of the worker reaches it over
HTTP, where vLLM batches them. ``VLLMServer`` starts the server on a free loopback port with its
output in a log file, waits for ``/health``, restarts it when it has died, and stops its whole
process group (the API server and its engine-core process) on ``stop()``, at interpreter exit
and when a Celery worker shuts down.

Only the standard library here: the module is imported where vLLM is not installed.
"""

from inference.children import free_port
from inference.vllm_server.command import HOST, ServeSpec, cpu_kernel_gap, serve_command
from inference.vllm_server.health import health_ok, log_tail
from inference.vllm_server.processes import running_servers, stop_all
from inference.vllm_server.server import STARTUP_TIMEOUT, STOP_TIMEOUT, EngineStartError, VLLMServer

__all__ = [
    "HOST",
    "STARTUP_TIMEOUT",
    "STOP_TIMEOUT",
    "EngineStartError",
    "ServeSpec",
    "VLLMServer",
    "cpu_kernel_gap",
    "free_port",
    "health_ok",
    "log_tail",
    "running_servers",
    "serve_command",
    "stop_all",
]
