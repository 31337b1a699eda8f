# Scout: `make up` runs the local stack, `make test` runs every test.
# Ports and tools can be overridden: `make up PROMETHEUS_PORT=19090`.

PYTHON ?= python3
VENV ?= .venv
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
EXPORTER_PORT ?= 8781
SIDECAR_PORT ?= 8782
# pytest-xdist workers for `make test`: whole files per worker, in collection order
# (the files that wait on wall-clock timers first). Many tests wait on the processes
# they start, so two workers halve the wall time even on two cores; a third was
# faster still, but its CPU load made the notification path's fail-open timings late.
TEST_WORKERS ?= 2

BIN := $(VENV)/bin
# COMMAND:DEBIAN-PACKAGE pairs: a package is installed only if its command is missing.
# What the install compiles the exporter's optional C loops with (setup.py).
BUILD_DEBS := gcc:gcc pythonheaders:python3-dev
STACK_DEBS := ensurepip:python3-venv prometheus:prometheus \
	prometheus-alertmanager:prometheus-alertmanager
TEST_DEBS := $(STACK_DEBS) promtool:prometheus amtool:prometheus-alertmanager \
	docker-compose:docker-compose snmpd:snmpd snmpbulkwalk:snmp \
	prometheus-snmp-exporter:prometheus-snmp-exporter ip:iproute2 tc:iproute2 \
	setpriv:util-linux sysctl:procps node:nodejs npm:npm victoria-metrics:victoria-metrics vmalert:victoria-metrics \
	runuser:util-linux pg_ctlcluster:postgresql nft:nftables conntrack:conntrack \
	pmacctd:pmacct nfcapd:nfdump iptables:iptables \
	chromium:chromium chromedriver:chromium-driver
BENCH_DEBS := $(TEST_DEBS) prometheus-node-exporter:prometheus-node-exporter wrk:wrk

.PHONY: up demo test lint bench system-deps clean

up: $(VENV)/.installed
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh $(STACK_DEBS)
	@$(BIN)/python scripts/localstack.py \
		--prometheus-port $(PROMETHEUS_PORT) --alertmanager-port $(ALERTMANAGER_PORT) \
		--exporter-port $(EXPORTER_PORT) --sidecar-port $(SIDECAR_PORT)

# With `make up` running: post a realistic alert storm to its Alertmanager.
demo: $(VENV)/.installed
	@$(BIN)/python scripts/demo_storm.py \
		--alertmanager-port $(ALERTMANAGER_PORT) --sidecar-port $(SIDECAR_PORT)

test: $(VENV)/.installed-dev
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh $(TEST_DEBS)
	$(MAKE) --no-print-directory lint
	@# pytest exits 5 when it collected no test: that is a failure here, not a pass.
	@$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh $(BENCH_DEBS)
	$(BIN)/python benchmarks/host_scrape.py
	$(BIN)/python benchmarks/snmp_walk.py --netns
	$(BIN)/python benchmarks/webhook_ingest.py
	$(BIN)/python benchmarks/flow_ingest.py
	$(BIN)/python benchmarks/console_report.py
	$(BIN)/python benchmarks/shard_fleet.py

$(VENV)/.python-ok:
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh ensurepip:python3-venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: Scout needs Python 3.11 or newer; run with PYTHON=python3.11 (or newer)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@touch $@

$(VENV)/.installed: pyproject.toml setup.py exporter/clients/snmp/_speedups.c $(VENV)/.python-ok
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh $(BUILD_DEBS)
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml setup.py exporter/clients/snmp/_speedups.c $(VENV)/.python-ok
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh $(BUILD_DEBS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache *.egg-info build exporter/clients/snmp/_speedups.*.so
