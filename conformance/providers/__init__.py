"""Cluster providers: each brings up (or finds) a cluster and deploys the driver under test."""
