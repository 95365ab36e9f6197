# The only commands a user needs. `make test` builds its own virtualenv from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# make conformance knobs (forwarded to the pytest plugin)
CLUSTER ?= auto
DRIVER_PROFILE ?= reference
GPUS ?=
KUBECONFIG_PATH ?=
REPORT_DIR ?= reports
CONFORMANCE_ARGS ?=

.PHONY: help setup cel test lint unit conformance bench protos image chart clean

help:
	@echo "make conformance   run the GPU-sharing conformance suite (CLUSTER=auto|kind|existing|sim)"
	@echo "make test          lint + the project's own tests (builds .venv first)"
	@echo "make bench         run the benchmarks (prints figures)"
	@echo "make image         build the reference driver image (see deployments/container)"
	@echo "make chart         lint and package the reference driver's Helm chart into dist/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,kind]'
	@touch $(STAMP)

# The sim's CEL library (upstream's DRA CEL environment, Go, sim/celgo): built once per source version
# into ~/.cache/gpu-share-conformance/ (needs Go; exit 4 with the fix when it is missing).
cel: $(STAMP)
	$(BIN)/python -m sim.celbuild

setup: $(STAMP) cel

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint cel
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		driver/api/dra_v1.proto driver/api/dra_v1beta1.proto driver/api/pluginregistration.proto

bench: $(STAMP) cel
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

conformance: $(STAMP) cel
	$(BIN)/python -m pytest conformance/scenarios -p no:hypothesispytest \
		--cluster=$(CLUSTER) --driver-profile=$(DRIVER_PROFILE) \
		$(if $(GPUS),--gpus=$(GPUS)) $(if $(KUBECONFIG_PATH),--kubeconfig=$(KUBECONFIG_PATH)) \
		--report-dir=$(REPORT_DIR) --junitxml=$(REPORT_DIR)/junit.xml $(CONFORMANCE_ARGS)

image:
	$(MAKE) -C deployments/container build

chart: $(STAMP)
	$(BIN)/python deployments/helm/package_chart.py --destination dist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache reports .hypothesis
