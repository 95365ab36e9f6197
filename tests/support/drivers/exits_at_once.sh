#!/bin/sh
# A driver that cannot start (tests/conformance/test_conformance_sim_launch.py): it complains like a Go binary given a
# flag it lacks, and exits at once.
echo "starting on $NODE_NAME"
echo "flag provided but not defined: -gpus" >&2
exit 2
