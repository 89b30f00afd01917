package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handover/handover/internal/fail"
	"golang.org/x/sys/unix"
)

// TestUpRefusesABadMountPointBeforeAnyChange: a mount point that is an existing regular file (or lies
// under one, or is a symbolic link), or that has something else mounted on it, is refused by up's
// precheck: exit 3, one line naming the slot, the mount point and what is wrong, and not one mutating call
// (no address taken, no volume made or attached). Before, a regular file failed the mount after the
// volume was made and attached, exit 1.
func TestUpRefusesABadMountPointBeforeAnyChange(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, w *testRegion, mp string) string // returns the mount point to give
		want  []string
	}{
		{"existing regular file", func(t *testing.T, w *testRegion, mp string) string {
			mustWrite(t, mp, "not a directory\n")
			return mp
		}, []string{"is an existing regular file, not a directory"}},
		{"under a regular file", func(t *testing.T, w *testRegion, mp string) string {
			mustWrite(t, mp, "not a directory\n")
			return filepath.Join(mp, "inside")
		}, []string{"is under ", "an existing regular file"}},
		{"symbolic link", func(t *testing.T, w *testRegion, mp string) string {
			target := filepath.Join(w.dir, "elsewhere")
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(mp), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, mp); err != nil {
				t.Fatal(err)
			}
			return mp
		}, []string{"symbolic link to"}},
		{"something else mounted on it", func(t *testing.T, w *testRegion, mp string) string {
			if err := os.MkdirAll(mp, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("handover-test", mp, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatalf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) })
			return mp
		}, []string{"already has handover-test (tmpfs) mounted on it, not the slot's volume"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t)
			w.unmountOnCleanup()
			alloc := w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			mp := tt.setup(t, w, w.mountPoint(id))
			w.sim.ResetCalls()

			res := w.runAgent(w.ctx(), id, nil, "up", "--size", "1", "--volume", "data:/dev/sdf:"+mp, "--unit-dir", w.unitDir(id))
			mustExit(t, res, fail.CodePrecondition, append([]string{"slot data", mp, "--volume"}, tt.want...)...)
			if n := strings.Count(res.stderr, "handover up:"); n != 1 {
				t.Errorf("%d error lines, want one:\n%s", n, res.stderr)
			}
			if calls := w.mutatingCalls(); len(calls) != 0 {
				t.Errorf("mutating calls before the refusal: %v", calls)
			}
			if vols := w.slotVolumes(); len(vols) != 0 {
				t.Errorf("%d volumes made", len(vols))
			}
			if holder := w.addressHolder(alloc); holder != "" {
				t.Errorf("the address went to %s", holder)
			}
		})
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
