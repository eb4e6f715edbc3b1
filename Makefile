# The README's two commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench clean k8s-binaries e2e

# constraints.txt pins every version: a fresh machine installs what the suite last passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmroute-proxy demo

# The tier-B tests (tests/kube) run a real kube-apiserver: its binaries are built once per machine first.
test: $(STAMP) k8s-binaries lint unit

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check proxy operator tests bench e2e
	$(BIN)/mypy
	$(BIN)/lint-imports

# Kubernetes v1.20 binaries from Debian's source package for the real-API-server tests (tier B) and the
# single-node cluster (tier C). Built once per machine (7-8 min on 2 cores), then read from ~/.cache/llmroute.
k8s-binaries:
	e2e/cluster/build-binaries.sh

# Tier C: a real single-node cluster on this machine (root; see e2e/run.sh and the README).
e2e: $(STAMP)
	e2e/run.sh

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
