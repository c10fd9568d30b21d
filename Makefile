VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install test test-deps lint run web bench bench-e2e bench-cluster fuzz clean

# Every install goes through uv.lock (exact versions and hashes, all platforms): uv, pinned here,
# is bootstrapped into the venv with pip, then syncs the venv to the lock without re-resolving.
# After editing pyproject.toml's dependencies: $(VENV)/bin/uv lock, and commit uv.lock.
UV_VERSION := 0.13.9
UV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv
SYNC := $(UV) sync --frozen --inexact --quiet

$(VENV)/bin/uv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock $(VENV)/bin/uv
	$(SYNC) --extra dev
	touch $(STAMP)

install: $(STAMP)

# make test sets up a fresh machine first: scripts/test-deps installs the missing system
# packages the suite runs (redis-server, Node and npm, nginx, tmux...) with apt-get when it runs
# as root, or stops naming them; the official JavaScript client's npm packages are installed by
# the tests themselves (npm ci in tests/clients/js/, from its lockfile).
test-deps:
	scripts/test-deps

test: $(STAMP) test-deps
	$(PY) -m pytest $(ARGS)

# Hostile traffic (generated Engine.IO/Socket.IO sessions, websocket and long-polling) against
# a gateway process beside a canary app/runner pair, for FUZZ_SECONDS (default 60); the seed
# is printed, FUZZ_SEED=<n> replays a run. make test runs the same for 20 s.
FUZZ_SECONDS ?= 60
FUZZ_SEED ?=
fuzz: $(STAMP) test-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -s -p no:cacheprovider \
		-o timeout=$$(( $(FUZZ_SECONDS) * 3 + 300 )) \
		tests/scenarios/test_fuzz_gateway.py::test_generated_hostile_traffic_beside_a_canary_pair

lint: $(STAMP)
	$(VENV)/bin/ruff check pairing gateway pairing_client tests bench examples
	$(VENV)/bin/ruff format --check pairing gateway pairing_client tests bench examples
	$(VENV)/bin/mypy

# The browser pages (web/: sources, package-lock.json) into gateway/web/static, which is
# committed and shipped in the package: `make run` needs no Node. Rebuild after changing web/.
web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

# Embedded memory:// store unless REDIS_URL is given: make run REDIS_URL=redis://127.0.0.1:6379/0
REDIS_URL ?= memory://
run: $(STAMP)
	$(VENV)/bin/pairing-gateway --config config.yaml --redis-url $(REDIS_URL)

# Benchmarks: make bench measures with the official socket.io-client (load-generator kit in
# BENCH_KIT, default ~/.cache/pairing-reference: bench/compare.sh + bench/load.js) and writes
# docs/benchmarks.md; BENCH_REFERENCE="<command>" measures a second gateway of the same contract
# in the same session (alternating runs) and reports the ratios. Options: BENCH_ARGS="--runs 1
# --seconds 5" (python -m bench.official --help).
BENCH_ARGS ?=
BENCH_E2E_ARGS ?=
BENCH_CLUSTER_ARGS ?=
BENCH_REFERENCE ?=
BENCH_REFERENCE_LABEL ?= reference

bench: $(STAMP)
	$(PY) -m bench.official --reference "$(BENCH_REFERENCE)" --reference-label "$(BENCH_REFERENCE_LABEL)" $(BENCH_ARGS)
	$(PY) -m bench.e2e $(BENCH_E2E_ARGS)

# The relay with end-to-end encrypted clients (clients/js) beside plain ones, alone (about 2
# min; its own section of docs/benchmarks.md). BENCH_E2E_ARGS="--runs 1 --seconds 5".
bench-e2e: $(STAMP)
	$(PY) -m bench.e2e $(BENCH_E2E_ARGS)

# Redis CPU per heartbeat and per relayed message, one Redis beside a 3-master cluster: the
# services alone (bench.cluster: 3 runs of each store taking turns, about 3 min), then under
# the official client from the kit in BENCH_KIT (bench.cluster_official: side by side, 1-3
# replicas, 20,000 idle connections; about 10 min; BENCH_CLUSTER_ARGS="--runs 1
# --idle-clients 2000" for a shorter run); each writes its own section of docs/benchmarks.md
bench-cluster: $(STAMP)
	$(PY) -m bench.cluster $(BENCH_ARGS)
	$(PY) -m bench.cluster_official $(BENCH_CLUSTER_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
