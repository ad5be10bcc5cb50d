# netmon-exporter: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LISTEN ?= :9864

.PHONY: run test venv system-deps lint typecheck dashboards check-assets docs bench bench-detection clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m netmon_exporter.ingest.warm_pipeline
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

## run: the exporter on the bundled sample captures, serving http://localhost:9864/metrics
run: $(STAMP)
	$(PY) -m netmon_exporter.ingest.warm_pipeline
	mkdir -p captures
	cp -p -n samples/*.pcap samples/*.pcapng captures/ 2>/dev/null || true
	$(VENV)/bin/netmon-exporter --config.file=config.yaml --web.listen-address=$(LISTEN)

## test: the whole test suite, including the integration tests on real Prometheus/Alertmanager
test: $(STAMP) system-deps
	$(PY) -m netmon_exporter.ingest.warm_pipeline
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check netmon_exporter tests bench grafana
	$(VENV)/bin/ruff format --check netmon_exporter tests bench grafana

typecheck: $(STAMP)
	$(VENV)/bin/mypy netmon_exporter

docs: $(STAMP)
	$(PY) -m netmon_exporter.tools.reference_docs

## dashboards: regenerate grafana/dashboards/*.json from grafana/dashboards.py
dashboards: $(STAMP)
	$(PY) grafana/dashboards.py

## check-assets: alert rules and their unit tests, Prometheus/Alertmanager configs, dashboards up to date
check-assets: $(STAMP) system-deps
	$(PY) alerts/generate.py --check
	promtool check rules alerts/netmon.rules.yml
	promtool test rules alerts/netmon.rules.test.yml
	promtool check config prometheus/prometheus.yml
	amtool check-config prometheus/alertmanager.yml
	$(PY) grafana/dashboards.py --check

clean:
	rm -rf $(VENV) captures output state .pytest_cache
