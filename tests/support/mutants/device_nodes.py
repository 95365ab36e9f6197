"""Not broken: the reference driver plus one device node per GPU in its CDI spec, as NVIDIA's driver
has them (``/dev/nvidia<index>`` in the container). The host side stands in for real device nodes:
files under the node's state dir (``<cdi dir>/../fake-dev/nvidia<index>``), one per GPU of the node.
It gives the visibility check something to see; ``device_nodes_leak`` breaks it.
"""

import sys

from driver import cdi
from driver.__main__ import main
from driver.state import DeviceState


def install(leak: bool) -> None:
    def _write_spec(self, uid, devices):
        fake = self.cdi_dir.parent / "fake-dev"
        fake.mkdir(parents=True, exist_ok=True)
        for gpu in self.gpus.values():
            node = fake / f"nvidia{gpu.index}"
            if not node.exists():
                node.write_text(f"{gpu.uuid}\n")
        spec = cdi.build_spec(self.driver_name, [{"name": d["cdiName"], "env": d["env"]} for d in devices])
        for entry, d in zip(spec["devices"], devices, strict=True):
            indices = sorted(g.index for g in self.gpus.values()) if leak else [self.gpus[d["device"]].index]
            entry["containerEdits"]["deviceNodes"] = [
                {"path": f"/dev/nvidia{i}", "hostPath": str(fake / f"nvidia{i}")} for i in indices
            ]
        cdi.write_spec(self.cdi_dir, self.driver_name, uid, spec)

    DeviceState._write_spec = _write_spec


if __name__ == "__main__":
    install(leak=False)
    sys.exit(main())
