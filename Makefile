# Two commands do all the set-up: `make demo` and `make test`. Both are idempotent and fast the
# second time (the venv is rebuilt only when pyproject.toml changes).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint sysdeps sysdeps-demo bench clean screenshot

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

sysdeps:
	@command -v socat >/dev/null && test -x /usr/bin/chromium && test -x /usr/bin/promtool && test -x /usr/sbin/mosquitto || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq socat chromium prometheus mosquitto >/dev/null)

# the demo needs only socat (its simulated RS-485 adapter); the tests also need chromium
sysdeps-demo:
	@command -v socat >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq socat >/dev/null)

# ruff; the architecture contracts ([tool.importlinter] in pyproject.toml); mypy over edge, drivers, sync,
# hw_sim, vision_models (strict on edge.core and drivers; vision_models.train not checked; [tool.mypy] in
# pyproject.toml). SQL outside edge/ledger fails tests/unit/test_sql_only_in_ledger.py.
lint: $(STAMP)
	$(VENV)/bin/ruff check edge drivers sync hw_sim vision_models tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: $(STAMP) sysdeps lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist worksteal

demo: $(STAMP) sysdeps-demo
	@echo "The vendedge command is in $(VENV)/bin: '. $(VENV)/bin/activate' puts it on PATH (or run $(VENV)/bin/vendedge)."
	$(VENV)/bin/vendedge demo

bench: $(STAMP)
	$(PY) bench/run.py vend --quick

# the README's dashboard picture (tests never write into the source tree)
screenshot: $(STAMP) sysdeps
	$(PY) -m tests.support.screenshot docs/img/dashboard.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
