"""Unprepare forgets the claim but leaves its CDI spec file on the node."""

import sys

import driver.cdi
from driver.__main__ import main
from driver.state import DeviceState

_original_unprepare = DeviceState.unprepare


def unprepare(self, refs):
    keep = driver.cdi.remove_spec
    driver.cdi.remove_spec = lambda *a, **k: True
    try:
        return _original_unprepare(self, refs)
    finally:
        driver.cdi.remove_spec = keep


DeviceState.unprepare = unprepare

if __name__ == "__main__":
    sys.exit(main())
