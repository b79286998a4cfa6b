"""The child side of the jobs: ``python -m pipeline.jobs.steps <step> '<json params>'``.

Each step runs in a child process that the job runner starts in its own process group (so a
cancel can end a blocking native call) and reads line by line. The protocol
(``inference.children``), on stdout:

- ``CHATSITE_PROGRESS {"progress": 0-100, "stage": "..."}``: how far the step is;
- ``CHATSITE_RESULT {...}``: the step's result, printed once at the end;
- ``error: <why>`` (stderr): why the step failed, shown as the job's error;
- every other line (stdout or stderr) goes to the job's log.

This package imports only the standard library (and ``inference.children``, standard library
only) at module level; each step imports its heavy libraries inside its function, and nothing
here imports Django. A step may run in another of the project's environments (``.venv-gptq``
for GPTQ), where only the project's folder is on the path, not its dependencies.
"""
