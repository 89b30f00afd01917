package agent

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
)

// TestWatchOnRebalanceModes: --on-rebalance takes off, snapshot or replace from the flag, the environment
// or a tag; alone (and as the boolean it used to be) it means snapshot; a mode after a space is a usage
// error that shows the '=' form.
func TestWatchOnRebalanceModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		tags map[string]string
		want rebalanceMode
		err  string
	}{
		{want: rebalanceOff},
		{args: []string{"--on-rebalance"}, want: rebalanceSnapshot},
		{args: []string{"--on-rebalance=snapshot"}, want: rebalanceSnapshot},
		{args: []string{"--on-rebalance=replace"}, want: rebalanceReplace},
		{args: []string{"--on-rebalance=false"}, want: rebalanceOff},
		{env: map[string]string{"HANDOVER_ON_REBALANCE": "true"}, want: rebalanceSnapshot},
		{env: map[string]string{"HANDOVER_ON_REBALANCE": "replace"}, want: rebalanceReplace},
		{tags: map[string]string{"handover:on-rebalance": "replace"}, want: rebalanceReplace},
		{args: []string{"--on-rebalance=down"}, err: "--on-rebalance"},
		{args: []string{"--on-rebalance", "replace"}, err: "--on-rebalance=replace"},
		{env: map[string]string{"HANDOVER_ON_REBALANCE": "terminate"}, err: "HANDOVER_ON_REBALANCE"},
	} {
		var c watchConfig
		f := newFlags("watch", mapEnv(tc.env), io.Discard, time.Minute)
		f.dryRun()
		c.register(f)
		err := f.parse(tc.args)
		if err == nil {
			err = f.applyTags(tc.tags)
		}
		if err == nil {
			err = f.check(c.validate)
		}
		switch {
		case tc.err != "":
			var fe *fail.Error
			if !errors.As(err, &fe) || fe.Code != fail.CodeUsage || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v %v %v: %v, want a usage error naming %s", tc.args, tc.env, tc.tags, err, tc.err)
			}
		case err != nil:
			t.Errorf("%v %v %v: %v", tc.args, tc.env, tc.tags, err)
		case c.OnRebalance != tc.want:
			t.Errorf("%v %v %v: --on-rebalance is %q, want %q", tc.args, tc.env, tc.tags, c.OnRebalance, tc.want)
		}
	}
}

// callIndex is the position in the simulator's call log of the first successful call of action made by
// instance, -1 when there is none.
func (w *downWorld) callIndex(action, instance string) int {
	caller := strings.ReplaceAll(instance, "-", "")
	for i, c := range w.sim.Calls() {
		if c.Action == action && c.Code == "" && strings.Contains(c.Caller, caller) {
			return i
		}
	}
	return -1
}

// startWatch runs watch as inst in the background, polling every 50 ms, for the default slot mounted at mp,
// with extra flags, and returns it once it watches.
func (w *downWorld) startWatch(inst, mp string, extra ...string) *agentRun {
	w.t.Helper()
	args := []string{"watch", "--state-file", filepath.Join(w.dir, "watch.json"), "--poll-interval", "50ms", "--volume", "data:/dev/sdf:" + mp}
	run := w.startAgent(inst, append(args, extra...)...)
	run.waitLog(w.t, "watching instance metadata")
	return run
}

// TestWatchRebalanceSnapshotKeepsServiceRunning: with --on-rebalance=snapshot a rebalance recommendation
// gets one consistent snapshot (the filesystem frozen for the call) and nothing else: the pre-stop command
// does not run, the filesystem stays mounted and writable, the volume stays attached.
func TestWatchRebalanceSnapshotKeepsServiceRunning(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst, vol, mp := w.instanceWithMountedVolume("rebalance data")
	stopped := filepath.Join(w.dir, "service-stopped")
	run := w.startWatch(inst, mp, "--on-rebalance=snapshot", "--pre-stop", "touch "+stopped)
	if err := w.sim.SetRebalance(inst, time.Now()); err != nil {
		t.Fatal(err)
	}
	run.waitLog(t, "snapshot done for this event")
	if code := run.stop(t); code != fail.CodeOK {
		t.Errorf("watch exit %d, want 0", code)
	}

	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 || !snaps[0].Consistent || snaps[0].SourceVolume != vol {
		t.Fatalf("snapshots after the recommendation = %+v, want one consistent snapshot of %s", snaps, vol)
	}
	if _, err := os.Stat(stopped); err == nil {
		t.Error("the pre-stop command ran: the service was stopped for a rebalance recommendation")
	}
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(mp); !mounted {
		t.Errorf("%s was unmounted", mp)
	}
	assertWritable(t, mp)
	if v := w.describeVolume(vol); len(v.Attachments) != 1 || v.Attachments[0].State != ec2types.VolumeAttachmentStateAttached {
		t.Errorf("volume after the recommendation: %+v, want still attached", v.Attachments)
	}
	for _, action := range []string{"DetachVolume", "TerminateInstanceInAutoScalingGroup"} {
		if n := len(w.callsBy(action, inst)); n != 0 {
			t.Errorf("%d %s calls, want none", n, action)
		}
	}
	if out := run.stdout.String(); !strings.Contains(out, "slot data: "+vol) || !strings.Contains(out, "(consistent") {
		t.Errorf("the summary does not show the snapshot:\n%s", out)
	}
}

