"""Names the CDI device after the GPU only, so two shares of one GPU get the same CDI device id."""

import sys

import driver.cdi
from driver.__main__ import main


def device_name(claim_uid, gpu_index, share_id):
    return f"gpu-{gpu_index}"


driver.cdi.device_name = device_name

if __name__ == "__main__":
    sys.exit(main())
