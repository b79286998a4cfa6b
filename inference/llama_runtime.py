"""llama.cpp on this machine: the best CPU kernels it supports, and how many threads to give it.

**Kernels.** llama-cpp-python is built once with every x86 CPU variant as a loadable backend
(``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``: ``libggml-cpu-haswell.so``, ``-skylakex``,
``-icelake``, ``-zen4``, ``-sapphirerapids``, ...). ggml's own loader looks for them next to the
Python executable and in the working directory, not where the wheel puts them, so
``cpu_backend_load`` loads them itself: each variant scores this CPU (0 when it lacks an
instruction set the variant was compiled for) and the best is registered. One correction to
ggml's score: the AMX variant (sapphirerapids) is never loaded. Its tile kernels fault with
SIGILL on their first ``tilezero`` (seen on a Xeon with AMX whose kernel grants the tile-data
permission; a C program doing the same after ``arch_prctl(ARCH_REQ_XCOMP_PERM)`` runs): llama.cpp
requests that permission on its main thread only and can hand ``_tile_loadconfig`` an invalid
config (llama.cpp PR #26954, open), so the worker dies on its first decode. The next best variant
(zen4 / icelake / cooperlake: AVX-512 with VNNI and BF16) runs there instead. ``LLAMA_CPU_VARIANT``
(a variant's name, such as ``haswell``) pins the kernels: greedy output can differ between variants
where two tokens nearly tie, so a fleet that must answer alike pins one. A build with a single
CPU backend linked in (no variant files) is used as it is.

**Threads.** ``default_threads`` is measured, not guessed: the bundled model decodes 32 tokens
with 1, 2, ... threads up to the physical cores this process may run on (leaving one for the
worker's own work from 4 cores up), best of three rounds, and the fewest threads within 3 % of
the fastest win. The result is kept per machine in ``LLAMA_THREADS_CACHE`` (CPU, cores, variant)
only when it was measured on an otherwise idle machine: a busy neighbour makes every extra thread
look slow (2 threads measured 3 tokens/s here while tests ran beside, 83 on a quiet machine; with
one busy loop beside, 23 against 56 for one thread). Idle means the other processes took under
``BUSY_OTHERS_CPUS`` of CPU time while it ran (/proc/stat, less this process's own) and the
chosen count's three rounds agree (the load average before it lags, and was fooled); a noisy
answer serves that process only and is measured again by the next. It is measured when
``make run`` starts the platform and when a worker preloads its models, so no reply waits for
it. ``python -m inference.llama_runtime`` measures again (``--show``: what is kept; ``--reset``:
forget it; ``--if-missing``). ``LLAMA_THREADS`` in the environment overrides it, and an agent's
``n_threads`` overrides both.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Re-entrant: importing llama_cpp in cpu_backend_load runs the start-up hook's cpu_backend_load
# (inference.llama_autoload) in the same thread.
_lock = threading.RLock()
_variant: str | None = None
# One measurement at a time in a process: a reply that needs the default while the worker's
# start-up measures it waits for that answer instead of measuring beside it (and spoiling both).
_measuring = threading.Lock()
_threads: dict[str, Any] | None = None
CALIBRATION_TOKENS = 32
ROUNDS = 3
WITHIN = 0.97
# Kept for the machine only when, while it ran, the other processes took less than this many
# CPUs' worth of time and the chosen count's rounds agree within this fraction: a busy moment's
# answer serves this process and is measured again later, never kept.
BUSY_OTHERS_CPUS = 0.3
ROUND_SPREAD = 0.15


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu, phys = -1, "0"
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    phys = value
                elif key == "core id" and cpu in allowed:
                    cores.add((phys, value))
    except (OSError, ValueError):
        pass
    return len(cores) or len(allowed) or 1


def _lib_dirs() -> list[Path]:
    """Where the wheel puts ggml's modules: the package's ``lib``, and ``bin`` beside the package
    (ggml installs backend modules to CMAKE_INSTALL_BINDIR, which the wheel maps to site-packages)."""
    import llama_cpp

    package = Path(llama_cpp.__file__).parent
    return [package / "lib", package.parent / "bin"]


def cpu_variants() -> list[Path]:
    return sorted(p for d in _lib_dirs() for p in d.glob("libggml-cpu-*.so"))


def _allowed(name: str, flags: set[str]) -> bool:
    # The AMX variant faults on its first tile instruction (see the module's docstring).
    return "sapphirerapids" not in name


def _ggml_log(level: int, text: bytes, user_data: Any) -> None:
    # ggml's levels: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (llama-cpp-python 0.3.36's
    # own table is older, and takes INFO for a warning). Only warnings and errors are kept.
    if level in (3, 4):
        message = text.decode(errors="replace").rstrip()
        log.log(logging.WARNING if level == 3 else logging.ERROR, "llama.cpp: %s", message)


# ggml_log_callback: void (*)(enum ggml_log_level, const char *, void *); kept alive here.
_GGML_LOG_TO_OURS = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(_ggml_log)


def cpu_backend_load() -> str:
    """Register the best CPU variant for this machine (once per process); its name, or "built-in"."""
    global _variant
    with _lock:
        if _variant is not None:
            return _variant
        import llama_cpp  # noqa: F401 - loads libllama and the libggml it links to

        if _variant is not None:  # the import's start-up hook (inference.llama_autoload) loaded them
            return _variant
        # The registry libllama reads is in the libggml it loaded (by soname); the wheel also
        # carries copies under other names, whose registries libllama never sees.
        libggml = ctypes.CDLL("libggml.so.0")

        variants = cpu_variants()
        if not variants:
            _variant = "built-in"
            return _variant
        flags = cpu_flags()
        pinned = os.environ.get("LLAMA_CPU_VARIANT", "").strip()
        if pinned and pinned not in {p.stem.removeprefix("libggml-cpu-") for p in variants}:
            raise RuntimeError(f"LLAMA_CPU_VARIANT={pinned!r}: no such llama.cpp CPU variant in {_lib_dirs()}")
        scored: list[tuple[int, Path]] = []
        for path in variants:
            name = path.stem.removeprefix("libggml-cpu-")
            if pinned and name != pinned:
                continue
            try:
                score = int(ctypes.CDLL(str(path)).ggml_backend_score())
            except (OSError, AttributeError) as exc:
                log.warning("llama.cpp CPU variant %s cannot be scored: %s", name, exc)
                continue
            if score > 0 and _allowed(name, flags):
                scored.append((score, path))
        if not scored:
            if pinned:
                raise RuntimeError(f"LLAMA_CPU_VARIANT={pinned!r} does not run on this CPU")
            raise RuntimeError(f"no llama.cpp CPU variant in {_lib_dirs()} runs on this CPU")
        best = max(scored)[1]
        libggml.ggml_backend_load.restype = ctypes.c_void_p
        libggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
        # ggml's "load_backend: loaded CPU backend from ..." is ours to log, not a line on stderr
        # in the middle of a terminal chat: while loading, ggml's own log (libggml-base's, which
        # llama-cpp-python's log callback does not reach) keeps only warnings and errors, as ours.
        base = ctypes.CDLL("libggml-base.so.0")
        base.ggml_log_set(_GGML_LOG_TO_OURS, None)
        try:
            if not libggml.ggml_backend_load(str(best).encode()):
                raise RuntimeError(f"llama.cpp could not load its CPU backend {best}")
            # Other backends built as modules (CUDA, Vulkan, ...) load as they are.
            for path in sorted(p for d in _lib_dirs() for p in d.glob("libggml-*.so")):
                stem = path.stem.removeprefix("libggml-")
                if stem != "base" and not stem.startswith("cpu"):
                    libggml.ggml_backend_load(str(path).encode())
        finally:
            base.ggml_log_set(None, None)  # ggml's default again: stderr
        _variant = best.stem.removeprefix("libggml-cpu-")
        log.info("llama.cpp CPU kernels: %s", _variant)
        return _variant


def llama_load(**kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)`` with the CPU backend loaded and, unless given, the measured
    default thread count for decoding (prompt batches keep llama-cpp-python's default: every CPU)."""
    cpu_backend_load()
    import llama_cpp

    if kwargs.get("n_threads") is None and not kwargs.get("vocab_only"):
        kwargs["n_threads"] = default_threads()
    return llama_cpp.Llama(**kwargs)


