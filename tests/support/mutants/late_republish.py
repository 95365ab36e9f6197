"""Not broken, slow: republishes wiped slices only after LATE_REPUBLISH_SECONDS, like drivers built on
upstream's kubeletplugin helper (a 30 s sync delay held back by a one-minute mutation cache). A correct
driver; the lifecycle check must give it the profile's republish bound (sim.republishTimeout)."""

import os
import sys

from driver.__main__ import main
from driver.publisher import SlicePublisher

_original = SlicePublisher.publish


def publish(self):
    calls = getattr(self, "_publish_calls", 0)
    self._publish_calls = calls + 1
    if calls == 1:  # the first republish: one delay per driver process keeps the tests' runs short
        # Waits on the publisher's stop signal, so a shutdown is not held back by the delay.
        self._stop.wait(float(os.environ.get("LATE_REPUBLISH_SECONDS", "30")))
    return _original(self)


SlicePublisher.publish = publish

if __name__ == "__main__":
    sys.exit(main())
