package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMissingCapabilitiesOfThisBuildHost(t *testing.T) {
	// 0x1fffeffffff: every capability up to CAP_CHECKPOINT_RESTORE except CAP_SYS_RESOURCE (24).
	missing := missingCapabilities(0x000001fffeffffff)
	if len(missing) != 1 || !missing["CAP_SYS_RESOURCE"] {
		t.Fatalf("missing = %v, want only CAP_SYS_RESOURCE", missing)
	}
	if got := missingCapabilities(0x000001ffffffffff); len(got) != 0 {
		t.Fatalf("full bounding set: missing = %v, want none", got)
	}
}

func TestReadBoundingSet(t *testing.T) {
	status := filepath.Join(t.TempDir(), "status")
	os.WriteFile(status, []byte("Name:\tx\nCapEff:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"), 0o600)
	got, err := readBoundingSet(status)
	if err != nil || got != 0x000001fffeffffff {
		t.Fatalf("got %x, %v", got, err)
	}
}

func TestSpecToRewrite(t *testing.T) {
	cases := []struct {
		args      []string
		file      string
		inProcess bool
		ok        bool
	}{
		{[]string{"--root", "/run/r", "--log", "l.json", "--systemd-cgroup", "create", "--bundle", "/b", "id"}, "/b/config.json", true, true},
		{[]string{"create", "--bundle=/b", "--pid-file", "p", "id"}, "/b/config.json", true, true},
		{[]string{"run", "-b", "/b", "id"}, "/b/config.json", true, true},
		{[]string{"--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "id"}, "/tmp/p.json", false, true},
		{[]string{"exec", "id", "ls"}, "", false, false},
		{[]string{"--root", "/r", "state", "id"}, "", false, false},
		{[]string{"--root", "/r", "delete", "--force", "create"}, "", false, false},
	}
	for _, c := range cases {
		file, inProcess, ok := specToRewrite(c.args)
		if file != c.file || inProcess != c.inProcess || ok != c.ok {
			t.Errorf("%v: got (%q, %v, %v), want (%q, %v, %v)", c.args, file, inProcess, ok, c.file, c.inProcess, c.ok)
		}
	}
}

func TestDropCapabilitiesKeepsEverythingElse(t *testing.T) {
	raw := `{"ociVersion":"1.0.2","process":{"user":{"uid":0},"rlimits":[{"type":"RLIMIT_NOFILE","hard":18446744073709551615,"soft":1048576}],` +
		`"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_RESOURCE"],"effective":["CAP_SYS_RESOURCE"],"permitted":["CAP_SYS_ADMIN"]}},"x-unknown":{"a":1}}`
	out, changed, err := dropCapabilities([]byte(raw), true, map[string]bool{"CAP_SYS_RESOURCE": true})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	text := string(out)
	if strings.Contains(text, "CAP_SYS_RESOURCE") {
		t.Fatalf("still there: %s", text)
	}
	for _, want := range []string{`"CAP_CHOWN"`, `"CAP_SYS_ADMIN"`, `18446744073709551615`, `"x-unknown":{"a":1}`, `"effective":[]`} {
		if !strings.Contains(text, want) {
			t.Errorf("lost %s in %s", want, text)
		}
	}
	var back map[string]any
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
}

func TestDropCapabilitiesOfAProcessFile(t *testing.T) {
	raw := `{"args":["sh"],"capabilities":{"bounding":["CAP_SYS_RESOURCE","CAP_KILL"]}}`
	out, changed, _ := dropCapabilities([]byte(raw), false, map[string]bool{"CAP_SYS_RESOURCE": true})
	if !changed || string(out) != `{"args":["sh"],"capabilities":{"bounding":["CAP_KILL"]}}` {
		t.Fatalf("got %s (changed=%v)", out, changed)
	}
	same, changed, _ := dropCapabilities([]byte(`{"args":["sh"]}`), false, map[string]bool{"CAP_SYS_RESOURCE": true})
	if changed || string(same) != `{"args":["sh"]}` {
		t.Fatalf("a spec without capabilities changed: %s", same)
	}
}

func TestRewriteSpecEditsTheBundle(t *testing.T) {
	bundle := t.TempDir()
	config := filepath.Join(bundle, "config.json")
	os.WriteFile(config, []byte(`{"process":{"capabilities":{"bounding":["CAP_SYS_RESOURCE","CAP_NET_ADMIN"]}}}`), 0o600)
	if err := rewriteSpec([]string{"create", "--bundle", bundle, "c1"}, map[string]bool{"CAP_SYS_RESOURCE": true}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(config)
	if string(got) != `{"process":{"capabilities":{"bounding":["CAP_NET_ADMIN"]}}}` {
		t.Fatalf("config.json = %s", got)
	}
}
