package host

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/host/hosttest"
	"golang.org/x/sys/unix"
)

func TestParseMountInfo(t *testing.T) {
	t.Parallel()
	in := `22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
36 35 259:3 / /data rw,noatime shared:12 master:1 - xfs /dev/nvme1n1 rw,attr2
37 22 7:4 / /tmp/with\040space rw - ext4 /dev/loop4 rw
short line
`
	got, err := ParseMountInfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Major: 259, Minor: 1, MountPoint: "/", FSType: "ext4", Source: "/dev/nvme0n1p1"},
		{Major: 259, Minor: 3, MountPoint: "/data", FSType: "xfs", Source: "/dev/nvme1n1"},
		{Major: 7, Minor: 4, MountPoint: "/tmp/with space", FSType: "ext4", Source: "/dev/loop4"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := ParseMountInfo([]byte("1 2 x:y / /a rw - ext4 /dev/a rw\n")); err == nil {
		t.Error("a malformed device field parsed without error")
	}
}

func TestRunPreStop(t *testing.T) {
	t.Parallel()
	l := &Linux{}
	ctx := context.Background()
	log := hosttest.Logger(t)
	t.Run("success without a shell", func(t *testing.T) {
		dir := t.TempDir()
		marker := filepath.Join(dir, "stopped")
		if err := l.RunPreStop(ctx, log, PreStop{Command: "touch " + marker, Timeout: 10 * time.Second}); err != nil {
			t.Fatalf("runPreStop: %v", err)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("the command did not run: %v", err)
		}
	})
	t.Run("no shell means no shell syntax", func(t *testing.T) {
		dir := t.TempDir()
		// Without a shell, ">" and the file name are plain arguments to echo: no file is created.
		if err := l.RunPreStop(ctx, log, PreStop{Command: "echo hi > " + filepath.Join(dir, "out"), Timeout: 10 * time.Second}); err != nil {
			t.Fatalf("runPreStop: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a shell redirection took effect without --pre-stop-shell (stat: %v)", err)
		}
	})
	t.Run("shell", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		if err := l.RunPreStop(ctx, log, PreStop{Command: "echo 'a b' > " + out + " && true", Shell: true, Timeout: 10 * time.Second}); err != nil {
			t.Fatalf("runPreStop: %v", err)
		}
		b, err := os.ReadFile(out)
		if err != nil || string(b) != "a b\n" {
			t.Errorf("shell command output = %q, %v; want %q", b, err, "a b\n")
		}
	})
	t.Run("failure", func(t *testing.T) {
		err := l.RunPreStop(ctx, log, PreStop{Command: "exit 3", Shell: true, Timeout: 10 * time.Second})
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("err = %v, want exit status 3", err)
		}
	})
	t.Run("missing command", func(t *testing.T) {
		if err := l.RunPreStop(ctx, log, PreStop{Command: "/nonexistent/stop-it", Timeout: 10 * time.Second}); err == nil {
			t.Fatal("a missing command reported success")
		}
	})
	t.Run("hanging command and its children are killed", func(t *testing.T) {
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "child.pid")
		// The shell starts a child that ignores nothing and would outlive the shell if only the shell
		// were killed; the whole process group must go.
		cmd := "sleep 300 & echo $! > " + pidFile + "; wait"
		err := l.RunPreStop(ctx, log, PreStop{Command: cmd, Shell: true, Timeout: 300 * time.Millisecond})
		if !errors.Is(err, ErrPreStopTimeout) {
			t.Fatalf("err = %v, want ErrPreStopTimeout", err)
		}
		b, rerr := os.ReadFile(pidFile)
		if rerr != nil {
			t.Fatalf("child pid: %v", rerr)
		}
		pid := strings.TrimSpace(string(b))
		// Reap-free check: /proc/PID disappears once the killed child is reaped by init, or shows a zombie.
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil || strings.Contains(string(st), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("child %s of the timed-out pre-stop command is still running", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	t.Parallel()
	b := &tailBuffer{max: 8}
	_, _ = io.WriteString(b, "0123456789")
	_, _ = io.WriteString(b, "abc")
	if got := b.String(); got != "6789abc" && got != "56789abc" {
		t.Errorf("tail = %q, want the last 8 bytes %q", got, "56789abc")
	}
}

// TestWhileFrozenAlwaysThaws freezes a real ext4 filesystem and checks it is writable again after fn
// succeeds, fails, panics, and when its context is cancelled (as SIGTERM does).
func TestWhileFrozenAlwaysThaws(t *testing.T) {
	t.Parallel()
	l := &Linux{}
	mp, _ := hosttest.MountScratchExt4(t)
	log := hosttest.Logger(t)
	assertNotFrozen := func(t *testing.T) {
		t.Helper()
		// FIFREEZE on a frozen filesystem fails with EBUSY: that is how to see a freeze without
		// blocking on it.
		z, err := Freeze(mp)
		if err != nil {
			t.Fatalf("the filesystem is still frozen after whileFrozen: %v", err)
		}
		_ = z.Thaw()
	}
	t.Run("fn sees it frozen", func(t *testing.T) {
		err := l.WhileFrozen(context.Background(), log, []string{mp}, time.Minute, func(ctx context.Context, frozen map[string]bool) error {
			if !frozen[mp] {
				t.Error("frozen map does not list the mount point")
			}
			if _, err := Freeze(mp); !errors.Is(err, unix.EBUSY) {
				t.Errorf("freezing again inside fn: %v, want EBUSY (already frozen)", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		assertNotFrozen(t)
		hosttest.AssertWritable(t, mp)
	})
	t.Run("error", func(t *testing.T) {
		boom := errors.New("CreateSnapshot failed")
		err := l.WhileFrozen(context.Background(), log, []string{mp}, time.Minute, func(context.Context, map[string]bool) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want fn's error", err)
		}
		assertNotFrozen(t)
		hosttest.AssertWritable(t, mp)
	})
	t.Run("panic", func(t *testing.T) {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic did not propagate")
				}
			}()
			_ = l.WhileFrozen(context.Background(), log, []string{mp}, time.Minute, func(context.Context, map[string]bool) error { panic("bug") })
		}()
		hosttest.AssertWritable(t, mp)
	})
	t.Run("context cancelled while frozen", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := l.WhileFrozen(ctx, log, []string{mp}, time.Minute, func(ctx context.Context, _ map[string]bool) error {
			cancel() // SIGTERM
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		hosttest.AssertWritable(t, mp)
	})
	t.Run("bound", func(t *testing.T) {
		err := l.WhileFrozen(context.Background(), log, []string{mp}, 100*time.Millisecond, func(ctx context.Context, _ map[string]bool) error {
			<-ctx.Done() // an API call that never answers
			return ctx.Err()
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the freeze bound to end fn", err)
		}
		hosttest.AssertWritable(t, mp)
	})
	t.Run("cannot freeze", func(t *testing.T) {
		notMounted := t.TempDir() // a directory on the test's filesystem may not support freezing; nonexistent never does
		called := false
		err := l.WhileFrozen(context.Background(), log, []string{filepath.Join(notMounted, "missing")}, time.Minute, func(_ context.Context, frozen map[string]bool) error {
			called = true
			if len(frozen) != 0 {
				t.Errorf("frozen = %v, want none", frozen)
			}
			return nil
		})
		if err != nil || !called {
			t.Fatalf("whileFrozen = %v, called %v; want fn called with nothing frozen", err, called)
		}
	})
}

func TestMountsOfDeviceAndUnmount(t *testing.T) {
	t.Parallel()
	l := &Linux{}
	mp, loop := hosttest.MountScratchExt4(t)
	mounts, err := l.MountsOf(loop)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].MountPoint != mp {
		t.Fatalf("mounts of %s = %+v, want one at %s", loop, mounts, mp)
	}
	// Something holding a file open: unmount must report busy, not force it.
	f, err := os.Create(filepath.Join(mp, "open"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unmount(context.Background(), hosttest.Logger(t), mounts); !errors.Is(err, ErrBusy) {
		t.Fatalf("unmount with an open file: %v, want ErrBusy", err)
	}
	f.Close()
	if err := l.Unmount(context.Background(), hosttest.Logger(t), mounts); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if m, _ := l.MountsOf(loop); len(m) != 0 {
		t.Fatalf("still mounted: %+v", m)
	}
	// Already unmounted counts as done.
	if err := l.Unmount(context.Background(), hosttest.Logger(t), mounts); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
}

// TestFreezeRefusesADirectoryThatIsNotAMountPoint: freezing a plain directory would freeze the filesystem
// it is on (here the test's temporary directory, on a real system the root filesystem).
func TestFreezeRefusesADirectoryThatIsNotAMountPoint(t *testing.T) {
	t.Parallel()
	hosttest.RequireRoot(t)
	mp, _ := hosttest.MountScratchExt4(t)
	dir := filepath.Join(mp, "sub")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	z, err := Freeze(dir)
	if err == nil {
		_ = z.Thaw()
		t.Fatal("froze a directory that is not a mount point")
	}
	if !strings.Contains(err.Error(), "not a mount point") {
		t.Errorf("err = %v, want it to say it is not a mount point", err)
	}
	hosttest.AssertWritable(t, mp)
}

// TestCallBoundedHandsALateResultOver: a call that returns after its caller gave up goes to late.
func TestCallBoundedHandsALateResultOver(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	late := make(chan int, 1)
	cancel()
	_, err := CallBounded(ctx, "freeze", "freeze /data", func() (int, error) {
		<-release
		return 7, nil
	}, func(v int, _ error) { late <- v })
	var unfinished *UnfinishedError
	if !errors.As(err, &unfinished) || unfinished.Step != "freeze" {
		t.Fatalf("err = %v, want an unfinished freeze", err)
	}
	close(release)
	select {
	case v := <-late:
		if v != 7 {
			t.Errorf("late got %d, want 7", v)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the late result was never handed over")
	}
	if v, err := CallBounded(context.Background(), "sync", "sync", func() (int, error) { return 1, unix.EIO }, nil); v != 1 || err != unix.EIO {
		t.Errorf("a call that returns in time: %d, %v; want 1, EIO", v, err)
	}
}
