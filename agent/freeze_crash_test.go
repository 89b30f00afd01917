package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"golang.org/x/sys/unix"
)

// TestNextRunThawsWhatAKilledRunLeftFrozen: `handover snapshot` is killed with SIGKILL while the data
// filesystem is frozen (its CreateSnapshot never answers), which leaves the filesystem frozen and every
// write of the service blocked. The next up, down, snapshot or watch thaws it: the blocked write goes
// through, and the freeze marker is gone. Before, the filesystem stayed frozen until someone ran
// fsfreeze -u (down's own freeze then failed with EBUSY, and its sync blocked on the frozen filesystem).
func TestNextRunThawsWhatAKilledRunLeftFrozen(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, next := range []string{"up", "down", "snapshot", "watch"} {
		t.Run(next, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t)
			w.unmountOnCleanup()
			w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id)...))
			mp := w.mountPoint(id)
			t.Cleanup(func() { _ = host.ThawMountPoint(mp) }) // before the unmount, should the test fail frozen
			spec := "data:/dev/sdf:" + mp

			w.freezeAndKill(id, "snapshot", "--volume", spec)
			if !frozenNow(t, mp) {
				t.Fatal("the killed snapshot did not leave the filesystem frozen: the test proves nothing")
			}
			markers, _ := filepath.Glob(filepath.Join(w.dir, "locks", id+".frozen", "*.frozen"))
			if len(markers) != 1 {
				t.Fatalf("freeze markers after the kill: %v, want one", markers)
			}
			write := make(chan error, 1)
			go func() { // the service, writing: it blocks until the filesystem is thawed
				write <- os.WriteFile(filepath.Join(mp, "written-while-frozen"), []byte("order 42\n"), 0o644)
			}()

			ctx, cancel := context.WithCancel(w.ctx())
			defer cancel()
			var res agentResult
			ran := make(chan struct{})
			go func() {
				defer close(ran)
				switch next {
				case "up":
					res = w.runAgent(ctx, id, nil, w.upArgs(id)...)
				case "watch":
					res = w.runAgent(ctx, id, nil, "watch", "--volume", spec, "--poll-interval", "100ms",
						"--state-file", filepath.Join(w.dir, "watch-"+id+".json"))
				default:
					res = w.runAgent(ctx, id, nil, next, "--volume", spec)
				}
			}()
			select {
			case err := <-write:
				if err != nil {
					t.Fatalf("the blocked write failed: %v", err)
				}
			case <-time.After(30 * time.Second): // only keeps a failing test from hanging
				cancel()
				<-ran
				t.Fatalf("%s did not thaw the filesystem: the service's write is still blocked\nstderr:\n%s", next, res.stderr)
			}
			if next == "watch" {
				cancel() // watch runs until stopped
			}
			<-ran
			if next != "watch" && res.code != fail.CodeOK {
				t.Errorf("%s exited %d\nstderr:\n%s", next, res.code, res.stderr)
			}
			if markers, _ := filepath.Glob(filepath.Join(w.dir, "locks", id+".frozen", "*.frozen")); len(markers) != 0 {
				t.Errorf("freeze markers left: %v", markers)
			}
		})
	}
}

// freezeAndKill runs `handover args...` as id in its own process with CreateSnapshot stalled, and kills
// it with SIGKILL once it calls CreateSnapshot: by then the filesystem is frozen.
func (w *testRegion) freezeAndKill(id string, args ...string) {
	w.t.Helper()
	endpoint, reached := w.stallEC2Action("CreateSnapshot")
	p := w.startAgentProcess(id, map[string]string{"AWS_ENDPOINT_URL_EC2": endpoint}, args...)
	select {
	case <-reached:
	case <-p.done:
		w.t.Fatalf("handover %v ended (%v) before it called CreateSnapshot\nstderr:\n%s", args, p.err, p.stderr.String())
	case <-time.After(waitBound):
		w.t.Fatalf("handover %v did not call CreateSnapshot\nstderr:\n%s", args, p.stderr.String())
	}
	p.kill()
}

// frozenNow reports whether the filesystem at mp is frozen (FIFREEZE answers EBUSY), without blocking.
func frozenNow(t *testing.T, mp string) bool {
	t.Helper()
	z, err := host.Freeze(mp)
	if errors.Is(err, unix.EBUSY) {
		return true
	}
	if err != nil {
		t.Fatalf("freeze %s: %v", mp, err)
	}
	if err := z.Thaw(); err != nil {
		t.Fatal(err)
	}
	return false
}
