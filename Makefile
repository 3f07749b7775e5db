# One task runner. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean install

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the package metadata changes.
$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/searchindex demo --index indexes/demo

# The checks first (style, import layers, types), then the tests.
test: lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check searchindex scripts tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The documentation site into site/; --strict (also set in mkdocs.yml) turns a
# broken link, a missing page or a failing directive into an error.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) indexes/demo site
