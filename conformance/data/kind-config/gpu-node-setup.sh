#!/usr/bin/env bash
# Runs inside a kind worker that received GPUs through /var/run/nvidia-container-devices/<i> mounts
# (conformance/data/kind-config/real-gpus.yaml). The same steps as nvkind: install the NVIDIA Container Toolkit, make the
# nvidia runtime containerd's default with CDI on, and stop the driver from recreating device nodes the
# worker must not see. The kind provider runs it with `docker exec -i <worker> bash -s`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
apt-get update -qq
apt-get install -y -qq --no-install-recommends gpg curl ca-certificates >/dev/null
curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$keyring"
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
  | sed "s#deb https://#deb [signed-by=$keyring] https://#g" \
  > /etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends nvidia-container-toolkit >/dev/null

nvidia-ctk runtime configure --runtime=containerd --config-source=command --set-as-default --cdi.enabled
systemctl restart containerd

# Toolkit >= 1.19 masks ModifyDeviceFiles itself through a CDI hook; older ones need it done here.
if grep -qx 'ModifyDeviceFiles: 1' /proc/driver/nvidia/params 2>/dev/null; then
  umount -R /proc/driver/nvidia
  cp /proc/driver/nvidia/params /root/gpu-params
  sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params
  mount --bind /root/gpu-params /proc/driver/nvidia/params
fi

nvidia-smi -L
