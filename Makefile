# Every target bootstraps .venv from the pinned constraints when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean acapy fuzz

$(STAMP): pyproject.toml constraints.txt build-constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'pip==26.3'
	$(BIN)/python -m pip install -q -c constraints.txt --build-constraint build-constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cartera run

# The ACA-Py sidecar (issue 9) lives in its own environment: it pins Pydantic 1. ACA-Py 0.12.8 declares
# Python >= 3.9: python3.11 (what Dockerfile.acapy uses) when present, else python3.12, then python3.13.
# `make ACAPY_PYTHON=/path/to/python acapy` picks one explicitly.
ACAPY_PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.13,$(if $(shell command -v $(p) 2>/dev/null),$(p))))
ACAPY_VENV := .venv-acapy
ACAPY_STAMP := $(ACAPY_VENV)/.installed

$(ACAPY_STAMP): aries/constraints-acapy.txt
	@if [ -z "$(ACAPY_PYTHON)" ]; then \
	    echo "make: no python3.11, python3.12 or python3.13 on PATH for the ACA-Py environment ($(ACAPY_VENV));" >&2; \
	    echo "      install one, or run: make ACAPY_PYTHON=/path/to/python3.x acapy" >&2; exit 1; fi
	@test "$(ACAPY_PYTHON)" = python3.11 || test -x $(ACAPY_VENV)/bin/python || \
	    echo "make: python3.11 not found; building $(ACAPY_VENV) with $(ACAPY_PYTHON) (ACA-Py 0.12.8 needs >= 3.9)"
	test -x $(ACAPY_VENV)/bin/python || $(ACAPY_PYTHON) -m venv $(ACAPY_VENV)
	$(ACAPY_VENV)/bin/python -m pip install -q -c aries/constraints-acapy.txt 'aries-cloudagent[askar,bbs]'
	touch $(ACAPY_STAMP)

acapy: $(ACAPY_STAMP)

# One pytest worker more than there are cores: much of the suite waits on servers, agents and
# subprocesses starting, so with a worker per core the cores idle about a fifth of the time.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: $(STAMP) $(ACAPY_STAMP)
	bash scripts/ensure-test-deps.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -q --durations=15

# Long fuzzing profile (issue 10): schemathesis against every service on loopback with many examples
# and stateful sequences, then a summary per service. CARTERA_FUZZ_EXAMPLES=N sets the depth (300).
fuzz: $(STAMP)
	CARTERA_FUZZ=long $(BIN)/python -m pytest tests/fuzz/test_openapi_fuzz.py -n auto -q -p no:randomly --timeout 3600

lint: $(STAMP)
	$(BIN)/ruff check .

# Issue 2's core benchmark, then issue 4's issuance benchmark on SQLite and on PostgreSQL (durable: fsync
# and synchronous_commit on) at 1, 8 and 32 wallets; about 3-4 minutes in all. The issuance run exits
# non-zero when a flow failed or a credential did not verify. BENCH_ISSUANCE_ARGS overrides its options.
BENCH_ISSUANCE_ARGS ?= --seconds 10 --workers 2 --wallets 1,8,32 --backends sqlite,postgresql
bench: $(STAMP)
	bash scripts/ensure-test-deps.sh postgresql
	$(BIN)/python bench/core.py
	$(BIN)/python bench/issuance.py $(BENCH_ISSUANCE_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
