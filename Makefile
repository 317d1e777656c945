# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv in the checkout and installs the project into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/driftline demo

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) driftline-demo
