# One task runner. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint docs bench clean install

$(PY):
	$(PYTHON) -m venv $(VENV)

# The core package only (ONNX Runtime, no torch): what `pip install searchindex` gives a user.
# Re-installed when the package metadata changes; a dev install already holds it.
$(CORE): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(CORE)

# Everything: torch + open_clip (the reference the ONNX graphs are tested against), tests, linters, docs.
$(DEV): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(DEV) $(CORE)

install: $(DEV)

# The demo index goes to indexes/demo here (`searchindex demo` alone writes to the user data folder).
demo: $(CORE)
	$(VENV)/bin/searchindex demo --index indexes/demo

# The checks first (style, import layers, types), then the tests.
test: lint
	$(PY) -m pytest -q

lint: $(DEV)
	$(VENV)/bin/ruff check searchindex scripts tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The documentation site into site/; --strict (also set in mkdocs.yml) turns a
# broken link, a missing page or a failing directive into an error.
docs: $(DEV)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) indexes/demo site
