"""What a benchmark ran on: CPU, cores, instruction sets, memory and its measured bandwidth."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

# The instruction sets that decide which llama.cpp / OpenVINO kernels run.
ISA = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni",
    "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm",
)  # fmt: skip


def memory_bandwidth_gbs(size_mib: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth in GB/s (bytes read + written per second), best of ``repeats``: a decode step
    reads every weight once, so this bounds a memory-bound engine's tokens/s."""
    import numpy as np

    n = size_mib * 1024 * 1024 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return round(2 * src.nbytes / best / 1e9, 1)


def machine_describe(*, bandwidth: bool = True) -> dict[str, Any]:
    from inference.llama_runtime import cpu_flags, physical_cores

    flags = cpu_flags()
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = physical_cores()
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        memory_gib = None
    out: dict[str, Any] = {
        "cpu": model,
        "arch": platform.machine(),
        "cores": cores,
        "cpus": cpus,
        "threads_per_core": max(1, cpus // max(cores, 1)),
        "isa": [name for name in ISA if name in flags],
        "memory_gib": memory_gib,
        "memory_bandwidth_gbs": memory_bandwidth_gbs() if bandwidth else None,
        "hostname": socket.gethostname(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        from inference.llama_runtime import cpu_backend_load, threads_state

        out["llama_cpu_variant"] = cpu_backend_load()
        out["llama_threads"] = threads_state()
    except ImportError:
        out["llama_cpu_variant"] = None
    return out
