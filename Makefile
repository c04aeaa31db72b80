# Everything installs itself into .venv on first use: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORK ?= build

.PHONY: install test demo bench eval lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[export,dev,test]'
	touch $(STAMP)

install: $(STAMP)

# -rs lists every skip; --strict-skips fails the run on a skip not marked as expected (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -rs --strict-skips tests

demo: $(STAMP)
	$(PY) scripts/demo.py --work $(WORK)

eval: $(STAMP)
	$(PY) scripts/eval_minilm.py --work $(WORK) $(if $(DATA),--data $(DATA)) $(if $(FETCH),--fetch)
	$(PY) scripts/eval_chunking.py --work $(WORK) $(if $(DATA),--data $(DATA))

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/run.py --work $(WORK)/bench
	$(PY) bench/moe_layer.py --work $(WORK)/bench --out $(WORK)/bench/moe_layer.json
	$(PY) bench/batching.py --bundle $(WORK)/bench/bundles/v15 --out $(WORK)/bench/batching.json
	$(PY) bench/int8_kernels.py --out $(WORK)/bench/int8_kernels.json
	$(PY) bench/moe_vs_dense.py --work $(WORK)/bench --out $(WORK)/bench/moe_vs_dense.json
	# 10,000 embed calls of random shapes, RSS sampled: fails if RSS grows past 5% (hours on 2 cores)
	$(PY) bench/soak.py --work $(WORK)/bench --out $(WORK)/bench/soak.json
	$(PY) bench/load_memory.py --work $(WORK)/bench --out $(WORK)/bench/load_memory.json
	$(PY) bench/serve.py --work $(WORK)/bench --out $(WORK)/bench/serve.json
	# infinity-emb (its own pinned venv under $(WORK)/bench/venvs, built on first use) against edge-embed serve on MiniLM
	$(PY) bench/serve.py --work $(WORK)/bench --peer infinity --out $(WORK)/bench/serve_infinity.json
	$(PY) bench/serve.py --work $(WORK)/bench --peer infinity --peer-onnx fp32 --out $(WORK)/bench/serve_infinity_fp32.json
	$(PY) bench/openvino_paths.py --work $(WORK)/bench --out $(WORK)/bench/openvino_paths.json
	$(PY) bench/local_docs.py --bundle $(WORK)/bench/bundles/v15 --out $(WORK)/bench/local_docs.json

lint: $(STAMP)
	$(VENV)/bin/ruff check edge_embed export tests bench scripts examples

clean:
	rm -rf $(VENV) $(WORK)
