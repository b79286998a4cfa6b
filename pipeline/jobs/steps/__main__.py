"""``python -m pipeline.jobs.steps <step> '<json params>'``: run one step in this process."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from inference.children import error_line
from pipeline.jobs.steps.protocol import StepError, result

# step name -> "module:function"; each function takes the params dict and returns the result dict.
STEPS: dict[str, str] = {
    "gguf_to_hf": "pipeline.jobs.steps.gguf:gguf_to_hf",
    "hf_to_gguf": "pipeline.jobs.steps.gguf:hf_to_gguf",
    "quantize_gguf": "pipeline.jobs.steps.gguf:quantize_gguf",
    "export_openvino": "pipeline.jobs.steps.openvino:export_openvino",
    "quantize_rtn": "pipeline.jobs.steps.rtn:quantize_rtn",
    "evaluate": "pipeline.jobs.steps.evaluate:evaluate",
    "gptq": "pipeline.jobs.steps.gptq:gptq",
    "synthesize": "pipeline.jobs.steps.synthesize:synthesize",
    "finetune_lora": "pipeline.jobs.steps.finetune:finetune_lora",
    "benchmark": "pipeline.jobs.steps.benchmark:benchmark",
}


def _shelve_broken_torchvision() -> None:
    """Treat a torchvision that cannot load (PyPI's CUDA build beside the CPU torch) as absent."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except Exception as exc:
        print(f"warning: ignoring torchvision, which cannot load here: {exc}", file=sys.stderr)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in STEPS:
        print(f"usage: python -m pipeline.jobs.steps {{{','.join(STEPS)}}} '<json params>'", file=sys.stderr)
        return 2
    step, raw = argv
    params: dict[str, Any] = json.loads(raw)
    module_name, func_name = STEPS[step].split(":")
    _shelve_broken_torchvision()
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        payload = func(params)
    except StepError as exc:
        print(error_line(str(exc)), file=sys.stderr, flush=True)
        return 3
    result(payload or {})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
