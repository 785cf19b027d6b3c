# Two user-facing targets: `make run` and `make test`. Both create .venv once (torch first, pinned, then the
# project with its dev and LIBERO extras, every package at the version constraints.txt names) and reuse it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test setup constraints

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,libero]'
	$(PY) -m pip install -q --no-deps openpi-client==0.1.2  # pins numpy<2; its real imports are in the dev extra
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m pipeline.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# Re-resolve every dependency from pyproject.toml in a scratch venv and pin what it got.
constraints:
	rm -rf .venv-constraints && python3 -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q torch==2.13.0
	.venv-constraints/bin/python -m pip install -q -e '.[dev,libero]'
	.venv-constraints/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt
	rm -rf .venv-constraints
