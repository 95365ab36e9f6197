"""Tests of the conformance suite itself. Runs of the whole suite go through tests/support/suite.py
(run_suite); the broken drivers it must catch are tests/support/mutants, the recording stand-ins for
docker/kind/helm/kubectl tests/support/standins."""
