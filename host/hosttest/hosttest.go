// Package hosttest is what the tests of the host layer and of the commands share to work on real block
// devices: a logger on the test's output, the root check, a scratch ext4 filesystem on a loop device.
// Production code never imports it.
package hosttest

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Logger logs to the test's output when verbose, and nowhere otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// RequireRoot skips a test that needs loop devices, mkfs and mount when not root; in CI (CI=true), which
// runs the suite as root, it fails instead, so such a test can never be skipped silently there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (loop devices, mkfs, mount); CI runs the suite as root")
	}
	t.Skip("needs root (loop devices, mkfs, mount)")
}

// MountScratchExt4 makes a 64 MiB ext4 filesystem on a loop device, mounts it in a temporary directory and
// removes all of it when the test ends (thawed first, should a test leave it frozen). It returns the mount
// point and the loop device.
func MountScratchExt4(t testing.TB) (mountPoint, loop string) {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.Truncate(MustCreate(t, img), 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop = strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", loop).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mountPoint = filepath.Join(dir, "mnt")
	if err := os.Mkdir(mountPoint, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(loop, mountPoint, "ext4", 0, ""); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		_ = exec.Command("fsfreeze", "-u", mountPoint).Run() // a test that left it frozen; not frozen: an error, ignored
		_ = unix.Unmount(mountPoint, unix.MNT_DETACH)
	})
	return mountPoint, loop
}

// MustCreate creates an empty file and returns its path.
func MustCreate(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// AssertWritable fails the test unless a file can be written and synced under dir. A frozen filesystem
// blocks the write, so it runs with a generous bound: the bound only keeps a failing test from hanging.
func AssertWritable(t testing.TB, dir string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(dir, "probe"))
		if err == nil {
			_, err = f.WriteString("still writable\n")
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write under %s: %v", dir, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("write under %s blocked: the filesystem was left frozen", dir)
	}
}
