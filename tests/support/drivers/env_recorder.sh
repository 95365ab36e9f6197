#!/bin/sh
# A driver that is not Python (tests/sim/test_kubelet_launch.py): it writes what the sim kubelet gave it, one
# NAME=value line per variable and one ARG=value line per argument, to $FINDINGS, registers nothing and
# exits with 3. The file is written whole (rename), so a reader never sees half of it.
set -u
{
  for name in NODE_NAME KUBECONFIG KUBELET_REGISTRAR_DIRECTORY_PATH KUBELET_PLUGINS_DIRECTORY_PATH CDI_ROOT \
              STATE_DIR EXTRA; do
    eval "echo \"$name=\${$name-(unset)}\""
  done
  for arg in "$@"; do
    echo "ARG=$arg"
  done
  [ -d "$KUBELET_REGISTRAR_DIRECTORY_PATH" ] && echo "CHECK=registrar dir exists"
  [ -d "$STATE_DIR" ] && echo "CHECK=state dir exists"
  [ -d "$CDI_ROOT" ] && echo "CHECK=cdi dir exists"
  grep -q '^kind: Config' "$KUBECONFIG" && echo "CHECK=kubeconfig is a kubeconfig"
} > "$FINDINGS.tmp" && mv "$FINDINGS.tmp" "$FINDINGS"
echo "env recorder: wrote $FINDINGS on $NODE_NAME"
exit 3
