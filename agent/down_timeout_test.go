package agent

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
)

// hungDevice makes one of the filesystem calls (sync, unmount or freeze) block, as it does on a hung
// device, until the test ends or release is called; the others go to the host. A freeze that is released
// then really freezes the filesystem, late, so the test sees whether handover thaws it.
type hungDevice struct {
	entered  chan struct{} // closed when the blocking call starts
	released chan struct{}
	froze    chan struct{} // closed when a released freeze has frozen the filesystem
	thawed   chan struct{} // closed when that freeze is thawed
	once     sync.Once
}

func newHungDevice(t *testing.T, block string) (*hungDevice, host.FSCalls) {
	h := &hungDevice{entered: make(chan struct{}), released: make(chan struct{}), froze: make(chan struct{}), thawed: make(chan struct{})}
	t.Cleanup(h.release)
	var entered sync.Once
	hang := func() {
		entered.Do(func() { close(h.entered) })
		<-h.released
	}
	real := host.RealFSCalls()
	fsys := real
	switch block {
	case "sync":
		fsys.Sync = hang
	case "unmount":
		fsys.Unmount = func(mp string) error {
			hang()
			return real.Unmount(mp)
		}
	case "freeze":
		fsys.Freeze = func(mp string) (host.Thawer, error) {
			hang()
			z, err := real.Freeze(mp)
			close(h.froze)
			if err != nil {
				return nil, err
			}
			return &thawSignal{Thawer: z, thawed: h.thawed}, nil
		}
	default:
		t.Fatalf("hungDevice: no call %q", block)
	}
	return h, fsys
}

func (h *hungDevice) release() { h.once.Do(func() { close(h.released) }) }

// thawSignal closes thawed when the filesystem is thawed.
type thawSignal struct {
	host.Thawer
	thawed chan struct{}
	once   sync.Once
}

func (z *thawSignal) Thaw() error {
	err := z.Thawer.Thaw()
	z.once.Do(func() { close(z.thawed) })
	return err
}

// TestDownTimeoutGivesUpOnAHungDevice: sync, unmount or FIFREEZE never returns (a hung device). down
// stops waiting at --timeout, still takes a crash-consistent snapshot (not tagged consistent), completes
// the termination hook with CONTINUE, and fails with exit 1 and one line naming the step. A freeze that
// completes after down gave up is thawed at once.
func TestDownTimeoutGivesUpOnAHungDevice(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, tc := range []struct {
		step string
		args []string
	}{
		{"sync", []string{"--release", "freeze"}},
		{"unmount", []string{"--pre-stop", "true", "--release", "unmount"}},
		{"freeze", []string{"--release", "freeze"}},
	} {
		t.Run(tc.step, func(t *testing.T) {
			w := newDownWorld(t)
			asgName, inst := w.autoScalingGroup(7200) // 72 s at the test speed: only down can end the wait
			vol := w.createSlotVolume(w.instanceAZ(inst), 1, nil)
			w.attach(vol, inst)
			mp := w.mountNew(inst, vol, "written before termination")
			if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
				InstanceId: aws.String(inst), ShouldDecrementDesiredCapacity: aws.Bool(false),
			}); err != nil {
				t.Fatal(err)
			}
			w.waitLifecycle(asgName, inst, func(s string) bool { return s == "Terminating:Wait" })
			hung, fsys := newHungDevice(t, tc.step)

			args := append([]string{"--timeout", "4s", "--terminate-hook", terminateHook, "--volume", "data:/dev/sdf:" + mp}, tc.args...)
			var stdout, stderr bytes.Buffer
			done := make(chan error, 1)
			go func() {
				done <- downCommand(context.Background(), Env{Getenv: w.agentEnv(inst, nil), Stdout: &stdout, Stderr: &stderr}, args, fsys)
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("down did not return with the %s call hung", tc.step)
			}
			select {
			case <-hung.entered:
			default:
				t.Fatalf("down never made the %s call; err %v\n%s", tc.step, err, stderr.String())
			}
			if code := ExitCode(err); code != fail.CodeFailed {
				t.Fatalf("exit %d (%v), want 1\n%s", code, err, stderr.String())
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(err, context.DeadlineExceeded) = false for a down past its bound: %v", err)
			}
			line := fail.OneLine(err.Error())
			t.Logf("handover down: %s\nstdout:\n%s\nstderr:\n%s", line, stdout.String(), stderr.String())
			for _, want := range []string{`step "` + tc.step + `" timed out`, "--timeout 4s", "crash-consistent, not tagged consistent", "completed " + terminateHook, "the termination goes ahead"} {
				if !strings.Contains(line, want) {
					t.Errorf("error line lacks %q:\n%s", want, line)
				}
			}
			if !strings.Contains(stderr.String(), "completing the termination hook with CONTINUE anyway: the termination goes ahead") {
				t.Errorf("the log does not say the termination goes ahead:\n%s", stderr.String())
			}
			snaps := w.slotSnapshots(cloud.DefaultSlot)
			if len(snaps) != 1 || snaps[0].SourceVolume != vol {
				t.Fatalf("snapshots = %+v, want one crash-consistent snapshot of %s", snaps, vol)
			}
			if v, ok := snaps[0].Tags[cloud.TagConsistent]; ok {
				t.Errorf("snapshot taken past the bound is tagged %s=%s", cloud.TagConsistent, v)
			}
			if !strings.Contains(stdout.String(), "NOT consistent") {
				t.Errorf("summary does not flag the snapshot:\n%s", stdout.String())
			}
			if n := len(w.callsBy("CompleteLifecycleAction", inst)); n != 1 {
				t.Errorf("%d CompleteLifecycleAction calls, want 1", n)
			}
			w.waitLifecycle(asgName, inst, func(s string) bool { return s != "Terminating:Wait" })

			if tc.step != "freeze" {
				return
			}
			// The freeze completes after down gave up on it: the goroutine left in it thaws at once.
			hung.release()
			<-hung.froze
			select {
			case <-hung.thawed:
			case <-time.After(60 * time.Second):
				t.Fatal("a freeze that completed after down gave up was not thawed")
			}
			assertWritable(t, mp)
			if z, err := host.Freeze(mp); err != nil {
				t.Errorf("%s is still frozen: %v", mp, err)
			} else {
				_ = z.Thaw()
			}
		})
	}
}

