"""Publishes every GPU's memory at twice its real size."""

import dataclasses
import sys

import driver.slices
from driver.__main__ import main

_original = driver.slices.device_entry


def device_entry(gpu, settings):
    return _original(dataclasses.replace(gpu, memory_bytes=gpu.memory_bytes * 2), settings)


driver.slices.device_entry = device_entry

if __name__ == "__main__":
    sys.exit(main())
