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

.PHONY: run test lint test-sqlite test-services clean

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py bootstrap
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) --workers $(WORKERS) --no-access-log

test: lint test-sqlite test-services

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python manage.py makemigrations --check --dry-run -v0

test-sqlite: $(VENV)/.dev
	@echo "== suite on SQLite =="
	$(BIN)/pytest $(PYTEST_ARGS)

test-services: $(VENV)/.dev
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

clean:
	rm -rf $(VENV) staticfiles var/test-logs
