"""Simulated kubelet: plugin registration, DRA gRPC client, CDI resolution and pod processes (issue 7)."""