// TestWatchRebalanceReplaceHandsOverThroughHook: with --on-rebalance=replace a rebalance recommendation
// makes watch ask the group for a replacement (TerminateInstanceInAutoScalingGroup without decrement); the
// service runs on until the group terminates the instance, and then the termination hook's path hands over:
// watch sees target-lifecycle-state Terminated and runs down, the group launches the replacement.
func TestWatchRebalanceReplaceHandsOverThroughHook(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	asgName, inst := w.autoScalingGroup(300) // 3 s at the test speed: heartbeats keep it from timing out
	vol := w.createSlotVolume(w.instanceAZ(inst), 1, nil)
	w.attach(vol, inst)
	mp := w.mountNew(inst, vol, "written before the recommendation")
	stopped := filepath.Join(w.dir, "service-stopped")
	run := w.startWatch(inst, mp, "--on-rebalance=replace", "--terminate-hook", terminateHook, "--heartbeat-interval", "100ms",
		"--pre-stop", "touch "+stopped)
	if err := w.sim.SetRebalance(inst, time.Now()); err != nil {
		t.Fatal(err)
	}
	run.waitLog(t, "replacement requested for this event")
	run.waitLog(t, "hand-over done for this event")
	w.waitLifecycle(asgName, inst, func(s string) bool { return s != "InService" && s != "Terminating" && s != "Terminating:Wait" })
	repl := w.waitLifecycle(asgName, "", func(s string) bool { return s == "InService" })
	if code := run.stop(t); code != fail.CodeOK {
		t.Errorf("watch exit %d, want 0", code)
	}
	if repl == inst {
		t.Fatalf("the group's instance in service is still %s", inst)
	}

	if n := len(w.callsBy("TerminateInstanceInAutoScalingGroup", inst)); n != 1 {
		t.Fatalf("%d TerminateInstanceInAutoScalingGroup calls, want 1", n)
	}
	// Nothing of down happened before the group was asked: its first calls, and the pre-stop command that
	// stops the service, all come after the request.
	requested := w.callIndex("TerminateInstanceInAutoScalingGroup", inst)
	for _, action := range []string{"CreateSnapshot", "DetachVolume", "CompleteLifecycleAction"} {
		if i := w.callIndex(action, inst); i < requested {
			t.Errorf("%s at call %d, before the replacement request (call %d)", action, i, requested)
		}
	}
	fi, err := os.Stat(stopped)
	if err != nil {
		t.Fatalf("the pre-stop command never ran: down did not hand over (%v)", err)
	}
	if at := w.sim.Calls()[requested].Time; fi.ModTime().Before(at) {
		t.Errorf("the service was stopped at %s, before the replacement was requested at %s", fi.ModTime(), at)
	}
	if n := len(w.callsBy("CompleteLifecycleAction", inst)); n != 1 {
		t.Errorf("%d CompleteLifecycleAction calls, want 1 (the termination hook)", n)
	}
	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 || !snaps[0].Consistent || snaps[0].SourceVolume != vol {
		t.Fatalf("snapshots after the hand-over = %+v, want one consistent snapshot of %s", snaps, vol)
	}
	w.waitVolumeState(vol, "available")
	if out := run.stdout.String(); !strings.Contains(out, "asked Auto Scaling group "+asgName+" to replace "+inst) {
		t.Errorf("the summary does not show the request:\n%s", out)
	}
}

// TestWatchSnapshotRetiresNoVolumes: the snapshot watch takes on a rebalance recommendation runs
// snapshot's steps but not its retention of older volumes (a zero --keep-superseded there would delete
// the way back); handover snapshot's own flags turn it on.
func TestWatchSnapshotRetiresNoVolumes(t *testing.T) {
	t.Parallel()
	var wc watchConfig
	if cfg := wc.snapshotConfig(); cfg.Retire {
		t.Errorf("watch's snapshot retires older volumes (keep %d)", cfg.KeepSuperseded)
	}
	var sc snapshotConfig
	f := newFlags("snapshot", mapEnv(nil), io.Discard, time.Minute)
	sc.register(f)
	if err := f.parse(nil); err != nil {
		t.Fatal(err)
	}
	if !sc.Retire || sc.KeepSuperseded != 1 {
		t.Errorf("handover snapshot: retire %v keep %d, want retirement with the previous generation kept", sc.Retire, sc.KeepSuperseded)
	}
}
