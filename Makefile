# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RERANKER_PORT ?= 8000
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: serve test venv clean

$(BIN)/reranker: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (see DESIGN.md)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/reranker

venv: $(BIN)/reranker

# serving.main deploys serve_config.yaml as `serve run` does and stops gracefully on SIGTERM or SIGINT
# (drain: new requests 503, requests in flight finish, impressions flushed; README "Stopping").
serve: venv
	@mkdir -p $${RERANKER_HOME:-var}
	sed "s/port: 8000/port: $(RERANKER_PORT)/" serve_config.yaml > $${RERANKER_HOME:-var}/serve_config.yaml
	exec $(BIN)/python -m serving.main $${RERANKER_HOME:-var}/serve_config.yaml

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
