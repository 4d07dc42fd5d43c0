# diffusion-edu: three entry points. On a fresh machine (Python 3.10+, npm; root for apt-get):
#   make book       # set up .venv, install, fetch the offline JS from npm, build the site into _build/html
#   make test       # the same set-up, then everything CI runs (.ci/run calls exactly this):
#                   # ruff + mypy (make lint), unit tests, the site build + browser test, then every notebook at the smoke tier
#                   # (nbval) as Colab runs it: alone in an empty folder, from the wheel in a fresh venv
#   make notebooks  # re-execute every notebook at a real tier (TIER=cpu by default), storing outputs
#                   # and widget state in place
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_QUIET := grep -v "is ignored: it is neither a file nor a directory" || true
TIER ?= cpu
# pytest workers: the suite runs on 2 cores in CI; files stay whole on one worker (notebooks need it).
JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: book test notebooks venv assets chromium clean lint

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt 2>&1 | { $(PIP_QUIET); }
	touch $@

venv: $(STAMP)

# MathJax, require.js and the ipywidgets HTML manager, pinned in package-lock.json: npm ci into
# node_modules/, then copied into book/_offline/ (both ignored by git). Skipped when up to date.
assets: $(STAMP)
	$(BIN)/python tools/offline_assets.py

book: $(STAMP) assets
	$(BIN)/jupyter-book build -W -n --keep-going .

# Debian's chromium drives the browser test; installed only when missing.
chromium:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The notebooks run as in Colab (tools/colab_check.py): the package's wheel in a fresh venv, each
# notebook alone in an empty folder, at the smoke tier under nbval (stored outputs of the cells marked
# NBVAL_CHECK_OUTPUT compared). COLAB_CHECK=0 skips that step.
COLAB_CHECK ?= 1
test: $(STAMP) assets chromium lint
	DIFFUSION_EDU_TIER=smoke $(BIN)/python -m pytest -n $(JOBS) --dist loadfile tests $(PYTEST_ARGS)
	test "$(COLAB_CHECK)" = 0 || $(BIN)/python tools/colab_check.py --jobs $(JOBS)

notebooks: $(STAMP)
	$(BIN)/python tools/sync_notebooks.py
	$(BIN)/python tools/run_notebooks.py --tier $(TIER)

clean:
	rm -rf _build

# Lint (ruff, configured in pyproject.toml) and type check (mypy on the package).
LINT_PATHS := diffusion_edu tools benchmarks tests
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy diffusion_edu

# Peer benchmark (issue 9): diffusers and denoising-diffusion-pytorch are not dependencies of the book;
# they go into their own venv, benchmarks/.venv (the book's pinned stack + benchmarks/requirements-peers.txt,
# torch held by constraints.txt), then benchmarks/bench_peers.py runs on this machine's device and writes
# results/benchmarks/peers_<device>.json. Run it on an idle machine: BENCH_ARGS="--threads 2" by default.
.PHONY: bench-peers
PEERS_VENV := benchmarks/.venv
BENCH_ARGS ?= --threads 2

$(PEERS_VENV)/.installed: requirements.txt constraints.txt pyproject.toml benchmarks/requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PY) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q -c constraints.txt -r requirements.txt -r benchmarks/requirements-peers.txt 2>&1 | { $(PIP_QUIET); }
	touch $@

bench-peers: $(PEERS_VENV)/.installed
	$(PEERS_VENV)/bin/python benchmarks/bench_peers.py $(BENCH_ARGS)
