# Every target creates/uses .venv and installs what it needs (Debian's libopus0 included).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_PKI := certs/dev
BIND   ?= 127.0.0.1:50051
HEALTH_BIND  ?= 127.0.0.1:8081
METRICS_BIND ?= 127.0.0.1:9464
ADMIN_BIND   ?= 127.0.0.1:50052
CONSOLE_BIND ?= 127.0.0.1:8443
VAR    := var# make run keeps device state and the clip cache here, inside the checkout (make clean resets it)
ARGS   ?=#    extra flags for make run / make sim, e.g. make run ARGS="--mode-count 8"
TENANT ?= acme
DEVICE ?= dev-1

.PHONY: help demo run sim admin test lint proto reference bench pki device-wheel clean

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 16

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

# A dev PKI made before the operator API lacks the dev operator: add it.
$(DEV_PKI)/operators/acme/dev-admin.crt: | $(DEV_PKI)/ca.crt
	$(PY) scripts/gen_certs.py operator --out $(DEV_PKI) --tenant acme --name dev-admin --role admin

pki: $(DEV_PKI)/ca.crt $(DEV_PKI)/signing $(DEV_PKI)/operators/acme/dev-admin.crt  ## the development PKI (CA, localhost server, 3 devices, operator acme/dev-admin, signing key)

demo: $(STAMP) pki  ## end to end: server + headless device, prints a report
	$(PY) scripts/demo.py --pki-dir $(DEV_PKI)

run: $(STAMP) pki  ## the server on 127.0.0.1:50051 with the dev PKI, state in var/, the console on; prints a sign-in link
	@$(PY) -m admin --server $(ADMIN_BIND) --pki-dir $(DEV_PKI) --tenant acme --operator dev-admin \
		console login --wait 60 & \
	$(PY) -m server --pki-dir $(DEV_PKI) --bind $(BIND) --health-bind $(HEALTH_BIND) --metrics-bind $(METRICS_BIND) \
		--admin-bind $(ADMIN_BIND) --console-bind $(CONSOLE_BIND) \
		--state-path $(VAR)/devices.sqlite3 --cache-dir $(VAR)/cache $(ARGS)

sim: $(STAMP) pki  ## a simulated device (TENANT=acme DEVICE=dev-1) against make run, in this terminal
	$(PY) -m device --simulate --pki-dir $(DEV_PKI) --server $(BIND) --tenant $(TENANT) --device $(DEVICE) \
		--record-dir $(VAR)/recordings $(ARGS)

admin: $(STAMP) pki  ## audio-admin as the dev operator against make run, e.g. make admin ARGS="devices list"
	$(PY) -m admin --server $(ADMIN_BIND) --pki-dir $(DEV_PKI) --tenant acme --operator dev-admin $(ARGS)

lint: $(STAMP)  ## ruff and mypy
	$(VENV)/bin/ruff check src tests scripts bench
	$(VENV)/bin/ruff format --check src tests scripts bench
	$(VENV)/bin/mypy

test: lint  ## lint, types, then the test suite (installs Debian's redis-server for the Redis tests)
	WITH_REDIS=1 WITH_BROWSER=1 WITH_SYSTEMD=1 PYTHON=$(PYTHON) bash scripts/ensure_system_deps.sh
	WITH_REDIS=1 $(PY) -m pytest -q

bench: $(STAMP)  ## benchmarks, figures printed
	$(PY) bench/run_all.py

device-wheel: $(STAMP)  ## the Pi client's own wheel (pi/client: no server dependencies) in dist/
	rm -rf pi/client/build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist pi/client

proto: $(STAMP)  ## regenerate src/comms/gen from proto/
	$(PY) scripts/gen_proto.py

reference: $(STAMP)  ## regenerate docs/reference from the settings, metrics and alertable log events
	$(PY) scripts/gen_reference.py

clean:  ## remove the venv, caches, var/ (device state) and demo output
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output $(VAR) device-recordings dist \
		pi/client/build pi/client/*.egg-info
