"""What goes wrong with a job, in a leaf module every job module may import.

- ``JobError``: a request about a job that cannot be done (bad params, a job already ended); the
  doors answer it as every ``PlatformError``, naming ``field``.
- ``JobFailed``: a running job failed with a message for the person who started it; the runner
  ends the job ``failed``.
- ``JobCancelled``: the job was cancelled (or taken from this worker) while it ran.
"""

from __future__ import annotations

from inference.errors import PlatformError


class JobError(PlatformError):
    """A request about a job that cannot be done; ``field`` names the parameter at fault."""


class JobFailed(Exception):
    """A job step failed with a message for the person who started it (the runner ends the job `failed`)."""


class JobCancelled(Exception):
    """The job was cancelled, or the row stopped being this worker's, while it ran."""
