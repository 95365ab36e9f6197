"""A real Kubernetes control plane from local processes (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), built from the Go module proxy and cached outside the work tree (``make kube-bin``)."""
