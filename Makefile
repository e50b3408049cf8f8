# obpipe — the README's two commands are `make run` and `make test`.
#   make run          the whole pipeline on this machine (embedded Redis; simulator without a token)
#   make test         the full suite, every test lane, as CI runs it (CI runs make lint first)
#   make check        the edit loop: lint plus the pure and fakeredis tests (well under a minute)
#   make screenshots  refresh docs/status-*.png from the browser test
#   make bench        benchmarks, rewriting BENCHMARKS.md;  make soak  the 5-minute fault soak
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INSTALL_LOG := $(VENV)/install.log
# Fast lane: everything that needs no redis-server, processes, browser or Docker engine.
FAST := not redis and not e2e and not browser and not docker

.PHONY: run test check lint screenshots bench soak clean

# One short line instead of pip's chatter; the whole log stays in $(INSTALL_LOG).
$(STAMP): pyproject.toml
	@echo "installing obpipe and its dependencies into $(VENV) (log: $(INSTALL_LOG)) ..."
	@$(PYTHON) -m venv $(VENV)
	@PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
	  $(PY) -m pip install --upgrade pip > $(INSTALL_LOG) 2>&1 \
	  && PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
	  $(PY) -m pip install -e '.[test]' >> $(INSTALL_LOG) 2>&1 \
	  || { tail -n 30 $(INSTALL_LOG); echo "install failed; see $(INSTALL_LOG)"; exit 1; }
	@touch $(STAMP)
	@echo "installed."

run: $(STAMP)
	$(VENV)/bin/obpipe run

test: $(STAMP)
	$(PY) -m pytest

check: $(STAMP) lint
	$(PY) -m pytest -q -m "$(FAST)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

screenshots: $(STAMP)
	OBPIPE_SCREENSHOTS_DIR=$(CURDIR)/docs $(PY) -m pytest -q tests/test_web_browser.py

soak: $(STAMP)
	$(PY) -m bench.soak --duration 300

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
