// Command capdrop is an OCI runtime wrapper: it removes from a container's spec every capability
// that this host's capability bounding set lacks, then runs the real runtime (runc) with the same
// arguments.
//
// Why: `--privileged` (Docker, and kind's node containers) and privileged pods (kube-proxy inside a
// kind node) ask for every capability the runtime knows.  On a host whose bounding set lacks one of
// them (CAP_SYS_RESOURCE on these build machines) runc fails with "unable to apply caps: operation
// not permitted".  Where the bounding set is full, the wrapper changes nothing.
//
// It edits the bundle's config.json for `create` and `run`, and the process file for `exec`; all
// other subcommands pass through untouched.
package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	runtime := os.Getenv("CAPDROP_RUNTIME")
	if runtime == "" {
		runtime = "/usr/sbin/runc"
	}
	bounding, err := readBoundingSet("/proc/self/status")
	if err != nil {
		fail(err)
	}
	if missing := missingCapabilities(bounding); len(missing) > 0 {
		if err := rewriteSpec(os.Args[1:], missing); err != nil {
			fail(err)
		}
	}
	argv := append([]string{runtime}, os.Args[1:]...)
	fail(syscall.Exec(runtime, argv, os.Environ()))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "capdrop: %v\n", err)
	os.Exit(1)
}
