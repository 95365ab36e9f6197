// The process every pod sandbox runs (what registry.k8s.io/pause holds, which no registry here serves):
// it holds the pod's namespaces, reaps the zombies a shared PID namespace hands it, and exits 0 on
// SIGINT or SIGTERM so that a sandbox stops at once instead of waiting out the runtime's kill timeout
// (as PID 1 it gets no default signal handling).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
