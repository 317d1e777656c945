# The README's two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv in the checkout and installs into it first, every version pinned by
# infra/constraints.txt (the tested set; `make lock` refreshes it).
#
#   make demo       the runtime dependencies only, then `driftline demo`
#   make test       the whole suite (it starts its own broker and S3 server on 127.0.0.1, and
#                   drives the dashboard in headless Chromium: installed with apt-get when
#                   it is missing and this runs as root on Debian)
#   make test-fast  the suite without the broker, S3 and slow tests
#   make lint       ruff check, ruff format --check, mypy
#   make lock       re-resolve infra/constraints.txt from pyproject.toml, keeping the pins
#                   that still fit (`make lock LOCK_ARGS=--upgrade` moves everything on)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet -c infra/constraints.txt
# mypy cannot follow the editable install's import hook (events/ -> driftline.events, ...):
# it reads the packages through these links instead (mypy_path in pyproject.toml).
TYPECHECK_TREE := build/typecheck/driftline

.PHONY: demo test test-fast lint lock clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# One stamp per install, so `make demo` never pulls in the test or lint tools.
$(VENV)/.runtime-installed: pyproject.toml infra/constraints.txt | $(PY)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.runtime-installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

# On top of the test install: mypy then sees the optional libraries the tests run with
# (xgboost, onnxmltools), and CI installs both anyway.
$(VENV)/.lint-installed: $(VENV)/.test-installed
	$(PIP_INSTALL) -e '.[lint]'
	touch $@

demo: $(VENV)/.runtime-installed
	$(VENV)/bin/driftline demo

# The browser tests drive the system's Chromium through Playwright (executable_path; its
# own browser download is never used). A missing browser fails them: they never skip.
chromium:
	@command -v chromium >/dev/null || [ -n "$$DRIFTLINE_TEST_CHROMIUM" ] || { \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; }; \
	} || { echo "make: the browser tests need Chromium: apt-get install chromium (as root)," \
		"or DRIFTLINE_TEST_CHROMIUM=/path/to/chromium" >&2; exit 1; }

# Two pytest-xdist workers (TEST_WORKERS=0 runs in one process): the tests on the broker and
# the S3 server stay together in one worker (tests/conftest.py), the rest spread over both.
# Measured on two busy cores: 592 tests in 295 s, against about 560 s in one process.
TEST_WORKERS ?= 2
test: $(VENV)/.test-installed chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# One OpenMP thread: on two busy cores HistGradientBoosting's thread pool spins waiting for a
# core (measured: the fast tier took 168 s of wall time at load 5, 64 s with one thread).
test-fast: $(VENV)/.test-installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -m 'not kafka and not s3 and not slow'

lint: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@mkdir -p $(TYPECHECK_TREE)
	@for p in events functions runtime; do ln -sfn ../../../$$p $(TYPECHECK_TREE)/$$p; done
	$(VENV)/bin/mypy -p driftline.events -p driftline.functions -p driftline.runtime

# The lock covers the test and lint extras, not gpu (CUDA builds; see infra/README.md).
lock: $(VENV)/.lint-installed
	CUSTOM_COMPILE_COMMAND='make lock' $(VENV)/bin/pip-compile --quiet \
		--extra test --extra lint --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		$(LOCK_ARGS) -o infra/constraints.txt pyproject.toml

clean:
	rm -rf $(VENV) build driftline-demo
