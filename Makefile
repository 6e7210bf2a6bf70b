# make run: set up and serve on http://127.0.0.1:$(PORT). make test: set up and run every test
# (make test-postgres: the same on a throwaway PostgreSQL server). make check: the quick loop,
# every test but the slow system tests and the browser tests (pytest marks `slow`, `browser`).
# make bench: run every benchmark in bench/ (each prints its figures and which targets are met).
# make screenshots: PNGs of every page (light, dark, desktop, phone) into screenshots/.
PORT ?= 5000
PUBLIC_URL ?= http://127.0.0.1:$(PORT)
VENV := .venv
PY := $(VENV)/bin/python
HTMX := static/vendor/htmx.min.js

.PHONY: run test check test-postgres bench screenshots setup clean chromium redis-server

run: $(VENV)/.runtime $(HTMX)
	$(VENV)/bin/flask --app app migrate
	$(VENV)/bin/flask --app app demo
	@echo "Penstock is serving on http://127.0.0.1:$(PORT)  (Ctrl-C to stop)"
	SECURE_COOKIES=0 PROPAGATION_WORKER_THREAD=1 MAIL_WORKER_THREAD=1 PUBLIC_URL=$(PUBLIC_URL) $(VENV)/bin/flask --app app run --host 127.0.0.1 --port $(PORT)

test: $(VENV)/.dev $(HTMX) chromium redis-server
	$(PY) -m pytest

# PNGs of every page, light and dark, desktop and phone, into screenshots/ (tools/screenshots.py).
screenshots: $(VENV)/.dev $(HTMX) chromium
	$(PY) -m tools.screenshots

# Neither Chromium nor Redis: only browser and slow tests use them.
check: $(VENV)/.dev $(HTMX)
	$(PY) -m pytest -q -m "not slow and not browser"

# The same suite on PostgreSQL: a throwaway server (Debian's postgresql package) for the run.
test-postgres: $(VENV)/.dev $(HTMX) chromium redis-server
	.ci/with-postgres $(PY) -m pytest

setup: $(VENV)/.dev $(HTMX)

# Every bench/*.py (not _-prefixed helpers) is a script; a failing one stops the run.
bench: $(VENV)/.bench $(HTMX) chromium
	@for script in bench/[!_]*.py; do $(PY) $$script || exit 1; echo; done

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

$(VENV)/.bench: requirements.txt requirements-bench.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements-bench.txt
	touch $(VENV)/.runtime $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(HTMX): node_modules/.package-lock.json
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js $@

# The browser tests drive Debian's Chromium; playwright cannot download browsers here.
chromium:
	@test -x "$${PENSTOCK_CHROMIUM:-/usr/bin/chromium}" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium' (or set PENSTOCK_CHROMIUM)"; exit 1; fi; }

# tests/test_shared_rate_limits.py starts its own throwaway Redis (Debian's redis-server).
redis-server:
	@test -x "$${PENSTOCK_REDIS_SERVER:-/usr/bin/redis-server}" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else echo "redis-server is missing: run 'sudo apt-get install redis-server' (or set PENSTOCK_REDIS_SERVER)"; exit 1; fi; }

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache
