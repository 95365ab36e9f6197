"""Tests of localkube/ (the real control plane from local processes) that need no Kubernetes binaries;
the runs against binaries are tests/local (make test-local)."""
