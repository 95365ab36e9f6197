"""Tests of the reference driver (driver/). Its harness (a driver process on a sim, a kubelet-side DRA
client) is tests/support/driver_harness.py; the sim fixtures are in tests/sim/conftest.py."""
