# The only commands a user needs. `make test` builds its own virtualenv from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# $(call q,TEXT): TEXT as one single-quoted shell word (for paths such as the venv's, which may hold spaces).
q = '$(subst ','\'',$(1))'

# make conformance knobs. They reach the suite through the environment of one Python entry point
# (python -m conformance builds pytest's argv from them), never through the shell's word splitting:
# a value with spaces, quotes or ';' is one argument and nothing in it runs.
CLUSTER ?= auto
DRIVER_PROFILE ?= reference
GPUS ?=
KUBECONFIG_PATH ?=
# sim: the driver binary to run instead of the profile's sim.command (e.g. NVIDIA's gpu-kubelet-plugin);
# the variables a profile's sim section reads (NVIDIA_DRIVER_ROOT, MOCK_NVML_CONFIG_DIR, ...) reach it
# from make's command line through the environment.
SIM_DRIVER_COMMAND ?=
# local: the Kubernetes release (1.34 to 1.37; default 1.36) that make kube-bin builds and CLUSTER=local runs.
KUBE_VERSION ?=
# local: NODES=real runs a kubelet and containerd per node (root; runc, CNI plugins, iptables, busybox-static) instead
# of the sim's kubelets; the reference driver then goes in through its Helm chart as a DaemonSet.
NODES ?=
REPORT_DIR ?= reports
CONFORMANCE_ARGS ?=

.PHONY: help setup cel test lint unit conformance bench protos image chart clean kube-bin test-local compare-local

help:
	@echo "make conformance   run the GPU-sharing conformance suite (CLUSTER=auto|kind|existing|sim)"
	@echo "make test          lint + the project's own tests (builds .venv first)"
	@echo "make kube-bin      build etcd, Kubernetes, containerd and Helm for CLUSTER=local (KUBE_VERSION=1.36)"
	@echo "make test-local    the suite on a real control plane (CLUSTER=local) against sim's verdicts"
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
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# PYTEST_ARGS is split by Python's shlex, never by /bin/sh.
test: export PYTEST_ARGS := $(PYTEST_ARGS)
test: lint cel
	$(call q,$(BIN)/python) -c 'import os, shlex, sys, pytest; sys.exit(pytest.main(["-q", *shlex.split(os.environ["PYTEST_ARGS"])]))'

# Real Kubernetes binaries for CLUSTER=local: built once per release from the Go module proxy into
# ~/.cache/gpu-share-conformance/kube/v<release>/bin (etcd, the control plane, kubelet, kube-proxy) and
# ~/.cache/gpu-share-conformance/node/ (containerd, ctr, the runc shim, Helm, pause), then reused (exit 4
# with the fix when Go or the proxy is missing).
kube-bin: $(STAMP)
	$(call q,$(BIN)/python) -m localkube.build $(if $(KUBE_VERSION),--kube-version=$(KUBE_VERSION))

# The suite on --cluster local (reference driver and the mutants that matter most), same verdicts as sim,
# on the sim's nodes and on real ones (NODES=real; those tests need root, runc, CNI plugins, iptables, busybox-static).
test-local: export GSC_TEST_LOCAL := 1
test-local: export KUBE_VERSION := $(KUBE_VERSION)
test-local: kube-bin cel
	$(call q,$(BIN)/python) -m pytest -q -p no:randomly tests/local tests/localkube/test_localkube.py tests/sim/test_kubelet_remote.py

# The sim's scheduler and claim-controller tests against upstream's real control plane: each failure is a
# place where the sim decides differently (a report, not part of make test or CI).
compare-local: export GSC_CONTROL_PLANE := local
compare-local: export KUBE_VERSION := $(KUBE_VERSION)
compare-local: kube-bin cel
	$(call q,$(BIN)/python) -m pytest -q -rfEs -p no:randomly tests/sim/test_scheduler_behaviour.py tests/sim/test_controller_claims.py

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		drakit/api/dra_v1.proto drakit/api/dra_v1beta1.proto drakit/api/pluginregistration.proto

bench: $(STAMP) cel
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

conformance: export CONFORMANCE_CLUSTER := $(CLUSTER)
conformance: export CONFORMANCE_DRIVER_PROFILE := $(DRIVER_PROFILE)
conformance: export CONFORMANCE_GPUS := $(GPUS)
conformance: export CONFORMANCE_KUBECONFIG := $(KUBECONFIG_PATH)
conformance: export CONFORMANCE_REPORT_DIR := $(REPORT_DIR)
conformance: export CONFORMANCE_SIM_DRIVER_COMMAND := $(SIM_DRIVER_COMMAND)
conformance: export CONFORMANCE_KUBE_VERSION := $(KUBE_VERSION)
conformance: export CONFORMANCE_NODES := $(NODES)
conformance: export CONFORMANCE_ARGS := $(CONFORMANCE_ARGS)
conformance: $(STAMP) cel
	$(call q,$(BIN)/python) -m conformance

image:
	$(MAKE) -C deployments/container build

chart: $(STAMP)
	$(BIN)/python deployments/helm/package_chart.py --destination dist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache reports .hypothesis
