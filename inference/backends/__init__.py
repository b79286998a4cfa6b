"""Inference backends: one narrow interface (``base``), chosen by dotted path in
``INFERENCE_BACKENDS`` (``registry``). This package's own module imports nothing, so that job
steps in child processes can use a backend class without loading Django (``registry`` does)."""
