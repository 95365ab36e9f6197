"""Publishes GPUs without allowMultipleAllocations (and so without a requestPolicy, which needs it)."""

import sys

import driver.slices
from driver.__main__ import main

_original = driver.slices.device_entry


def device_entry(gpu, settings):
    entry = _original(gpu, settings)
    entry.pop("allowMultipleAllocations", None)
    entry["capacity"]["memory"].pop("requestPolicy", None)
    return entry


driver.slices.device_entry = device_entry

if __name__ == "__main__":
    sys.exit(main())
