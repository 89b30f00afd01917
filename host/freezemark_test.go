package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/host/hosttest"
	"golang.org/x/sys/unix"
)

// markers lists the freeze markers in dir.
func markers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.frozen"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// frozen reports whether the filesystem at mp is frozen: FIFREEZE on a frozen one fails with EBUSY, which
// shows a freeze without blocking on it.
func frozen(t *testing.T, mp string) bool {
	t.Helper()
	z, err := Freeze(mp)
	if errors.Is(err, unix.EBUSY) {
		return true
	}
	if err != nil {
		t.Fatalf("probe freeze of %s: %v", mp, err)
	}
	if err := z.Thaw(); err != nil {
		t.Fatal(err)
	}
	return false
}

// writeBlocked starts a write under dir in a goroutine and returns a channel that gets its result.
func writeBlocked(dir string) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := os.WriteFile(filepath.Join(dir, "written-while-frozen"), []byte("the service's write\n"), 0o644)
		if err == nil {
			unix.Sync()
		}
		done <- err
	}()
	return done
}

// TestWhileFrozenLeavesAMarkerOnlyWhileFrozen: the marker exists, naming the mount point, exactly while
// the filesystem is frozen, and is gone after the thaw (also when fn fails).
func TestWhileFrozenLeavesAMarkerOnlyWhileFrozen(t *testing.T) {
	t.Parallel()
	mp, _ := hosttest.MountScratchExt4(t)
	l := &Linux{FreezeMarkers: filepath.Join(t.TempDir(), "handover.frozen")}
	log := hosttest.Logger(t)
	for _, fail := range []bool{false, true} {
		boom := errors.New("CreateSnapshot failed")
		err := l.WhileFrozen(t.Context(), log, []string{mp}, time.Minute, func(context.Context, map[string]bool) error {
			m := markers(t, l.FreezeMarkers)
			if len(m) != 1 {
				t.Errorf("markers while frozen: %v, want one", m)
			} else if b, err := os.ReadFile(m[0]); err != nil || !strings.Contains(string(b), mp) {
				t.Errorf("marker %s = %q, %v; want it to name %s", m[0], b, err, mp)
			}
			if fail {
				return boom
			}
			return nil
		})
		if fail != errors.Is(err, boom) || (!fail && err != nil) {
			t.Fatalf("WhileFrozen = %v", err)
		}
		if m := markers(t, l.FreezeMarkers); len(m) != 0 {
			t.Errorf("markers after the thaw: %v, want none", m)
		}
		hosttest.AssertWritable(t, mp)
	}
}

// TestThawLeftFrozenThawsWhatAKilledRunLeftFrozen: a filesystem frozen with its marker written, as a run
// killed between FIFREEZE and FITHAW leaves it, blocks writes; ThawLeftFrozen thaws it, the blocked write
// goes through, and the marker is gone.
func TestThawLeftFrozenThawsWhatAKilledRunLeftFrozen(t *testing.T) {
	t.Parallel()
	mp, _ := hosttest.MountScratchExt4(t)
	l := &Linux{FreezeMarkers: filepath.Join(t.TempDir(), "handover.frozen")}
	// What WhileFrozen does up to the freeze, and then the process dies: no thaw, the marker stays.
	if _, err := l.markFrozen(mp); err != nil {
		t.Fatal(err)
	}
	if _, err := Freeze(mp); err != nil {
		t.Fatal(err)
	}
	if !frozen(t, mp) {
		t.Fatal("not frozen")
	}
	write := writeBlocked(mp)

	thawed, err := l.ThawLeftFrozen(t.Context(), hosttest.Logger(t))
	if err != nil || !slices.Equal(thawed, []string{mp}) {
		t.Fatalf("ThawLeftFrozen() = %v, %v; want [%s]", thawed, err, mp)
	}
	select {
	case err := <-write:
		if err != nil {
			t.Fatalf("the blocked write failed: %v", err)
		}
	case <-time.After(20 * time.Second): // only keeps a failing test from hanging
		t.Fatal("the write blocked on the frozen filesystem is still blocked after ThawLeftFrozen")
	}
	if m := markers(t, l.FreezeMarkers); len(m) != 0 {
		t.Errorf("markers left: %v", m)
	}
	// Again: nothing left to do.
	if thawed, err := l.ThawLeftFrozen(t.Context(), hosttest.Logger(t)); err != nil || len(thawed) != 0 {
		t.Errorf("second ThawLeftFrozen() = %v, %v; want nothing", thawed, err)
	}
}

// TestThawLeftFrozenThawsOnlyWhatItsMarkersName: a filesystem frozen without a marker (an operator's
// fsfreeze, a backup tool) stays frozen; a marker of a filesystem no longer mounted there (another device
// number) thaws nothing and is removed; a marker of a filesystem that is not frozen is removed.
func TestThawLeftFrozenThawsOnlyWhatItsMarkersName(t *testing.T) {
	t.Parallel()
	log := hosttest.Logger(t)
	t.Run("frozen by someone else", func(t *testing.T) {
		t.Parallel()
		mp, _ := hosttest.MountScratchExt4(t)
		l := &Linux{FreezeMarkers: filepath.Join(t.TempDir(), "handover.frozen")}
		z, err := Freeze(mp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = z.Thaw() })
		if thawed, err := l.ThawLeftFrozen(t.Context(), log); err != nil || len(thawed) != 0 {
			t.Errorf("ThawLeftFrozen() = %v, %v; want nothing thawed", thawed, err)
		}
		if !frozen(t, mp) {
			t.Error("a freeze handover did not make was thawed")
		}
	})
	t.Run("another filesystem there now", func(t *testing.T) {
		t.Parallel()
		mp, _ := hosttest.MountScratchExt4(t)
		l := &Linux{FreezeMarkers: filepath.Join(t.TempDir(), "handover.frozen")}
		path, err := l.markFrozen(mp)
		if err != nil {
			t.Fatal(err)
		}
		// The marker's filesystem is gone; the one mounted there now was frozen by someone else.
		b, _ := os.ReadFile(path)
		if err := os.WriteFile(path, []byte(replaceDev(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
		z, err := Freeze(mp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = z.Thaw() })
		if thawed, err := l.ThawLeftFrozen(t.Context(), log); err != nil || len(thawed) != 0 {
			t.Errorf("ThawLeftFrozen() = %v, %v; want nothing thawed", thawed, err)
		}
		if !frozen(t, mp) {
			t.Error("thawed a filesystem its marker does not name")
		}
		if m := markers(t, l.FreezeMarkers); len(m) != 0 {
			t.Errorf("stale marker kept: %v", m)
		}
	})
	t.Run("not frozen", func(t *testing.T) {
		t.Parallel()
		mp, _ := hosttest.MountScratchExt4(t)
		l := &Linux{FreezeMarkers: filepath.Join(t.TempDir(), "handover.frozen")}
		if _, err := l.markFrozen(mp); err != nil {
			t.Fatal(err)
		}
		if thawed, err := l.ThawLeftFrozen(t.Context(), log); err != nil || len(thawed) != 0 {
			t.Errorf("ThawLeftFrozen() = %v, %v; want nothing thawed", thawed, err)
		}
		if m := markers(t, l.FreezeMarkers); len(m) != 0 {
			t.Errorf("marker kept: %v", m)
		}
		hosttest.AssertWritable(t, mp)
	})
}

// replaceDev changes the device number a marker records.
func replaceDev(marker string) string {
	return regexp.MustCompile(`"dev":\d+`).ReplaceAllString(marker, `"dev":1`)
}
