"""The installed llama-cpp-python as its users know it: ``llama_cpp.Llama(...)`` and
``python -m llama_cpp.server`` work in the project's environment, from any directory.

Our llama.cpp build keeps its CPU kernels as loadable variants (``inference.llama_runtime``), and
ggml's own loader looks for them next to the Python executable and in the working directory, not
where the wheel puts them; so a plain ``import llama_cpp`` found no backend ("no backends are
loaded") and every model failed to load. ``make install`` writes one line into the environment's
``site-packages`` (``chatsite-llama.pth``) that calls ``install()`` at interpreter start: it adds a
finder that, once ``llama_cpp`` has been imported (by anyone), loads the best variant for this
CPU (``cpu_backend_load``). Nothing is loaded in a process that never imports ``llama_cpp``, and
the start-up cost is this module's import (well under a millisecond).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself is not imported: it is not loaded at start-up
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# Imports here are kept to what every interpreter has loaded already: this module is imported
# at the start of every Python process in the environment.

PTH_NAME = "chatsite-llama.pth"
# The line ``make install`` writes: never an error at start-up, even with the project removed.
PTH_LINE = "import sys; exec('try:\\n import inference.llama_autoload as m; m.install()\\nexcept Exception: pass')\n"


class _LoadVariantsAfterImport:
    """A ``sys.meta_path`` finder: finds ``llama_cpp`` as the other finders do, and loads the CPU
    variants once the module has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None, /
    ) -> ModuleSpec | None:
        if fullname != "llama_cpp":
            return None
        import importlib.util

        sys.meta_path.remove(self)  # once, and out of the way of the real search
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            try:
                from inference.llama_runtime import cpu_backend_load

                cpu_backend_load()
            except Exception as exc:  # the import itself must not fail for it
                import warnings

                warnings.warn(f"llama.cpp's CPU kernels were not loaded: {exc}", RuntimeWarning, stacklevel=2)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Load the CPU variants whenever ``llama_cpp`` is first imported in this process."""
    if "llama_cpp" in sys.modules or any(isinstance(f, _LoadVariantsAfterImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _LoadVariantsAfterImport())


def pth_write(site_packages: str) -> str:
    """Write the start-up line into ``site_packages`` (``make install`` does); returns its path."""
    from pathlib import Path

    path = Path(site_packages) / PTH_NAME
    path.write_text(PTH_LINE)
    return str(path)
