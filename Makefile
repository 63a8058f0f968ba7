# Two commands do all set-up on a fresh clone: `make test` and `make report`.
# Each creates or updates .venv; a second run reinstalls only when
# pyproject.toml changed (the stamp file is older than it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.scalelab-installed

.PHONY: test test-slow report venv bench-torch bench-hf bench-llamacpp clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the slow tests (the regression gate's proof: real asv runs in a
# temporary clone, a few minutes). `make test` runs them too; pass
# PYTEST_ARGS='-m "not slow"' to leave them out while iterating.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

report: $(STAMP)
	$(BIN)/scalelab report $(REPORT_ARGS)

# Optional: PyTorch as a benchmark peer (a local CPU wheel on this machine).
bench-torch: $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"

# Optional: Hugging Face transformers on PyTorch, the end-to-end peer of the live engine.
bench-hf: $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0" transformers

# Optional: llama.cpp through llama-cpp-python (compiled from source with cmake and the C++
# compiler for this CPU: 10-20 minutes on 2 cores), and gguf, which writes our weights for it.
# LLAVA_BUILD=OFF skips the multimodal library, which the benchmark does not use.
bench-llamacpp: $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
		$(BIN)/python -m pip install --quiet "llama-cpp-python==0.3.36" "gguf==0.19.0"

clean:
	rm -rf $(VENV) .asv reports/output
