# Every target creates/uses .venv and installs what it needs (Debian's libopus0 included).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_PKI := certs/dev
BIND   ?= 127.0.0.1:50051
HEALTH_BIND  ?= 127.0.0.1:8081
METRICS_BIND ?= 127.0.0.1:9464

.PHONY: demo run test lint proto bench pki clean

$(STAMP): pyproject.toml scripts/ensure_system_deps.sh
	PYTHON=$(PYTHON) bash scripts/ensure_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(DEV_PKI)/ca.crt: | $(STAMP)
	$(PY) scripts/gen_certs.py dev --out $(DEV_PKI)

# A dev PKI made before session tokens existed lacks a signing key: add one.
$(DEV_PKI)/signing: | $(DEV_PKI)/ca.crt
	$(PY) scripts/gen_certs.py signing-key --out $(DEV_PKI)

pki: $(DEV_PKI)/ca.crt $(DEV_PKI)/signing  ## the development PKI (CA, localhost server, 3 devices, signing key)

demo: $(STAMP) pki  ## end to end: server + headless device, prints a report
	$(PY) scripts/demo.py --pki-dir $(DEV_PKI)

run: $(STAMP) pki  ## the server on $(BIND) with the dev PKI
	$(PY) -m server --pki-dir $(DEV_PKI) --bind $(BIND) --health-bind $(HEALTH_BIND) --metrics-bind $(METRICS_BIND)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts bench
	$(VENV)/bin/ruff format --check src tests scripts bench
	$(VENV)/bin/mypy

test: lint  ## lint, types, then the test suite
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
