"""The child side of every step: ``python -m pipeline.convert <step> <args>``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inference.children import result_line
from pipeline.convert.hf import child_gguf_to_hf
from pipeline.convert.openvino_ir import child_convert_tokenizer, child_verify_ir


def _shelve_broken_torchvision() -> None:
    """Treat a torchvision that cannot load as not installed.

    transformers imports torchvision whenever it is installed, and one built for another torch
    (PyPI's CUDA wheel beside the CPU torch) fails with "operator torchvision::nms does not
    exist", which breaks every transformers import. Text models never use it.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except Exception as exc:  # RuntimeError / OSError from its compiled operators
        print(f"warning: ignoring torchvision, which cannot load here: {exc}", file=sys.stderr)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # makes find_spec say "absent"


def _main(argv: list[str]) -> int:
    step, *args = argv
    result: dict[str, Any]
    if step in ("gguf-to-hf", "tokenizer", "optimum-cli"):
        _shelve_broken_torchvision()
    if step == "optimum-cli":
        from optimum.commands.optimum_cli import main as optimum_main

        sys.argv = ["optimum-cli", *args]
        optimum_main()
        return 0
    if step == "gguf-to-hf":
        result = child_gguf_to_hf(Path(args[0]), Path(args[1]))
    elif step == "tokenizer":
        result = child_convert_tokenizer(Path(args[0]), Path(args[1]))
    elif step == "verify-ir":
        result = child_verify_ir(Path(args[0]), int(args[1]) if len(args) > 1 else None)
    else:
        print(f"unknown step {step!r}", file=sys.stderr)
        return 2
    print(result_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
