package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDemo plays the demo at 100 times AWS's speed: the data and the Elastic IP must come back on the
// replacement in the other zone. It mounts real filesystems, so it needs root: it fails under CI=true
// without it and is skipped elsewhere.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the demo needs root (loop devices, mkfs, mount); CI runs the suite as root")
		}
		t.Skip("the demo needs root (loop devices, mkfs, mount)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"demo", "--speed", "100", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"is running in us-east-1a", "created blank", "formatted (created blank)", "hook launch completed with CONTINUE",
		"is running in us-east-1b", "restored from snap-", "orders.db is back on", "byte for byte", "the Elastic IP 198.51.100.",
		"timeline", "total",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemoRefusesArguments(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"demo", "extra"}, &stdout, &stderr); code != 2 {
		t.Errorf("demo extra: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"demo", "--speed", "0"}, &stdout, &stderr); code != 2 {
		t.Errorf("demo --speed 0: exit %d, want 2", code)
	}
}
