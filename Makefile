# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
# der-serve's tritonserver cache: inside the checkout for make test (CI starts clean), ~/.cache elsewhere.
export DER_TRITON_CACHE ?= $(abspath build/triton)

.PHONY: demo test venv clean cpp

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh

# The C++ SDK (runtime/cpp) into build/cpp; installs its apt packages and ONNX Runtime SDK on first use.
cpp: $(STAMP)
	bash scripts/cpp_build.sh

test: $(STAMP) cpp
	$(BIN)/der-serve install >/dev/null  # a real tritonserver + its numpy<2 Python, for tests/serve
	PATH=$(abspath $(BIN)):$$PATH bash scripts/test.sh
	ctest --test-dir build/cpp --output-on-failure -j2
	PYTHON=$(abspath $(BIN))/python bash scripts/fuzz.sh  # libFuzzer + ASan/UBSan on the C++ image decoders, 60 s

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
