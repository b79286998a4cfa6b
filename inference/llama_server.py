"""llama-cpp-python's own OpenAI-compatible server, with llama.cpp's CPU kernels loaded first.

``python -m inference.llama_server --model X.gguf ...`` takes ``llama_cpp.server``'s options: the
raw-engine reference of the benchmarks and tests. llama.cpp built with loadable CPU variants
finds none on its own from a Python package (see ``inference.llama_runtime``).
"""

from __future__ import annotations

from inference.llama_runtime import cpu_backend_load


def main() -> None:
    cpu_backend_load()
    from llama_cpp.server.__main__ import main as server_main

    server_main()


if __name__ == "__main__":
    main()
