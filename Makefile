# Two commands do everything on a fresh machine (each creates .venv when missing):
#   make test       unit tests + every notebook under nbval (smoke-sized parameters)
#   make pipeline   runs all notebooks with the cpu profile into runs/cpu (report.md, metrics.json)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch/torchvision pair is installed first so that pip resolves a matching pair.
# Override for another platform or CUDA build, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.dalib-installed
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
# Worker processes for the test suite (pytest-xdist); `make test JOBS=0` runs in one process.
JOBS ?= 2

.PHONY: setup test pipeline lab bench strip clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# one BLAS/OpenMP thread per test worker: JOBS workers already fill the cores
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(JOBS) --dist loadfile tests notebooks --nbval-lax

pipeline: setup
	$(BIN)/python -m dalib.pipeline --profile $(PROFILE) --run-dir $(RUN_DIR)

lab: setup
	$(BIN)/jupyter lab notebooks

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

strip: setup
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) runs .pytest_cache
