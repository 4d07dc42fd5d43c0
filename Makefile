# diffusion-edu: one entry point. On a fresh machine:
#   make book   # set up .venv, install, build the static site into _build/html (the main job)
#   make test   # set up .venv, install, run the whole test suite (what CI runs, via .ci/run)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_QUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: book test venv clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt 2>&1 | { $(PIP_QUIET); }
	touch $@

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build -W -n --keep-going .

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf _build
