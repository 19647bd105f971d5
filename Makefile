# Two commands: `make run` serves the gateway on SQLite; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
# Live-server tests start their own uvicorn and fake Puter per worker.
PYTEST_ARGS ?= -n 2 -p no:cacheprovider -q
SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
SERVICES_REDIS_URL ?= redis://127.0.0.1:6379/0
SERVICES_UP = $(BIN)/python -c "import socket; [socket.create_connection(('127.0.0.1', p), 2).close() for p in (5432, 6379)]"

.PHONY: run test lint audit test-sqlite test-services bench bench-dashboards fault-load clean

run: $(VENV)/.runtime node_modules/.installed
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py bootstrap
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) --workers $(WORKERS) --no-access-log

test: lint audit test-sqlite test-services

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python manage.py makemigrations --check --dry-run -v0

# Known vulnerabilities in the pinned runtime requirements, from PyPI's advisory data. When
# the advisory service cannot be reached the audit says loudly that it was not done (and
# fails with REQUIRE_AUDIT=1); a vulnerability found always fails.
audit: $(VENV)/.dev
	@echo "== dependency audit (pip-audit) =="
	@log=$$(mktemp); \
	if $(BIN)/pip-audit -r requirements.txt --no-deps --disable-pip --strict --progress-spinner off >$$log 2>&1; then \
		cat $$log; rm -f $$log; \
	elif grep -qE "could not be audited|ConnectionError|NameResolutionError|Max retries exceeded" $$log; then \
		cat $$log; rm -f $$log; \
		echo "== pip-audit got no advisory data for the pinned versions (service unreachable or incomplete): the dependency audit was NOT done ==" >&2; \
		[ "$(REQUIRE_AUDIT)" != "1" ]; \
	else \
		cat $$log; rm -f $$log; exit 1; \
	fi

test-sqlite: $(VENV)/.dev node_modules/.installed
	@echo "== suite on SQLite =="
	$(BIN)/pytest $(PYTEST_ARGS)

test-services: $(VENV)/.dev node_modules/.installed
	@if $(SERVICES_UP) 2>/dev/null; then \
		echo "== suite on PostgreSQL + Redis =="; \
		DATABASE_URL=$(SERVICES_DATABASE_URL) REDIS_URL=$(SERVICES_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS); \
	elif [ "$(REQUIRE_SERVICES)" = "1" ]; then \
		echo "PostgreSQL (5432) and Redis (6379) must answer: REQUIRE_SERVICES=1" >&2; exit 1; \
	else \
		echo "PostgreSQL or Redis does not answer: the second pass is skipped" >&2; \
	fi

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The portal's chart library comes from the npm registry, exactly as package-lock.json says.
node_modules/.installed: package.json package-lock.json
	@{ command -v node && command -v npm; } >/dev/null 2>&1 || { \
		echo "Node.js and npm are missing: the portal's chart library is installed with npm." >&2; \
		echo "Install Node.js 18 or newer (e.g. apt-get install nodejs npm), then run make again." >&2; \
		exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Seeds a separate database with a million ledger rows and times the dashboards.
bench-dashboards: $(VENV)/.dev node_modules/.installed
	$(BIN)/python -m bench.dashboards

# Prints markdown tables: the gateway in each configuration against the bare proxy.
bench: $(VENV)/.dev
	$(BIN)/python -m bench.gateway_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles var/test-logs node_modules

# 10,000 chat calls with upstream faults and clients leaving, on SQLite, then on a private
# PostgreSQL cluster stopped mid-run: one usage row per request, with its client's tokens.
fault-load: $(VENV)/.dev
	$(BIN)/python -m bench.fault_load --requests 10000 --concurrency 32 --workers 2
	$(BIN)/python -m bench.fault_load --requests 10000 --concurrency 32 --workers 2 \
		--database postgres --stop-database-at 0.4
