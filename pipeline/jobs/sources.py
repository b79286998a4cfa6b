"""A job's model from an agent: the kinds that measure or use an agent (benchmark, synthesize)
take its slug and get its model artifact, checked against what the user may use."""

from __future__ import annotations

from typing import Any

from agents.selectors import agent_for_job
from inference.models import ModelArtifact
from pipeline.jobs.errors import JobError


def agent_resolve(slug: str, user: Any, *, field: str = "params.agent") -> dict[str, Any]:
    """``{"source": artifact id, "temperature", "top_p", "system_prompt", "name", ...}`` of an agent."""
    try:
        return agent_for_job(slug, user)
    except LookupError as exc:
        raise JobError(str(exc.args[0]) if exc.args else f"no agent {slug!r}", field=field) from None


def agent_source(p: Any, user: Any, formats: tuple[str, ...], *, needs: str, missing: str) -> Any:
    """``p`` with ``source`` set to its ``agent``'s model artifact (or as given without an agent):
    the agent must be usable by ``user``, run a model in one of ``formats``, and agree with a
    ``source`` given too. ``needs`` ends the wrong-format message; ``missing`` is the error when
    neither is given."""
    if p.agent is None:
        if p.source is None:
            raise JobError(missing, field="params.agent")
        return p
    source = agent_resolve(p.agent, user).get("source")
    if source is None:
        raise JobError(f"agent {p.agent!r} has no model artifact", field="params.agent")
    if p.source is not None and p.source != source:
        raise JobError(f"agent {p.agent!r} runs artifact {source}, not {p.source}; leave source out",
                       field="params.source")  # fmt: skip
    artifact = ModelArtifact.objects.filter(pk=source).only("format").first()
    if artifact is not None and artifact.format not in formats:
        raise JobError(f"agent {p.agent!r} runs a {artifact.get_format_display()} model; {needs}", field="params.agent")
    return p.model_copy(update={"source": int(source)})
