"""``make test``'s pytest: two independent groups at once, one per core.

The model pipeline jobs (tests/integration/test_jobs.py, the other job tests and the dashboard's
browser test) spend minutes in torch and llama.cpp's converters; the rest of the suite spends much
of its time waiting on sockets and timers. They share nothing (each starts its own platform on its own
PostgreSQL database; the jobs group uses Redis db 14, the rest db 13), so they run side by side
and the whole run takes about as long as the longer group. Each group's output is printed whole
when it ends, then each group's slowest test files (from its JUnit report), to keep the two
groups' lengths even when tests move; the exit status is non-zero when either group fails.

    python -m tools.run_tests            # both groups
    python -m tools.run_tests -k cancel  # any pytest arguments: one plain pytest run instead
    TEST_REPORTS_DIR=/tmp/r python -m tools.run_tests   # and keep each group's JUnit report there
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The job tests share one worker on the `jobs` queue (tests/integration/conftest.py). The benchmark
# job and the vLLM worker's tests joined them when the rest had become the longer group (a clean
# clone's run: jobs 731 s, rest 1434 s of which test_vllm_worker.py took 404 s); the /v1 tool-call
# tests (their own embedded platform) when the structured-output tests made the rest longer again
# (jobs 1272 s, rest 1588 s of which test_openai_tools.py took 158 s); the /v1 structured-output
# tests (the same package platform, started once for both then) when the rest was longer again
# (jobs 1618 s, rest 1827 s of which test_openai_structured.py took 144 s).
JOBS_GROUP = [
    "tests/integration/test_jobs.py",
    "tests/integration/test_finetune.py",
    "tests/integration/test_synthesize.py",
    "tests/integration/test_benchmark.py",
    "tests/ui/test_jobs_dashboard.py",
    "tests/integration/test_vllm_worker.py",
    "tests/api/test_openai_tools.py",
    "tests/api/test_openai_structured.py",
    "tests/api/test_openai_agent_tools.py",
]


def file_seconds(junit_xml: Path) -> dict[str, float]:
    """Seconds per test file (set-up, call and teardown of its tests) in a pytest JUnit report,
    the slowest first."""
    seconds: defaultdict[str, float] = defaultdict(float)
    if junit_xml.exists():
        for case in ET.parse(junit_xml).iter("testcase"):
            parts = case.get("classname", "").split(".")
            module = next((i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
            seconds["/".join(parts[: module + 1]) + ".py"] += float(case.get("time") or 0)
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if argv:
        return subprocess.call([*pytest, *argv], cwd=ROOT)
    jobs_group = [path for path in JOBS_GROUP if (ROOT / path).exists()]
    rest = [*pytest, *(f"--ignore={path}" for path in jobs_group)]
    # The two groups share the cores: llama.cpp decodes on one thread in each (its measured
    # default, every core, collapses when another process takes one: docs/benchmarks.md).
    base_env = {"LLAMA_THREADS": "1", **os.environ}
    # The jobs group's torch steps likewise get one core (JOB_THREADS): two OpenMP threads beside
    # the other group's work are slower than one (pipeline/jobs/steps/protocol.py), and the
    # fine-tune test ran past its time limit in CI that way.
    jobs_env = {**base_env, "JOB_THREADS": "1", "TEST_INTEGRATION_REDIS_URL": "redis://127.0.0.1:6379/14"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatsite-tests-") as tmp:
        logs = {"jobs": Path(tmp) / "jobs.log", "rest": Path(tmp) / "rest.log"}
        reports = {name: Path(tmp) / f"{name}.xml" for name in logs}
        procs = {}
        with logs["jobs"].open("wb") as jobs_log, logs["rest"].open("wb") as rest_log:
            procs["jobs"] = subprocess.Popen(
                [*pytest, "-p", "no:cacheprovider", f"--junitxml={reports['jobs']}", *jobs_group], cwd=ROOT,
                env=jobs_env, stdout=jobs_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs["rest"] = subprocess.Popen(
                [*rest, f"--junitxml={reports['rest']}"], cwd=ROOT, env=base_env,
                stdout=rest_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            codes: dict[str, int] = {}
            while len(codes) < len(procs):
                for name, proc in procs.items():
                    if name not in codes and proc.poll() is not None:
                        codes[name] = proc.returncode
                        took = time.monotonic() - started
                        print(
                            f"\n===== test group {name!r} ended with status {proc.returncode} after {took:.0f} s ====="
                        )
                        sys.stdout.write(logs[name].read_text(errors="replace"))
                        sys.stdout.flush()
                time.sleep(1)
        for name, report in reports.items():
            seconds = file_seconds(report)
            if keep := os.environ.get("TEST_REPORTS_DIR"):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(report, Path(keep) / report.name)
            print(f"\n===== group {name!r}: {sum(seconds.values()):.0f} s in tests; its slowest files =====")
            for path, took in list(seconds.items())[:12]:
                print(f"{took:8.1f} s  {path}")
    print(f"\n===== both groups done in {time.monotonic() - started:.0f} s: {codes} =====")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