def _candidates() -> list[int]:
    cores = physical_cores()
    most = cores - 1 if cores >= 4 else cores
    return list(range(1, max(1, most) + 1))


def _cache_path() -> Path:
    return Path(os.environ.get("LLAMA_THREADS_CACHE") or Path.home() / ".cache/chatsite/llama-threads.json")


def _machine_key(variant: str) -> str:
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")), "?")
    return f"{model}|cores={physical_cores()}|cpus={len(os.sched_getaffinity(0))}|{variant}"


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.readlines()
    except OSError:
        return []


def _decode_speed(llm: Any) -> float:
    llm.reset()
    prompt = llm.tokenize(b"Once upon a time", add_bos=True)
    start = time.perf_counter()
    made = 0
    for _token in llm.generate(prompt, temp=0.0, reset=True):
        made += 1
        if made == 1:
            start = time.perf_counter()  # decode speed: after the first token
        if made > CALIBRATION_TOKENS:
            break
    return (made - 1) / max(time.perf_counter() - start, 1e-9)


def _cpu_jiffies() -> tuple[int, int]:
    """All CPUs' busy and total time so far (/proc/stat), in clock ticks."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def threads_measure(model_path: str | None = None, candidates: list[int] | None = None) -> dict[str, Any]:
    """Decode speed (tokens/s) of the bundled model at each thread count: the best of three
    rounds, the counts taking turns within a round, so a moment's load elsewhere does not decide.

    Also says whether the answer can be trusted (``quiet``): the CPU time other processes took
    while it ran (``others_cpus``, in CPUs' worth, from /proc/stat less this process's own) stayed
    under ``BUSY_OTHERS_CPUS``, and the chosen count's rounds agree within ``ROUND_SPREAD``."""
    from inference.bundled import bundled_model_path

    variant = cpu_backend_load()
    import llama_cpp

    path = model_path or str(bundled_model_path())
    load_before = os.getloadavg()[0]
    engines = {n: llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=n, n_threads_batch=n, verbose=False, seed=0)
               for n in candidates or _candidates()}  # fmt: skip
    rounds: dict[int, list[float]] = {n: [] for n in engines}
    busy_before, total_before = _cpu_jiffies()
    own_before, wall_before = sum(os.times()[:2]), time.monotonic()
    try:
        for _ in range(ROUNDS):
            for n, llm in engines.items():
                rounds[n].append(_decode_speed(llm))
    finally:
        for llm in engines.values():
            llm.close()
    busy_after, total_after = _cpu_jiffies()
    own = sum(os.times()[:2]) - own_before
    wall = time.monotonic() - wall_before
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = max(0.0, (busy_after - busy_before) / ticks - own) / max(wall, 1e-9)
    speeds = {n: max(values) for n, values in rounds.items()}
    fastest = max(speeds.values())
    chosen = min(n for n, tps in speeds.items() if tps >= WITHIN * fastest)
    spread = max(rounds[chosen]) / max(min(rounds[chosen]), 1e-9) - 1
    return {"chosen": chosen, "tokens_per_second": {str(n): round(v, 1) for n, v in speeds.items()},
            "variant": variant, "measured_at": time.time(), "loadavg": round(load_before, 2),
            "others_cpus": round(others, 2), "round_spread": round(spread, 3),
            "quiet": others < BUSY_OTHERS_CPUS and spread <= ROUND_SPREAD and total_after > total_before}  # fmt: skip


