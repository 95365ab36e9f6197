"""Publishes productName under NVIDIA's domain (a fork that forgot to rename it), so selectors written
against the driver's own domain cannot see the product."""

import sys

import driver.slices
from driver.__main__ import main

_original = driver.slices.device_entry


def device_entry(gpu, settings):
    entry = _original(gpu, settings)
    entry["attributes"]["gpu.nvidia.com/productName"] = entry["attributes"].pop("productName")
    return entry


driver.slices.device_entry = device_entry

if __name__ == "__main__":
    sys.exit(main())
