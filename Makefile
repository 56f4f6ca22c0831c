# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-imaging bench-everyday bench-quality bench-quality-oracle bench-migration bench-migration-scale clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

## Set up everything, then run the main job on the embedded defaults (no services needed).
demo: $(VENV)/.installed
	$(BIN)/python manage.py migrate --verbosity 0
	$(BIN)/python manage.py demo

## The whole test suite; starts its own Redis, moto_server and Celery worker when needed.
test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-imaging: $(VENV)/.installed-bench
	$(BIN)/python bench/imaging.py

bench-everyday: $(VENV)/.installed-bench
	$(BIN)/python bench/everyday.py

bench-quality: $(VENV)/.installed-bench
	$(BIN)/python bench/quality.py

bench-quality-oracle: $(VENV)/.installed-bench
	$(BIN)/python bench/quality.py --oracle

bench-migration: $(VENV)/.installed-bench
	$(BIN)/python bench/migration.py

bench-migration-scale: $(VENV)/.installed-bench
	$(BIN)/python bench/migration_scale.py

clean:
	rm -rf var/
