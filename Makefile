# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv and installs what it needs (pinned in constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint floors notebooks docs bench clean

# pip prints a line per package as it goes (its progress), once: later runs reuse .venv
$(STAMP): pyproject.toml constraints.txt
	@echo "neuralab: installing into $(VENV): PyTorch (CPU), the project and its tools (a few minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e '.[dev,rl,sweep,notebooks,docs]'
	touch $(STAMP)
	@echo "neuralab: installed"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/neuralab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks docs/hooks
	$(BIN)/ruff format --check src tests benchmarks notebooks docs/hooks

# every tutorial in notebooks/, executed as a notebook (make test runs them too)
notebooks: $(STAMP)
	$(BIN)/python -m pytest -q tests/notebooks

# Declared floors hold: a separate venv with every dependency at its pyproject.toml floor
# (constraints-floors.txt; torch excepted, only the CPU wheel 2.13.0 is here), then lint and
# the fast tests with them. Rebuilt from scratch whenever pyproject.toml or the floors change.
FLOORS_VENV := .venv-floors
FLOORS_STAMP := $(FLOORS_VENV)/.installed
FLOORS_TESTS ?= tests/unit tests/integration/test_sweep.py tests/integration/test_rl_cli.py

$(FLOORS_STAMP): pyproject.toml constraints-floors.txt
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-floors.txt -e '.[dev,rl,sweep]'
	touch $(FLOORS_STAMP)

floors: $(FLOORS_STAMP)
	$(FLOORS_VENV)/bin/ruff check src tests benchmarks
	$(FLOORS_VENV)/bin/ruff format --check src tests benchmarks
	$(FLOORS_VENV)/bin/python -m pytest -q -m "not slow" $(FLOORS_TESTS)

# the documentation site into site/, with --strict (a broken link or reference fails); it runs
# every notebook to render its pictures, from build/docs-runs/ so their runs land there;
# NEURALAB_DOCS_EXECUTE=false renders them without running (seconds, no pictures)
docs: $(STAMP)
	mkdir -p build/docs-runs
	cd build/docs-runs && NO_MKDOCS_2_WARNING=1 ../../$(BIN)/mkdocs build --strict \
		--config-file ../../mkdocs.yml

bench: $(STAMP)
	$(BIN)/python benchmarks/vision.py

clean:
	rm -rf $(VENV) $(FLOORS_VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache
