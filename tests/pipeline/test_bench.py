"""The benchmark's arithmetic and files (synthetic timings: the definitions, not the machine), its
job parameters, and the llama.cpp runtime's choices."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench import stats, workload
from pipeline.bench.report import report_print, report_write
from pipeline.bench.stats import RequestResult, comparisons, run_summary
from pipeline.jobs.services import JobError, job_params_validate

pytestmark = pytest.mark.usefixtures("no_dispatch")


def request(start: float, first: float, gaps: list[float], *, prompt: int = 100, ok: bool = True) -> RequestResult:
    r = RequestResult(start=start, prompt_tokens=prompt)
    now = first
    r.piece(now, "a")
    for gap in gaps:
        now += gap
        r.piece(now, "b")
    r.end, r.ok, r.output_tokens = now + 0.001, ok, 1 + len(gaps)
    return r


def test_one_request_follows_the_seeds_definitions() -> None:
    r = request(10.0, 10.5, [0.1] * 10, prompt=200)
    assert r.ttft == pytest.approx(0.5)
    assert r.prefill_tps == pytest.approx(400)  # prompt tokens / TTFT
    assert r.decode_tps == pytest.approx(10)  # tokens after the first / time after the first
    assert r.itls == pytest.approx([0.1] * 10)
    assert r.tpot == pytest.approx((r.e2e - 0.5) / 10)


def test_a_door_that_batches_shows_long_gaps_and_the_same_decode_speed() -> None:
    token_by_token = request(0, 0.5, [0.02] * 20)
    batched = request(0, 0.5, [0.1] * 4)  # the same 20 tokens after the first, in 4 bursts of 5
    batched.output_tokens = 21
    assert batched.decode_tps == pytest.approx(token_by_token.decode_tps)
    assert run_summary(target="v1", label="x", concurrency=1, results=[batched], duration=1)["itl_ms"]["p50"] == 100


def test_a_run_reports_throughput_percentiles_and_failures() -> None:
    results = [request(i, i + 0.2 + i / 100, [0.05] * 9) for i in range(9)]
    results.append(RequestResult(start=0, end=1, error="APIConnectionError: refused"))
    run = run_summary(target="raw_server", label="server", concurrency=4, results=results, duration=20.0)
    assert (run["requests"], run["completed"], run["failed"]) == (10, 9, 1)
    assert run["request_throughput"] == pytest.approx(9 / 20)
    assert run["output_tps"] == pytest.approx(90 / 20)
    assert run["total_tps"] == pytest.approx((900 + 90) / 20)
    assert run["ttft_ms"]["p50"] == pytest.approx(240)
    assert run["ttft_ms"]["p99"] == pytest.approx(279.2)
    assert run["errors"] == ["APIConnectionError: refused"]
    assert len(run["ttft_ms_all"]) == 9


def _run(target: str, concurrency: int, ttft: float, gap: float) -> dict[str, Any]:
    results = [request(0, ttft, [gap] * 9) for _ in range(3)]
    return run_summary(target=target, label=target, concurrency=concurrency, results=results, duration=3.0)


def test_doors_are_compared_with_the_raw_server_and_the_targets_marked() -> None:
    runs = [_run("raw_inprocess", 1, 0.090, 0.100), _run("raw_server", 1, 0.100, 0.100),
            _run("v1", 1, 0.110, 0.100), _run("websocket", 1, 0.140, 0.110),
            _run("raw_server", 16, 0.5, 0.02), _run("v1", 16, 0.5, 0.022)]  # fmt: skip
    by = {(c["door"], c["concurrency"]): c for c in comparisons(runs)}
    v1 = by[("v1", 1)]
    assert v1["raw"] == "raw_server" and v1["ttft_added_ms_p50"] == pytest.approx(10)
    assert v1["met"] == {"ttft_added_ms_p50": True, "decode_ratio": True, "e2e_tps_ratio": True}
    ws = by[("websocket", 1)]
    assert ws["met"]["ttft_added_ms_p50"] is False and ws["met"]["decode_ratio"] is False
    assert by[("v1", 16)]["targets"] == {"output_tps_ratio": 0.95}
    # Without its own server, a door is compared with the engine in process.
    only_inprocess = [_run("raw_inprocess", 1, 0.09, 0.01), _run("v1", 1, 0.1, 0.01)]
    assert comparisons(only_inprocess)[0]["raw"] == "raw_inprocess"


def test_prompts_have_the_asked_length_and_differ_from_the_start() -> None:
    words = workload.prompts_make(5, 300)
    for prompt in words:
        assert 280 <= workload.estimate_tokens(prompt) <= 300
    assert len({p[:20] for p in words}) == 5  # no shared prefix for an engine's cache to skip
    others = workload.prompts_make(5, 300, first=5)  # another target's: none the same
    assert not set(others) & set(words)
    by_chars = workload.prompt_make(0, 1000, count=len)  # any tokenizer: here one token a character
    assert 990 <= len(by_chars) <= 1000


def _result(tmp: Path) -> dict[str, Any]:
    runs = [_run("raw_server", 1, 0.1, 0.01), _run("v1", 1, 0.11, 0.01), _run("raw_server", 4, 0.3, 0.02),
            _run("v1", 4, 0.31, 0.02)]  # fmt: skip
    runs[1]["label"] = "<script>x</script>"
    return {"version": 1, "machine": {"cpu": "test cpu", "cores": 2, "isa": ["avx2"], "memory_bandwidth_gbs": 9.9},
            "params": {"input_tokens": 100, "output_tokens": 10, "concurrency": [1, 4]},
            "model": {"name": "m"}, "runs": runs, "comparisons": comparisons(runs), "external": []}  # fmt: skip


def test_the_report_files_hold_every_run(tmp_path: Path) -> None:
    result = _result(tmp_path)
    files = report_write(result, tmp_path)
    assert files == ["bench.json", "bench.csv", "throughput.png", "ttft.png"]
    assert json.loads((tmp_path / "bench.json").read_text())["runs"][2]["concurrency"] == 4
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert [(r["target"], r["concurrency"]) for r in rows] == [("raw_server", "1"), ("v1", "1"), ("raw_server", "4"),
                                                               ("v1", "4")]  # fmt: skip
    assert float(rows[1]["ttft_ms.p50"]) == pytest.approx(110)
    for picture in ("throughput.png", "ttft.png"):
        assert (tmp_path / picture).read_bytes().startswith(b"\x89PNG")
    lines: list[str] = []
    report_print(result, lines.append)
    assert any("v1 vs raw_server at 1: TTFT +10.0 ms" in line for line in lines), lines


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"source": 1, "concurrency": [0]}, "params.concurrency", "1 to 256"),
        ({"source": 1, "concurrency": []}, "params.concurrency", "at least 1"),
        ({"source": 1, "compare_raw": False}, "params", "nothing to measure"),
        ({"source": 1, "doors": ["smoke-signals"]}, "params.doors.0", "'v1' or 'websocket'"),
        ({"source": 1, "input_tokens": 4}, "params.input_tokens", "greater than or equal to 8"),
        ({}, "params.agent", "give an agent or a source artifact"),
        ({"agent": "no-such-agent"}, "params.agent", "no agent 'no-such-agent'"),
    ],
)
def test_bad_benchmark_params_name_the_field(params: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(JobError) as caught:
        job_params_validate("benchmark", params)
    assert caught.value.field == field and message in caught.value.message, caught.value.message


@pytest.mark.django_db
def test_an_agent_benchmark_measures_the_agents_model(django_user_model: Any, tmp_path: Path) -> None:
    from agents.models import Agent
    from inference.models import ModelArtifact

    model = ModelArtifact.objects.create(name="m", format="gguf", path=str(tmp_path / "m.gguf"))
    agent = Agent.objects.create(name="Bench", slug="bench", backend="llama_cpp", model=model)
    user = django_user_model.objects.create(username="u")
    parsed, source = job_params_validate("benchmark", {"agent": "bench"}, user=user)
    assert source.pk == agent.model_id and parsed.concurrency == [1, 4, 16]
    assert (parsed.requests, parsed.input_tokens, parsed.output_tokens) == (16, 1000, 128)


def test_the_targets_are_the_issues() -> None:
    assert stats.TARGETS_SINGLE == {"ttft_added_ms_p50": 15.0, "decode_ratio": 0.98, "e2e_tps_ratio": 0.98}
    assert stats.TARGETS_LOADED == {"output_tps_ratio": 0.95} and stats.LOADED_FROM == 16


def test_one_client_alternates_the_targets_prompt_by_prompt() -> None:
    import asyncio

    from pipeline.bench.doors import Door, Sampling
    from pipeline.bench.sweep import _interleaved

    order: list[str] = []

    class Clock(Door):
        async def request(self, prompt: str) -> RequestResult:
            order.append(f"{self.target}:{prompt}")
            return request(0.0, 0.1, [0.01] * 3)

    doors = [Clock(target=name, label=name, sampling=Sampling(max_tokens=4)) for name in ("a", "b", "c")]
    measured = asyncio.run(_interleaved(doors, {name: ["p1", "p2", "p3"] for name in ("a", "b", "c")}))
    assert order == ["a:p1", "b:p1", "c:p1", "b:p2", "c:p2", "a:p2", "c:p3", "a:p3", "b:p3"]
    results, busy = measured["b"]
    assert len(results) == 3 and busy == pytest.approx(3 * results[0].e2e)


def test_a_vllm_engine_is_left_to_settle_before_the_next_engine_is_measured() -> None:
    """A vLLM worker busy-loops for a second after answering: a request to the other engine waits
    that out, one to the same engine does not."""
    import asyncio
    import time

    from pipeline.bench.doors import Door, Sampling
    from pipeline.bench.raw import RAW_ENGINES
    from pipeline.bench.sweep import _interleaved

    gaps: list[tuple[str, float]] = []
    last = [time.monotonic()]

    class Clock(Door):
        async def request(self, prompt: str) -> RequestResult:
            now = time.monotonic()
            gaps.append((self.target, now - last[0]))
            last[0] = now
            return request(0.0, 0.1, [0.01] * 3)

    settle = RAW_ENGINES["vllm"].settle_seconds
    assert settle > 1.0 and RAW_ENGINES["llama_cpp"].settle_seconds == 0
    doors = [Clock(target=name, label=name, sampling=Sampling(max_tokens=4)) for name in ("raw_server", "v1")]
    asyncio.run(_interleaved(doors, {name: ["p1", "p2"] for name in ("raw_server", "v1")}, settle))
    # raw:p1, v1:p1 (another engine: waits), v1:p2 (the same: at once), raw:p2 (waits)
    assert [target for target, _ in gaps] == ["raw_server", "v1", "v1", "raw_server"]
    assert [gap >= settle for _, gap in gaps[1:]] == [True, False, True]


def test_a_vllm_agents_raw_side_is_vllms_own_server_with_the_agents_engine_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import contextlib

    from pipeline.bench import raw as sweep

    started: list[list[str]] = []

    @contextlib.contextmanager
    def fake_server(argv: list[str], *, health: str, log: Path, timeout: float = 120, env: Any = None) -> Any:
        started.append(argv)
        assert env is not None and env["VLLM_CPU_INT4_W4A8"] == "0"  # as quantized, as the agent's engine
        yield None

    monkeypatch.setattr(sweep, "server_process", fake_server)
    monkeypatch.setattr(sweep, "vllm_serve_prefix", lambda: ["/venv-vllm/bin/python", "-m", "vllm.server"])
    options = {"mode": "hosted", "dtype": "bfloat16", "max_model_len": 2048, "gpu_memory_utilization": 0.3}
    with sweep.vllm_server(str(tmp_path), options=options, log=tmp_path / "log") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    argv = started[0]
    assert argv[:3] == ["/venv-vllm/bin/python", "-m", "vllm.server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--model"] == str(tmp_path) and flags["--dtype"] == "bfloat16"
    assert flags["--max-model-len"] == "2048" and flags["--gpu-memory-utilization"] == "0.3"

    monkeypatch.setattr(sweep, "vllm_serve_prefix", lambda: None)
    with (
        pytest.raises(RuntimeError, match="make vllm-venv"),
        sweep.vllm_server(str(tmp_path), options={}, log=tmp_path),
    ):
        pass


def test_a_backend_brings_its_raw_engine_as_one_class(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The sweep names no backend: it asks RAW_ENGINES for the agent's backend's references."""
    from pipeline.bench.raw import RAW_ENGINES, RawEngine
    from pipeline.bench.sweep import Spec, benchmark_run

    asked: list[str] = []

    class MineRaw(RawEngine):
        backend = "mine"

        def targets(self, stack: Any, doors: list[Any]) -> Any:
            asked.append(self.path)
            raise RuntimeError("the engine was asked for its targets")

    monkeypatch.setitem(RAW_ENGINES, "mine", MineRaw)
    assert {"llama_cpp", "openvino", "vllm"} <= set(RAW_ENGINES)
    spec = Spec(concurrency=[1], requests=1, input_tokens=8, output_tokens=4, model={"backend": "mine", "path": "/m"})
    with pytest.raises(RuntimeError, match="asked for its targets"):
        benchmark_run(spec, workdir=tmp_path)
    assert asked == ["/m"]
    spec.model["backend"] = "unknown"
    with pytest.raises(ValueError, match="nothing to measure"):
        benchmark_run(spec, workdir=tmp_path)
