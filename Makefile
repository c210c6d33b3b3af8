VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Run again in float64 (jax_enable_x64): every module keeps the caller's dtype. The language,
# distributions, integrators, kernels and GFlowNets run whole; the inference packages run their
# dtype tests (named float64 / dtype / x64 / keep), to keep CI within its 30 minutes.
X64_TESTS := tests/core tests/distributions tests/dynamics tests/gfn tests/test_kernels.py
X64_DTYPE_TESTS := tests/vi tests/mc tests/diffusion tests/flows

.PHONY: demo test docs docs-check executed-notebooks bench bench-quick clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) examples/showcase.py

# The float32 pass runs the notebooks on copies in $(EXECUTED_DIR) (nbmake --overwrite), so
# the executed copies, outputs and figures included, are left there for the docs build: the
# notebooks run once per CI run and stay output-free in git. MPLBACKEND is unset there so that
# the notebooks' kernels draw inline figures (matplotlib picks Agg by itself without a display;
# tests/train/test_plots.py sets Agg). The run ends with the docs check.
test: $(STAMP)
	rm -rf $(EXECUTED_DIR) && mkdir -p $(EXECUTED_DIR) && cp $(NOTEBOOKS) $(EXECUTED_DIR)/
	env -u MPLBACKEND $(PY) -m pytest -n 2 --dist loadfile -q --nbmake --overwrite $(EXECUTED_DIR) tests
	JAX_ENABLE_X64=1 MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" $(X64_TESTS)
	JAX_ENABLE_X64=1 MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" \
		-k "float64 or dtype or x64 or keep" $(X64_DTYPE_TESTS)
	$(MAKE) --no-print-directory docs-check

# ---- documentation site (docs/): Sphinx + MyST-NB; see docs/conf.py -------------------------
DOCS_STAMP := $(VENV)/.installed-docs
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED_DIR := build/notebooks
EXECUTED := $(NOTEBOOKS:notebooks/%=$(EXECUTED_DIR)/%)
CHROMIUM := /usr/bin/chromium
# Serial on purpose: with -j, Sphinx forks after JAX has started its threads (a deadlock risk).
SPHINX := env -u MPLBACKEND $(PY) -m sphinx -b html -q

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

# An executed copy of a notebook that has none yet, or whose notebook changed since (make docs
# on a fresh clone). A failed run leaves no copy behind, so the next call tries again.
$(EXECUTED_DIR)/%.ipynb: notebooks/%.ipynb | $(STAMP)
	@mkdir -p $(EXECUTED_DIR)
	cp $< $@
	env -u MPLBACKEND $(PY) -m pytest -q -p no:cacheprovider --nbmake --overwrite $@ || { rm -f $@; exit 1; }

executed-notebooks: $(EXECUTED)

# Headless Chromium for docs/tests/test_site.py, from Debian's packages (Playwright's own
# browser downloads cannot run here); needs root, as CI has.
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "$(CHROMIUM) is missing: install Debian's chromium (sudo apt-get install chromium) and run again"; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

docs: $(DOCS_STAMP)
	$(MAKE) --no-print-directory -j 2 executed-notebooks
	$(SPHINX) docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# The site from scratch with warnings as errors, then its checks: internal links and anchors,
# a reference page per public name, and two pages opened in Chromium (screenshots in
# docs/_build/screenshots/).
docs-check: $(DOCS_STAMP) | $(CHROMIUM)
	$(MAKE) --no-print-directory -j 2 executed-notebooks
	$(SPHINX) -E -W docs docs/_build/html
	$(PY) -m pytest -q -p no:cacheprovider docs/tests

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench-quick: $(BENCH_STAMP)
	$(PY) benchmarks/run_all.py --quick

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache demo_output build
	rm -rf docs/_build docs/api/generated docs/api/probgen*.rst docs/api/all.rst docs/tutorials/*.ipynb
