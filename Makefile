# The two commands: `make run` (the demo on http://127.0.0.1:5000) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wfapp
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test lint clean

run: $(VENV)/.installed instance/config.py
	$(FLASK) db upgrade
	$(FLASK) demo
	@echo "wfapp serves http://$(HOST):$(PORT)  (Ctrl+C stops it)"
	WFAPP_EMBEDDED_WORKER=true WFAPP_DEMO_FEED_INTERVAL=$${WFAPP_DEMO_FEED_INTERVAL:-60} \
		WFAPP_EXTERNAL_URL=$${WFAPP_EXTERNAL_URL:-http://$(HOST):$(PORT)} \
		$(FLASK) run --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# setuptools warns about every editable install of a package with mapped folders; noise
	@# for someone who only wants to run the app.
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[test,server]'
	touch $@

# A secret for the local demo, generated once; production sets WFAPP_SECRET_KEY instead.
instance/config.py:
	mkdir -p instance
	$(PYTHON) -c "import secrets; print('SECRET_KEY = ' + repr(secrets.token_hex(32)))" > $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
