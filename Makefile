# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash scripts/test.sh

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