// TestSnapshotTimeoutGivesUpOnAHungFreeze: `handover snapshot` whose FIFREEZE never returns stops waiting
// at --timeout, takes a crash-consistent snapshot, skips retention and fails naming the step.
func TestSnapshotTimeoutGivesUpOnAHungFreeze(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst, vol, mp := w.instanceWithMountedVolume("x")
	_, fsys := newHungDevice(t, "freeze")
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- snapshotCommand(context.Background(), Env{Getenv: w.agentEnv(inst, nil), Stdout: &stdout, Stderr: &stderr},
			[]string{"--timeout", "4s", "--keep", "1", "--volume", "data:/dev/sdf:" + mp}, fsys)
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("snapshot did not return with FIFREEZE hung")
	}
	if code := ExitCode(err); code != fail.CodeFailed {
		t.Fatalf("exit %d (%v), want 1\n%s", code, err, stderr.String())
	}
	line := fail.OneLine(err.Error())
	for _, want := range []string{`step "freeze" timed out`, "crash-consistent, not tagged consistent", "retention skipped"} {
		if !strings.Contains(line, want) {
			t.Errorf("error line lacks %q:\n%s", want, line)
		}
	}
	snaps := w.slotSnapshots(cloud.DefaultSlot)
	if len(snaps) != 1 || snaps[0].SourceVolume != vol || snaps[0].Consistent {
		t.Fatalf("snapshots = %+v, want one crash-consistent snapshot of %s", snaps, vol)
	}
}

// TestDownPastBoundKeepsTheCause: the line a run fails with past its bound keeps its cause in the chain
// (errors.Is finds context.DeadlineExceeded), keeps exit 1, and does not repeat the cause after the line.
func TestDownPastBoundKeepsTheCause(t *testing.T) {
	t.Parallel()
	cause := &host.UnfinishedError{Step: "sync", What: "sync(2)", Err: context.DeadlineExceeded}
	err := pastBound(overrun{Command: "down", Within: "--timeout 4s", Step: "sync", Cause: cause}, []string{"no snapshot taken"}, "look for a hung device")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(err, context.DeadlineExceeded) = false: %v", err)
	}
	var unfinished *host.UnfinishedError
	if !errors.As(err, &unfinished) || unfinished.Step != "sync" {
		t.Errorf("errors.As(err, *host.UnfinishedError) does not find the cause: %v", err)
	}
	if code := ExitCode(err); code != fail.CodeFailed {
		t.Errorf("exit %d, want 1", code)
	}
	want := `down did not finish within --timeout 4s: step "sync" timed out (sync(2) did not return); no snapshot taken; look for a hung device`
	if err.Error() != want {
		t.Errorf("line:\n%s\nwant:\n%s", err.Error(), want)
	}
}
