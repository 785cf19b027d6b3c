# Two user-facing targets: `make run` and `make test`. Both create .venv once
# (torch first, pinned, then the project with its dev and LIBERO extras) and reuse it after.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test setup

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,libero]'
	$(PY) -m pip install -q --no-deps openpi-client  # pins numpy<2; its real imports are in the dev extra
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m pipeline.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)
