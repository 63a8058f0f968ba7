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

# Two phases, one command. First every test except those marked `exclusive`,
# spread over TEST_WORKERS processes (pytest-xdist; a test file stays on one
# worker, so its module fixtures are built once). Then the exclusive ones (the
# regression gate's proof: real asv timings) alone, so no other test shares the
# machine with them. PYTEST_ARGS goes to both; a phase whose tests PYTEST_ARGS
# all deselects exits 5 (pytest's "no tests"), which fails only if both do.
# Any other non-zero code of either phase is make's exit code; phase 2 is
# skipped when phase 1 did not get to run its tests (usage error, interrupt).
# TEST_WORKERS=0 runs phase 1 in one process (no xdist workers).
TEST_WORKERS ?= auto

test: $(STAMP)
	@rc1=0; rc2=0; \
	echo "make test, phase 1 of 2: all but the exclusive tests, $(TEST_WORKERS) workers"; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --exclusive=skip $(PYTEST_ARGS) || rc1=$$?; \
	case $$rc1 in 0|1|5) \
		echo "make test, phase 2 of 2: the exclusive tests alone (phase 1 exited $$rc1)"; \
		$(BIN)/python -m pytest --exclusive=only $(PYTEST_ARGS) || rc2=$$?;; \
	esac; \
	for rc in $$rc1 $$rc2; do \
		if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	done; \
	if [ $$rc1 -eq 5 ] && [ $$rc2 -eq 5 ]; then exit 5; fi

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