def threads_state() -> dict[str, Any]:
    """The thread default and how it was found: ``{"chosen", "source", "tokens_per_second"?, ...}``."""
    global _threads
    with _lock:
        if _threads is not None:
            return _threads
    override = os.environ.get("LLAMA_THREADS", "").strip()
    if override.isdigit() and int(override) > 0:
        state: dict[str, Any] = {"chosen": int(override), "source": "LLAMA_THREADS"}
    else:
        variant = cpu_backend_load()
        key = _machine_key(variant)
        path = _cache_path()
        try:
            cached = json.loads(path.read_text()).get(key)
        except (OSError, ValueError):
            cached = None
        if cached:
            state = {**cached, "source": "measured (cached)"}
        else:
            with _measuring:
                with _lock:
                    if _threads is not None:
                        return _threads
                return _measured_state(key)
    with _lock:
        _threads = state
    return state


def _measured_state(key: str) -> dict[str, Any]:
    """Measure now; keep the answer for the machine when the run was quiet."""
    global _threads
    try:
        state = {**threads_measure(), "source": "measured"}
    except Exception as exc:  # no bundled model, say: llama.cpp's own default
        log.warning("measuring llama.cpp threads failed (%s); using half the cores", exc)
        return {"chosen": max(1, physical_cores() // 2), "source": f"fallback ({exc})"}
    if _trusted(state):
        try:
            _keep(key, state)
        except (OSError, ValueError) as exc:
            log.warning("could not keep the measured thread count in %s: %s", _cache_path(), exc)
    else:
        state["source"] = "measured (machine busy: not kept)"
    log.info("llama.cpp threads: %s (measured %s tokens/s)", state["chosen"], state["tokens_per_second"])
    with _lock:
        _threads = state
    return state


def default_threads() -> int:
    return int(threads_state()["chosen"])


def _trusted(state: dict[str, Any]) -> bool:
    """Whether a measurement may be kept for the machine: it ran quiet (``threads_measure``).
    What other processes did while it ran decides, not the load average before it: that one
    lags a minute behind, and counts this very process's start-up."""
    return bool(state.get("quiet"))


def _keep(key: str, state: dict[str, Any]) -> None:
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(path.read_text()) if path.exists() else {}
    known[key] = {k: v for k, v in state.items() if k != "source"}
    path.write_text(json.dumps(known, indent=2) + "\n")


def threads_reset() -> bool:
    """Forget this machine's kept measurement (the next worker measures again); whether one was kept."""
    path = _cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    key = _machine_key(cpu_backend_load())
    if key not in known:
        return False
    del known[key]
    path.write_text(json.dumps(known, indent=2) + "\n")
    return True


def main(argv: list[str] | None = None) -> None:
    """``python -m inference.llama_runtime [--show | --reset | --if-missing]``: measure this machine
    again and keep the answer when the run was quiet; show what is kept; forget it; or measure only
    when nothing is kept (``make run`` does, so no reply waits for it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m inference.llama_runtime", description=main.__doc__)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--show", action="store_true", help="Print the kept measurement and exit.")
    what.add_argument("--reset", action="store_true", help="Forget the kept measurement.")
    what.add_argument("--if-missing", action="store_true", help="Measure only when none is kept.")
    opts = parser.parse_args(argv)
    variant = cpu_backend_load()
    key, path = _machine_key(variant), _cache_path()
    try:
        kept = (json.loads(path.read_text()) if path.exists() else {}).get(key)
    except ValueError:
        kept = None
    if opts.show or (opts.if_missing and kept):
        print(f"llama.cpp CPU kernels: {variant}; physical cores: {physical_cores()}; {path}:")
        print(json.dumps(kept, indent=2) if kept else "nothing kept: the next worker measures")
        return
    if opts.reset:
        print("forgotten: the next worker measures again" if threads_reset() else "nothing was kept")
        return
    print(f"llama.cpp CPU kernels: {variant}; physical cores: {physical_cores()}")
    state = threads_measure()
    speeds = ", ".join(
        f"{n} thread{'s' if n != '1' else ''}: {v} tokens/s" for n, v in state["tokens_per_second"].items()
    )
    print(f"decode {speeds}; default: {state['chosen']}")
    noise = f"load average {state['loadavg']}, other processes {state['others_cpus']} CPUs, rounds within "
    noise += f"{state['round_spread']:.0%}"
    if _trusted(state):
        _keep(key, state)
        print(f"({noise}) kept in {path}")
    else:
        print(f"({noise}): the machine was busy, so nothing is kept; run again when it is quiet")


if __name__ == "__main__":
    # The module proper, not this copy run as __main__: importing llama_cpp loads the kernels
    # through it (inference.llama_autoload), and they must be loaded once.
    from inference.llama_runtime import main as module_main

    module_main()
