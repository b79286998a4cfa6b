"""The interface every inference backend implements.

A backend wraps one loaded model. The worker creates it with the model's location and the
agent's validated options, calls ``load()`` once (heavy imports happen there), then
``stream_chat()`` for each reply, and ``close()`` when the model cache evicts it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from inference.constraints import Constraint


class BackendError(Exception):
    """A reply could not be generated. ``retryable`` says whether trying again can help.

    The message is what every user of the agent may read (a failed reply's ``error``): it never
    quotes the model server. ``detail`` holds what only an administrator should see (the server's
    address, its own error text); the worker logs it, and tracebacks show it as a note.
    """

    def __init__(self, message: str, *, retryable: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.detail = detail
        if detail:
            self.add_note(f"Details for administrators: {detail}")


class BackendUnavailable(BackendError):
    """The engine's package is not installed in this worker's environment."""


class ConstraintUnsupported(BackendError):
    """The backend cannot decode under this kind of constraint; said before anything is generated."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed reply. The last chunk carries ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: str | None = None  # "stop", "length", "cancelled"
    usage: Usage | None = None


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What the text must be (inference.constraints), decoded under the engine's own grammar.
    constraint: Constraint | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


ChatMessage = dict[str, str]  # {"role": ..., "content": ...}
StopFlag = Callable[[], bool]


@dataclass(frozen=True)
class ModelSpec:
    """What a backend is asked to load, whoever asks (an agent, a job, a benchmark).

    ``location`` is the artifact's path or URL ("" when the backend needs none); ``options`` are
    already validated against the backend's ``options_schema``.
    """

    location: str
    options: BaseModel
    api_key: str = ""
    context_window: int = 2048


class Backend(ABC):
    """Base class; subclasses set the capability flags and implement the abstract methods."""

    name: ClassVar[str]  # the value of Agent.backend, and the Celery queue of its workers
    label: ClassVar[str]  # what a person sees in the admin
    options_schema: ClassVar[type[BaseModel]]  # typed options: defaults, bounds, descriptions
    formats: ClassVar[frozenset[str]] = frozenset()  # ModelArtifact formats it runs
    # Capability flags.
    supports_stop: ClassVar[bool] = True  # stops mid-generation when should_stop() turns true
    supports_concurrent: ClassVar[bool] = False  # one loaded model serves many replies at once
    counts_tokens: ClassVar[bool] = True  # count_tokens() uses the model's own tokenizer
    reuses_kv_cache: ClassVar[bool] = False
    # The constraint kinds (inference.constraints.KINDS) its engine decodes under natively.
    constraints: ClassVar[frozenset[str]] = frozenset()
    # Whether the backend tells the model its tools itself (a server that takes OpenAI's ``tools``);
    # otherwise the worker adds the generic tool prompt (inference.constraints.tools_prompt).
    renders_tools: ClassVar[bool] = False

    def __init__(self, *, model_path: str, options: BaseModel, api_key: str = "") -> None:
        self.model_path = model_path
        self.options = options
        self.api_key = api_key

    @classmethod
    def constraint_check(cls, constraint: Constraint | None) -> None:
        """Raise ConstraintUnsupported, naming the backend, when it cannot honour ``constraint``."""
        if constraint is not None and constraint.kind not in cls.constraints:
            able = ", ".join(sorted(cls.constraints)) or "none"
            raise ConstraintUnsupported(
                f"The {cls.label} backend cannot constrain its output to {constraint.describe()} (it can: {able})."
            )

    @classmethod
    def needs_artifact(cls, options: BaseModel) -> bool:
        """Whether an agent with these options must name a ModelArtifact (False: a URL will do)."""
        return True

    @classmethod
    def outbound_urls(cls, options: BaseModel) -> dict[str, str]:
        """The URLs, by option name, a worker connects to for these options: saving an agent checks
        them against OUTBOUND_ALLOWED_HOSTS (``inference.outbound``)."""
        return {}

    @classmethod
    def load_kwargs(cls, spec: ModelSpec) -> dict[str, Any]:
        """The keyword arguments of ``__init__`` (and ``cache_key``) for this spec."""
        return {"model_path": spec.location, "options": spec.options, "api_key": spec.api_key}

    @classmethod
    def cache_key(cls, *, model_path: str, options: BaseModel, api_key: str = "") -> tuple[Any, ...]:
        """Identity of a loaded model in the per-process cache."""
        return (cls.name, model_path, options.model_dump_json(), api_key)

    @abstractmethod
    def load(self) -> None:
        """Import the engine and load the model. Raises BackendUnavailable when not installed."""

    @abstractmethod
    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        """Yield the reply as chunks; the last one has ``finish_reason`` and ``usage``.

        ``should_stop`` is polled between tokens; when it turns true the stream ends promptly
        with ``finish_reason="cancelled"``. ``session_key`` lets a backend keep per-conversation
        state (a KV cache) between turns.
        """

    @abstractmethod
    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the prompt for these messages takes, template included."""

    def chat_template(self) -> str:
        """The loaded model's chat template ("" when the engine cannot tell): how it reasons
        (``inference.reasoning``)."""
        return ""

    def context_length(self) -> int | None:
        """The loaded model's own context window, when the engine knows it."""
        return None

    def memory_bytes(self) -> int:
        """Approximate resident size, for the cache's memory bound; known before ``load()``."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model. Safe to call twice."""

    @classmethod
    def check(cls) -> CheckResult:
        """Whether this worker can run the backend at all (package importable, device present)."""
        return CheckResult(True, "ok")


def missing_package(package: str, extra: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"The {package} package is not installed in this worker's environment. "
        f"Install it with: pip install -e '.[{extra}]' (or run this agent on a worker that has it)."
    )
