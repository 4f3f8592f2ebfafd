package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// capabilityNames lists the Linux capabilities by number (linux/capability.h).
var capabilityNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// readBoundingSet returns the CapBnd mask of a /proc/<pid>/status file.
func readBoundingSet(statusPath string) (uint64, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if hex, ok := strings.CutPrefix(scanner.Text(), "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd line in %s", statusPath)
}

// missingCapabilities names the known capabilities that the bounding set lacks.
func missingCapabilities(bounding uint64) map[string]bool {
	missing := map[string]bool{}
	for bit, name := range capabilityNames {
		if bounding&(1<<uint(bit)) == 0 {
			missing[name] = true
		}
	}
	return missing
}

// specToRewrite finds the JSON file a runtime invocation will read capabilities from, and the
// path inside it of the capabilities object: config.json's process for create/run, the process
// file for exec.  ok is false for every other invocation.
func specToRewrite(args []string) (file string, inProcess bool, ok bool) {
	sub := -1
	for i, a := range args {
		if a == "create" || a == "run" || a == "exec" {
			sub = i
			break
		}
		if !strings.HasPrefix(a, "-") && i > 0 && !takesValue(args[i-1]) {
			return "", false, false // another subcommand
		}
	}
	if sub < 0 {
		return "", false, false
	}
	if args[sub] == "exec" {
		if p := flagValue(args[sub+1:], "--process", "-p"); p != "" {
			return p, false, true
		}
		return "", false, false // exec with the process given on the command line
	}
	bundle := flagValue(args[sub+1:], "--bundle", "-b")
	if bundle == "" {
		bundle = "."
	}
	return filepath.Join(bundle, "config.json"), true, true
}

// takesValue tells whether a runc global flag is followed by its value.
func takesValue(flag string) bool {
	switch flag {
	case "--root", "--log", "--log-format", "--criu", "--rootless":
		return true
	}
	return false
}

func flagValue(args []string, long, short string) string {
	for i, a := range args {
		if (a == long || a == short) && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, long+"="); ok {
			return v
		}
	}
	return ""
}

// rewriteSpec removes the missing capabilities from the spec the invocation will read.
func rewriteSpec(args []string, missing map[string]bool) error {
	file, inProcess, ok := specToRewrite(args)
	if !ok {
		return nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	out, changed, err := dropCapabilities(raw, inProcess, missing)
	if err != nil || !changed {
		return err
	}
	return os.WriteFile(file, out, 0o600)
}

// dropCapabilities filters every capability list of the spec; numbers stay exact (UseNumber) and
// unknown fields stay as they are.
func dropCapabilities(raw []byte, inProcess bool, missing map[string]bool) ([]byte, bool, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var spec map[string]any
	if err := decoder.Decode(&spec); err != nil {
		return nil, false, err
	}
	process := spec
	if inProcess {
		p, ok := spec["process"].(map[string]any)
		if !ok {
			return raw, false, nil
		}
		process = p
	}
	caps, ok := process["capabilities"].(map[string]any)
	if !ok {
		return raw, false, nil
	}
	changed := false
	for set, value := range caps {
		list, ok := value.([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, c := range list {
			if name, ok := c.(string); ok && missing[name] {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(spec)
	return out, true, err
}
