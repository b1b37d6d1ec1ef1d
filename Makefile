# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow venv clean results bench bench-quick

venv: $(STAMP)

# torch is pinned through constraints.txt (a local CPU wheel here; any other resolution pulls CUDA).
# fastmri is a test reference only; its torchvision/lightning pins are unusable, hence --no-deps.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[anatomy,plot,test]'
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt --no-deps fastmri==0.3.0
	touch $@

demo: $(STAMP)
	$(BIN)/reconguard demo

test: $(STAMP)
	bash scripts/system_deps.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

# Every number in docs/results.md (a few hours on a 2-core CPU).
results: $(STAMP)
	bash scripts/results_core.sh
	bash scripts/results_attacks.sh
	bash scripts/results_defenses.sh
	bash scripts/results_cyclic.sh
	$(BIN)/reconguard audit scripts/results_zoo.yaml
	$(BIN)/python scripts/results_zoo_tables.py runs/zoo

# Speed/memory benchmarks vs reference implementations (docs/benchmarks.md); BENCH_ARGS="--device cuda" on a GPU.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)
