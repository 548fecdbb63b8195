# grokemu: `make up` runs it on its embedded defaults, `make test` runs every test suite.
# Both create and fill the project virtualenv (.venv) on first use: only Python >= 3.10 and make are needed.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PYTEST ?= $(VPY) -m pytest
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
STAND := $(COMPOSE) -p grokemu -f compose/docker-compose.yml
# the venv is refreshed when the declared dependencies change
STAMP := $(VENV)/.grokemu-installed

.PHONY: up demo install venv lint test unit integration docker e2e compose example security bench bench-compose bench-queue bench-dev bench-floor \
        wheels stand stand-down clean

up: $(STAMP)
	$(VPY) -m grokemu up

demo: $(STAMP)
	$(VPY) -m grokemu up --demo

venv install: $(STAMP)

# A venv with pip (python3 -m venv); when this Python has no ensurepip (Debian without python3-venv), a venv without
# pip filled by this Python's own pip (`pip --python`, pip >= 22.3).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "grokemu needs Python >= 3.10")'
	@if [ ! -x $(VPY) ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv --without-pip $(VENV); }; fi
	@if $(VPY) -m pip --version >/dev/null 2>&1; then \
	  $(VPY) -m pip install -q --disable-pip-version-check -e '.[test]'; \
	elif $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	  $(PYTHON) -m pip --python $(VPY) install -q --disable-pip-version-check -e '.[test]'; \
	else echo "no pip for $(VENV): install python3-venv (Debian) or pip, then run make again" >&2; exit 1; fi
	@touch $@
	@echo "$(VENV) ready: grokemu and its test dependencies"

# the lint and type gate (issue 19): ruff ([tool.ruff]), mypy over grokemu/ ([tool.mypy]), the layer contracts
# ([tool.importlinter], also checked by tests/unit/test_layers.py)
lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(PYTEST) tests samples

unit: $(STAMP)
	$(PYTEST) tests/unit

integration: $(STAMP)
	$(PYTEST) tests/integration

docker: $(STAMP)
	$(PYTEST) tests/docker

e2e: $(STAMP)
	$(PYTEST) tests/e2e

compose: $(STAMP)
	$(PYTEST) tests/compose

example: $(STAMP)
	$(PYTEST) samples

security: $(STAMP)
	$(PYTEST) tests/security

bench: $(STAMP)
	$(VPY) benchmarks/bench_startup.py

bench-compose: $(STAMP)
	$(VPY) benchmarks/bench_compose.py

# grokemu dev: a saved change of app.py to the new answer through fetchProxy, minus the build (target <= 1.5 s)
bench-dev: $(STAMP)
	$(VPY) benchmarks/bench_dev.py

# queue functions through grokemu vs Celery's send_task to the same broker and worker (celery: the bench extra)
bench-queue: $(STAMP)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(VPY) benchmarks/bench_queue.py

# the least a Python relay costs against nginx, and grokemu's relay loop beside it (uvloop: the bench extra)
bench-floor: $(STAMP)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(VPY) benchmarks/bench_loop_floor.py

# the compose stand (compose/): wheelhouse on the host, image built offline, API on 127.0.0.1:8080
wheels: $(STAMP)
	$(VPY) compose/wheelhouse.py

# compose/.env: the stand's broker password, made once (random; compose reads the file next to the compose file)
compose/.env:
	@umask 077; echo "GROKEMU_BROKER_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(24))')" > $@

stand: wheels compose/.env
	$(STAND) up -d --build
	@echo "grokemu stand: http://localhost:$${GROKEMU_PORT:-8080}/  (make stand-down removes it)"

# reset first: grokemu removes its plugin containers (off the network) and images, then compose removes the rest
stand-down: $(STAMP) compose/.env
	-$(VPY) -c "from grokemu.client import Client; Client('http://localhost:$${GROKEMU_PORT:-8080}').request('POST', '/_grokemu/reset', timeout=120)"
	$(STAND) down -v --rmi local --remove-orphans

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache compose/wheels
