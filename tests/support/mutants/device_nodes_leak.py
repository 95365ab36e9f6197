"""Exposes every GPU's device node to every container: each CDI device lists all of the node's
``/dev/nvidia<index>`` nodes, as a driver that copies its node-wide edits into each claim would."""

import sys

from driver.__main__ import main
from tests.support.mutants.device_nodes import install

if __name__ == "__main__":
    install(leak=True)
    sys.exit(main())
