"""The bottom layer: what the driver, the sim, the suite and localkube share.

Quantity maths, the DRA gRPC protos and stubs, the kubelet-side DRA client, mock GPU profiles (package
data in ``gpus/``), resource names, the driver launch contract, the Kubernetes versions and DRA feature
gates, kubeconfig text and small process/time helpers. It imports none of ``driver``, ``sim``,
``conformance`` or ``localkube`` (an import contract in ``make lint`` checks it), so each of them can use
it and the driver image can ship it alone with the driver.
"""
