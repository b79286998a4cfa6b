"""llama.cpp's CPU kernels and thread default (inference.llama_runtime), on the real wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inference import llama_runtime as rt

X86_AVX2_VARIANTS = {"haswell", "skylakex", "cannonlake", "cascadelake", "icelake", "cooperlake", "zen4",
                     "alderlake", "sapphirerapids"}  # fmt: skip


def test_the_wheel_carries_cpu_variants_and_the_best_this_cpu_runs_is_loaded() -> None:
    pytest.importorskip("llama_cpp")
    variant = rt.cpu_backend_load()
    shipped = {p.stem.removeprefix("libggml-cpu-") for p in rt.cpu_variants()}
    assert len(shipped) >= 8 and variant in shipped, (variant, shipped)
    if "avx2" in rt.cpu_flags():
        assert variant in X86_AVX2_VARIANTS  # not the plain x64 / SSE fallbacks
    if "avx512f" not in rt.cpu_flags():
        assert variant in ("haswell", "alderlake")  # nothing that would fault on this CPU
    assert rt.cpu_backend_load() == variant  # once per process


def test_the_amx_variant_is_never_loaded() -> None:
    # llama.cpp's AMX kernels die with SIGILL on their first tile instruction, even where the
    # kernel enables AMX: the best AVX-512 variant runs instead.
    assert not rt._allowed("sapphirerapids", {"avx512f", "avx2"})
    assert not rt._allowed("sapphirerapids", {"avx512f", "amx_tile", "amx_int8"})
    assert rt._allowed("icelake", set()) and rt._allowed("zen4", {"amx_tile"})


def test_physical_cores_count_each_core_once() -> None:
    assert 1 <= rt.physical_cores() <= len(rt.os.sched_getaffinity(0))
    assert rt._candidates()[0] == 1 and rt._candidates()[-1] <= rt.physical_cores()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(rt, "_threads", None)
    monkeypatch.delenv("LLAMA_THREADS", raising=False)
    cache = tmp_path / "threads.json"
    monkeypatch.setenv("LLAMA_THREADS_CACHE", str(cache))
    return cache


def test_the_thread_default_is_measured_once_and_kept(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    calls: list[int] = []

    def measure() -> dict[str, Any]:
        calls.append(1)
        return {"chosen": 2, "tokens_per_second": {"1": 50.0, "2": 88.0}, "variant": "haswell", "loadavg": 0.1,
                "others_cpus": 0.02, "round_spread": 0.03, "quiet": True}  # fmt: skip

    monkeypatch.setattr(rt, "threads_measure", measure)
    assert rt.threads_state()["source"] == "measured" and rt.default_threads() == 2
    monkeypatch.setattr(rt, "_threads", None)  # a new process on the same machine
    state = rt.threads_state()
    assert state["source"] == "measured (cached)" and state["chosen"] == 2 and calls == [1]
    assert list(json.loads(fresh.read_text()).values())[0]["tokens_per_second"] == {"1": 50.0, "2": 88.0}


def test_a_measurement_on_a_busy_machine_is_not_kept(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    busy = {"chosen": 1, "tokens_per_second": {"1": 36.3, "2": 3.0}, "variant": "haswell", "loadavg": 3.5,
            "others_cpus": 1.2, "round_spread": 0.02, "quiet": False}  # fmt: skip
    monkeypatch.setattr(rt, "threads_measure", lambda: dict(busy))
    state = rt.threads_state()
    assert state["chosen"] == 1 and state["source"] == "measured (machine busy: not kept)"
    assert not fresh.exists()  # the next process measures again
    # A load test that starts just before: the load average still looks quiet, the run did not.
    monkeypatch.setattr(rt, "_threads", None)
    monkeypatch.setattr(rt, "threads_measure", lambda: {**busy, "loadavg": 0.1})
    assert rt.threads_state()["source"] == "measured (machine busy: not kept)" and not fresh.exists()


def test_a_busy_neighbour_during_the_measurement_is_seen() -> None:
    """A CPU-bound process beside the measurement (as a load test) makes it untrusted."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        state = rt.threads_measure(candidates=[1])  # one thread: quick even on a loaded machine
    finally:
        burner.kill()
        burner.wait()
    assert state["others_cpus"] >= 0.5, state  # the burner's CPU was counted
    assert state["quiet"] is False


def test_an_operator_sees_and_forgets_what_was_kept(tmp_path: Path) -> None:
    cache = tmp_path / "threads.json"
    cache.write_text(json.dumps({rt._machine_key(rt.cpu_backend_load()): {"chosen": 7, "tokens_per_second": {}}}))
    env = {**os.environ, "LLAMA_THREADS_CACHE": str(cache)}
    run = [sys.executable, "-m", "inference.llama_runtime"]
    shown = subprocess.run([*run, "--show"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and '"chosen": 7' in shown.stdout, shown.stdout + shown.stderr
    forgotten = subprocess.run([*run, "--reset"], env=env, capture_output=True, text=True, timeout=60)
    assert "forgotten" in forgotten.stdout, forgotten.stdout + forgotten.stderr
    assert json.loads(cache.read_text()) == {}


def test_llama_threads_overrides_the_measurement(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_THREADS", "3")
    assert rt.threads_state() == {"chosen": 3, "source": "LLAMA_THREADS"}
    assert not fresh.exists()


def test_measuring_decodes_the_bundled_model() -> None:
    pytest.importorskip("llama_cpp")
    measured = rt.threads_measure(candidates=[1])
    assert measured["chosen"] == 1 and measured["tokens_per_second"]["1"] > 5


def _variant_loaded(pin: str) -> subprocess.CompletedProcess[str]:
    code = "from inference import llama_runtime as rt; print(rt.cpu_backend_load())"
    env = {**os.environ, "LLAMA_CPU_VARIANT": pin}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_llama_cpu_variant_pins_the_kernels_and_a_wrong_name_is_refused() -> None:
    pytest.importorskip("llama_cpp")
    pinned = _variant_loaded("haswell" if "avx2" in rt.cpu_flags() else "x64")
    assert pinned.returncode == 0 and pinned.stdout.split()[-1] in ("haswell", "x64"), pinned.stderr[-2000:]
    wrong = _variant_loaded("no-such-cpu")
    assert wrong.returncode != 0 and "LLAMA_CPU_VARIANT='no-such-cpu'" in wrong.stderr
