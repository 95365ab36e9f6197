"""Publishes a memory requestPolicy whose default is the minimum, not the whole GPU: a claim without a
memory request then takes a sliver and the GPU is no longer exclusive to it."""

import sys

import driver.slices
from driver.__main__ import main

_original = driver.slices.memory_range


def memory_range(memory, settings, device):
    policy = _original(memory, settings, device)
    policy["default"] = policy["validRange"]["min"]
    return policy


driver.slices.memory_range = memory_range

if __name__ == "__main__":
    sys.exit(main())
