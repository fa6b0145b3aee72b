# wac: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROTOS := $(wildcard proto/wac/v1/*.proto proto/wac/internal/v1/*.proto)
JS := clients/js

.PHONY: setup gen check-gen lint-proto run test test-py test-js lint bench clean sdk system-deps

setup: $(VENV)/.installed build/wac.pb sdk

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

# Python stubs (wac/v1, wac/internal/v1) and Envoy's descriptor set (wac.v1
# alone) are built, never committed, so they cannot drift from the .proto
# files.
build/wac.pb: $(PROTOS) tools/gen_proto.py $(VENV)/.installed
	$(PY) tools/gen_proto.py

gen: build/wac.pb
	$(PY) tools/gen_openapi.py
	if [ -d $(JS)/node_modules ]; then cd $(JS) && npm run -s gen; fi

# Committed artefacts generated from the protos must match them.
check-gen: build/wac.pb
	$(PY) tools/gen_openapi.py --check
	cd $(JS) && npm run -s gen:check

# buf's lint of the contract (buf.yaml says which rules and why), and its
# breaking-change check against the protos of the previous commit. buf comes
# from the registry as a devDependency of clients/js.
lint-proto: setup
	$(PY) tools/lint_proto.py

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

sdk: $(JS)/node_modules/.installed build/wac.pb
	cd $(JS) && npm run -s build

# The system packages of deps/debian.txt (Kamailio, rtpengine, ...): installed
# when missing as root on Debian, else only named; wac runs without them.
system-deps:
	deps/install.sh

run: system-deps setup
	$(VENV)/bin/wac run --demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core

test: setup lint lint-proto check-gen test-js test-py

test-py: setup
	$(VENV)/bin/pytest -q

test-js: setup
	cd $(JS) && npm test --silent

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build wac/v1 $(VENV) $(JS)/node_modules $(JS)/dist
