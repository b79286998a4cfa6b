"""The base of every backend's options schema.

A schema carries no engine imports, so the admin and the API validate an agent's options on a
machine that has none of the engines installed. Every field has a default, bounds and a
description, as llama-cpp-python's server settings do; the admin builds its form fields from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
