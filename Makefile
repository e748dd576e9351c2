# Two commands do everything on a fresh machine (each creates .venv when missing):
#   make test       unit tests + every notebook under nbval (smoke-sized parameters)
#   make pipeline   runs all notebooks with the cpu profile into runs/cpu (report.md, metrics.json)
# and, before a release: make test-browser (the notebooks in JupyterLab in a real browser; minutes)
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

.PHONY: setup test test-browser pipeline lab bench strip clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# The training, student and pseudo-labelling tests run a second time with the other arithmetic: bf16 autocast
# where the first run was float32 (CPUs without native bf16) and float32 where it was bf16, so the suite that
# passes here passes on both kinds of CPU (DALIB_CPU_BF16=0/1 from the caller sets the first run's). The second
# pass leaves out the slow end-to-end runs (torchrun, SIGKILL): they pin float32 or repeat what the fast ones
# check in both arithmetics (exact resume, the student's step).
PRECISION_TESTS := tests/test_train.py tests/test_student.py tests/test_pseudo_label.py

# one BLAS/OpenMP thread per test worker: JOBS workers already fill the cores
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(JOBS) --dist loadfile tests notebooks --nbval-lax
	@other=$$($(BIN)/python -c "from dalib.distributed import cpu_has_native_bf16; print(int(not cpu_has_native_bf16()))"); \
	  echo "== $(PRECISION_TESTS) again with DALIB_CPU_BF16=$$other"; \
	  DALIB_CPU_BF16=$$other OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
	  $(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not slow" $(PRECISION_TESTS)

pipeline: setup
	$(BIN)/python -m dalib.pipeline --profile $(PROFILE) --run-dir $(RUN_DIR)

lab: setup
	$(BIN)/jupyter lab notebooks

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Clears outputs and execution counts, except the reference outputs of the `# NBVAL_CHECK_OUTPUT` cells
# (their `keep_output` cell metadata), which nbval compares on every `make test`. nbval skips a reference
# without an execution count, so those cells get back the count of a top-to-bottom run (stable diffs).
strip: setup
	$(BIN)/nbstripout notebooks/*.ipynb
	$(BIN)/python -c "$$STRIP_COUNTS" notebooks/*.ipynb

define STRIP_COUNTS
import sys, nbformat
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    new = [n if c.metadata.get('keep_output') else None for n, c in enumerate(code, 1)]
    if new != [c.execution_count for c in code]:
        for c, n in zip(code, new):
            c.execution_count = n
        nbformat.write(nb, path)
endef
export STRIP_COUNTS

# The course in a real browser: JupyterLab on a local port, driven by Playwright through Debian's chromium
# (installed with apt when missing; no browser is ever downloaded). Not part of `make test`: it takes
# minutes (see README). Run it before a release and after changing widgets, tables or notebook metadata.
CHROMIUM ?= /usr/bin/chromium
test-browser: setup
	@test -x $(CHROMIUM) || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }
	DALIB_BROWSER_TEST=1 CHROMIUM=$(CHROMIUM) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
	  $(BIN)/python -m pytest -p no:xdist -p no:cacheprovider -v tests/browser

clean:
	rm -rf $(VENV) runs .pytest_cache
