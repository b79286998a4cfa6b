"""The installed llama-cpp-python as its users know it, in the project's environment and from any
directory: a plain ``llama_cpp.Llama`` answers and ``python -m llama_cpp.server`` serves the bundled
model (the build's CPU variants load through ``inference.llama_autoload``'s start-up hook, which
``make install`` writes), and llama.cpp's own loading lines stay off stderr."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from inference.bundled import bundled_model_path
from inference.llama_autoload import PTH_LINE, PTH_NAME


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_make_install_wrote_the_start_up_hook() -> None:
    import sysconfig

    assert (Path(sysconfig.get_paths()["purelib"]) / PTH_NAME).read_text() == PTH_LINE


def test_a_plain_llama_answers_from_any_directory(tmp_path: Path) -> None:
    code = (
        "import llama_cpp\n"
        f"llm = llama_cpp.Llama(model_path={str(bundled_model_path())!r}, n_ctx=256, verbose=False)\n"
        "out = llm.create_chat_completion(messages=[{'role': 'user', 'content': 'Hi'}], max_tokens=8)\n"
        "print(out['choices'][0]['message']['content'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    assert "load_backend" not in done.stderr and "no backends" not in done.stderr, done.stderr[-2000:]


def test_llama_cpps_own_server_serves_the_bundled_model(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()), "--port", str(port),
         "--n_ctx", "512", "--verbose", "false"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:] if server.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "llama_cpp.server did not start"
                time.sleep(0.2)
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["choices"][0]["message"]["content"].strip()
    finally:
        server.terminate()
        server.wait(30)
