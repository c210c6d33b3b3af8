VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Run again in float64 (jax_enable_x64): every module keeps the caller's dtype. The language,
# distributions, integrators, kernels and GFlowNets run whole; the inference packages run their
# dtype tests (named float64 / dtype / x64 / keep), to keep CI within its 30 minutes.
X64_TESTS := tests/core tests/distributions tests/dynamics tests/gfn tests/test_kernels.py
X64_DTYPE_TESTS := tests/vi tests/mc tests/diffusion tests/flows

.PHONY: demo test bench bench-quick clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) examples/showcase.py

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadfile -q --nbmake notebooks tests
	JAX_ENABLE_X64=1 MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" $(X64_TESTS)
	JAX_ENABLE_X64=1 MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" \
		-k "float64 or dtype or x64 or keep" $(X64_DTYPE_TESTS)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench-quick: $(BENCH_STAMP)
	$(PY) benchmarks/run_all.py --quick

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache demo_output
