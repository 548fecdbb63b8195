# grokemu: `make up` runs it on its embedded defaults, `make test` runs every test suite.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: up install test unit integration docker e2e security bench clean

up:
	$(PYTHON) -m grokemu up

install:
	$(PYTHON) -m pip install -e '.[test]'

test:
	$(PYTEST) tests

unit:
	$(PYTEST) tests/unit

integration:
	$(PYTEST) tests/integration

docker:
	$(PYTEST) tests/docker

e2e:
	$(PYTEST) tests/e2e

security:
	$(PYTEST) tests/security

bench:
	$(PYTHON) benchmarks/bench_startup.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
