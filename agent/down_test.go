package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/host/hosttest"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

func TestDownConfigValidate(t *testing.T) {
	t.Parallel()
	parse := func(t *testing.T, args ...string) (*downConfig, error) {
		t.Helper()
		f := newFlags("down", mapEnv(nil), io.Discard, time.Second)
		var c downConfig
		c.addFlags(f)
		if err := f.parse(args); err != nil {
			return nil, err
		}
		if err := c.validate(); err != nil {
			return nil, err
		}
		c.applyDefaults()
		return &c, nil
	}
	tests := []struct {
		args        []string
		wantRelease string
		wantErr     string
	}{
		{nil, releaseFreeze, ""},
		{[]string{"--pre-stop", "systemctl stop app"}, releaseUnmount, ""},
		{[]string{"--pre-stop", "systemctl stop app", "--release", "freeze"}, releaseFreeze, ""},
		{[]string{"--release", "eject"}, "", "--release"},
		{[]string{"--pre-stop-shell"}, "", "--pre-stop-shell"},
		{[]string{"--pre-stop-timeout", "0s", "--pre-stop", "x"}, "", "--pre-stop-timeout"},
		{[]string{"--heartbeat-interval", "-1s"}, "", "--heartbeat-interval"},
		{[]string{"--lock-file", "relative.lock"}, "", "--lock-file"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c, err := parse(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ExitCode(err) != fail.CodeUsage {
					t.Fatalf("err = %v, want a usage error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			if c.Release != tc.wantRelease {
				t.Errorf("release = %q, want %q", c.Release, tc.wantRelease)
			}
			if len(c.Volumes) != 1 || c.Volumes[0] != defaultVolumeSpec {
				t.Errorf("volumes = %v, want the default slot", c.Volumes)
			}
		})
	}
}

func TestDownDescriptionScopesTheOccasion(t *testing.T) {
	t.Parallel()
	attached := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &slotRelease{Volume: cloud.Volume{ID: "vol-1"}, AttachTime: attached}
	life := s.description(lifecycleOccasion("i-1"), "i-1")
	manual := s.description(occasion{Kind: "manual"}, "i-1")
	if life == manual {
		t.Fatalf("lifecycle and manual downs share the description %q", life)
	}
	s2 := &slotRelease{Volume: cloud.Volume{ID: "vol-1"}, AttachTime: attached.Add(time.Hour)}
	if s2.description(occasion{Kind: "manual"}, "i-1") == manual {
		t.Error("a manual down after a reattach reuses the earlier manual down's description")
	}
	if s2.description(lifecycleOccasion("i-1"), "i-1") != life {
		t.Error("the lifecycle description depends on the attach time; a rerun would not find its snapshot")
	}
}

// downWorld is a simulated region with one handover group, for the down, watch and snapshot tests.
type downWorld struct {
	*testRegion
	group string
}

func newDownWorld(t testing.TB, opts ...func(*sim.Options)) *downWorld {
	t.Helper()
	return &downWorld{testRegion: newTestRegion(t, opts...), group: testGroup}
}

// volumeFromSnapshot restores a snapshot into a new volume of the default slot in az and waits until it
// is available.
func (w *downWorld) volumeFromSnapshot(az string, generation int, snapshot string) string {
	w.t.Helper()
	out, err := w.ec2.CreateVolume(w.ctx(), &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(az), Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeGp3, SnapshotId: aws.String(snapshot),
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, map[string]string{
			cloud.TagGroup: w.group, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: strconv.Itoa(generation),
		}),
	})
	if err != nil {
		w.t.Fatalf("CreateVolume: %v", err)
	}
	id := aws.ToString(out.VolumeId)
	w.waitVolumeState(id, "available")
	return id
}

func (w *downWorld) describeVolume(id string) ec2types.Volume {
	w.t.Helper()
	out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil || len(out.Volumes) != 1 {
		w.t.Fatalf("DescribeVolumes %s: %v", id, err)
	}
	return out.Volumes[0]
}

func (w *downWorld) waitVolumeUntil(id string, ok func(ec2types.Volume) bool) ec2types.Volume {
	w.t.Helper()
	var v ec2types.Volume
	simtest.Eventually(w.t, waitBound, "volume "+id+" condition", func() (bool, string) {
		v = w.describeVolume(id)
		return ok(v), fmt.Sprintf("%s %+v", v.State, v.Attachments)
	})
	return v
}

// attach attaches a volume to an instance as /dev/sdf and waits for the attachment and, when the
// simulator has loop devices, the block device link.
func (w *downWorld) attach(vol, instance string) {
	w.t.Helper()
	if _, err := w.ec2.AttachVolume(w.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(instance), Device: aws.String("/dev/sdf")}); err != nil {
		w.t.Fatalf("AttachVolume: %v", err)
	}
	w.waitVolumeUntil(vol, func(v ec2types.Volume) bool {
		return len(v.Attachments) == 1 && v.Attachments[0].State == ec2types.VolumeAttachmentStateAttached
	})
}

// device is the block device of an attached volume on instance, as the simulator links it.
func (w *downWorld) device(instance, vol string) string {
	w.t.Helper()
	env := w.agentEnv(instance, nil)
	dev, seen, err := host.New(env("HANDOVER_DEV_DIR"), env("HANDOVER_SYS_DIR")).FindVolumeDevice(vol)
	if err != nil || dev == "" {
		w.t.Fatalf("device of %s: %v (%s)", vol, err, seen)
	}
	return dev
}

// mountNew makes an ext4 filesystem on the attached volume, mounts it at a new directory, writes a file
// and returns the mount point. The mount is removed when the test ends, if down has not removed it.
func (w *downWorld) mountNew(instance, vol, content string) string {
	w.t.Helper()
	dev := w.device(instance, vol)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		w.t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	mp := filepath.Join(w.dir, "mnt-"+vol)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := unix.Mount(dev, mp, "ext4", 0, ""); err != nil {
		w.t.Fatalf("mount %s: %v", dev, err)
	}
	w.t.Cleanup(func() {
		_ = host.ThawMountPoint(mp)
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	})
	if err := os.WriteFile(filepath.Join(mp, "data.txt"), []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return mp
}

func (w *downWorld) describeSnapshot(id string) (ec2types.Snapshot, bool) {
	w.t.Helper()
	out, err := w.ec2.DescribeSnapshots(w.ctx(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if cloud.HasCode(err, cloud.CodeSnapshotNotFound) {
		return ec2types.Snapshot{}, false
	}
	if err != nil || len(out.Snapshots) != 1 {
		w.t.Fatalf("DescribeSnapshots %s: %v", id, err)
	}
	return out.Snapshots[0], true
}

// slotSnapshots lists the slot's snapshots, newest first.
func (w *downWorld) slotSnapshots(slot string) []cloud.Snapshot {
	w.t.Helper()
	snaps, err := cloud.ListSlotSnapshots(w.ctx(), w.ec2, w.group, slot)
	if err != nil {
		w.t.Fatal(err)
	}
	return snaps
}

// callsBy lists the successful calls of action made by instance ("" for any caller).
func (w *downWorld) callsBy(action, instance string) []sim.Call {
	var out []sim.Call
	for _, c := range w.sim.Calls() {
		if c.Action == action && c.Code == "" && (instance == "" || strings.Contains(c.Caller, strings.ReplaceAll(instance, "-", ""))) {
			out = append(out, c)
		}
	}
	return out
}

// terminateHook is the termination lifecycle hook the tests' group has.
const terminateHook = "handover-terminate"

// autoScalingGroup creates a launch template (IMDSv2, tags in metadata, handover:group) and a group of one
// instance over two zones with a termination hook of heartbeatTimeout seconds (scaled by the simulator's
// speed), and returns the group name and its instance once InService.
func (w *downWorld) autoScalingGroup(heartbeatTimeout int32) (asgName, instance string) {
	w.t.Helper()
	asgName = w.group + "-asg"
	_, err := w.ec2.CreateLaunchTemplate(w.ctx(), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(asgName),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId:      aws.String("ami-0123456789abcdef0"),
			InstanceType: ec2types.InstanceTypeM6iLarge,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens:           ec2types.LaunchTemplateHttpTokensStateRequired,
				InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateEnabled,
			},
			TagSpecifications: []ec2types.LaunchTemplateTagSpecificationRequest{{
				ResourceType: ec2types.ResourceTypeInstance,
				Tags:         []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(w.group)}},
			}},
		},
	})
	if err != nil {
		w.t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	_, err = w.as.CreateAutoScalingGroup(w.ctx(), &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(asgName),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String(asgName)},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{"us-east-1a", "us-east-1b"},
		// The group is tagged too, as README's IAM policy section asks: the lifecycle calls of its
		// instances are scoped by the group's handover:group tag (aws:ResourceTag).
		Tags: []astypes.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(w.group), PropagateAtLaunch: aws.Bool(false)}},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{{
			LifecycleHookName:   aws.String(terminateHook),
			LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			HeartbeatTimeout:    aws.Int32(heartbeatTimeout),
			DefaultResult:       aws.String("CONTINUE"),
		}},
	})
	if err != nil {
		w.t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	instance = w.waitLifecycle(asgName, "", func(state string) bool { return state == "InService" })
	return asgName, instance
}

// waitLifecycle waits until an instance of the group (instance, or any when "") is in a lifecycle state
// that ok accepts, and returns that instance. An instance the group forgot counts as "Terminated".
func (w *downWorld) waitLifecycle(asgName, instance string, ok func(string) bool) string {
	w.t.Helper()
	var reached string
	simtest.Eventually(w.t, waitBound, fmt.Sprintf("group %s: instance %q in the wanted lifecycle state", asgName, instance), func() (bool, string) {
		out, err := w.as.DescribeAutoScalingGroups(w.ctx(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
		if err != nil || len(out.AutoScalingGroups) != 1 {
			return false, fmt.Sprintf("DescribeAutoScalingGroups: %v", err)
		}
		found := false
		for _, i := range out.AutoScalingGroups[0].Instances {
			id := aws.ToString(i.InstanceId)
			if instance != "" && id != instance {
				continue
			}
			found = true
			if ok(string(i.LifecycleState)) {
				reached = id
				return true, ""
			}
		}
		if instance != "" && !found && ok("Terminated") {
			reached = instance
			return true, ""
		}
		return false, fmt.Sprintf("%+v", out.AutoScalingGroups[0].Instances)
	})
	return reached
}

// agentRun is handover running in the background as an instance, with logs readable while it runs.
type agentRun struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr *syncBuffer
}

// startAgent runs `handover args...` as instance in the background until stop.
func (w *downWorld) startAgent(instance string, args ...string) *agentRun {
	w.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{cancel: cancel, done: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	env := w.agentEnv(instance, nil)
	stdout, stderr := w.tee(r.stdout), w.tee(r.stderr)
	go func() { r.done <- Main(ctx, args, Env{Getenv: env, Stdout: stdout, Stderr: stderr}) }()
	w.t.Cleanup(func() { r.stop(w.t) })
	return r
}

// stop cancels the run (as SIGTERM does) and returns its exit code.
func (r *agentRun) stop(t testing.TB) int {
	r.cancel()
	select {
	case code, ok := <-r.done:
		if ok {
			close(r.done)
			if testing.Verbose() {
				t.Logf("background handover -> %d\nstdout:\n%s\nstderr:\n%s", code, r.stdout.String(), r.stderr.String())
			}
			return code
		}
		return -1
	case <-time.After(60 * time.Second):
		t.Fatalf("handover did not stop within 60s of its context ending\n%s", r.stderr.String())
		return -1
	}
}

// waitLog waits until the run's log contains s.
func (r *agentRun) waitLog(t testing.TB, s string) {
	t.Helper()
	simtest.Eventually(t, waitBound, fmt.Sprintf("log shows %q", s), func() (bool, string) {
		log := r.stderr.String()
		return strings.Contains(log, s), "log:\n" + log
	})
}

// wait waits for the run to end by itself and returns what it printed, as runAgent does.
func (r *agentRun) wait(t testing.TB) agentResult {
	t.Helper()
	select {
	case code := <-r.done:
		close(r.done) // so that stop, at cleanup, finds the run collected
		return agentResult{code: code, stdout: r.stdout.String(), stderr: r.stderr.String()}
	case <-time.After(waitBound):
		t.Fatalf("handover did not end within %s\n%s", waitBound, r.stderr.String())
		return agentResult{}
	}
}

// testLogger logs to the test's output when verbose.
func testLogger(t testing.TB) *slog.Logger { return hosttest.Logger(t) }

func assertWritable(t testing.TB, dir string) { hosttest.AssertWritable(t, dir) }

// TestWatchLifecycleTerminatedRunsOneDown: the group terminates the instance (a termination hook holds it
// in Terminating:Wait); watch sees target-lifecycle-state Terminated and runs down once: the slow pre-stop
// command outlasts the heartbeat interval, so heartbeats are sent; the snapshot is consistent (service
// stopped, filesystem unmounted); the volume is detached; the hook is completed.
func TestWatchLifecycleTerminatedRunsOneDown(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	asgName, inst := w.autoScalingGroup(300) // 3 s at the test speed: heartbeats keep it from timing out
	az := w.instanceAZ(inst)
	vol := w.createSlotVolume(az, 1, nil)
	w.attach(vol, inst)
	mp := w.mountNew(inst, vol, "written before termination")
	state := filepath.Join(w.dir, "watch.json")

	run := w.startAgent(inst, "watch", "--state-file", state, "--poll-interval", "50ms",
		"--terminate-hook", terminateHook, "--heartbeat-interval", "100ms",
		"--pre-stop", "sleep 1", "--volume", "data:/dev/sdf:"+mp)
	run.waitLog(t, "watching instance metadata")
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(inst), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		t.Fatal(err)
	}
	w.waitLifecycle(asgName, inst, func(s string) bool { return s != "InService" && s != "Terminating" && s != "Terminating:Wait" })
	run.waitLog(t, "hand-over done for this event")
	if code := run.stop(t); code != fail.CodeOK {
		t.Errorf("watch exit %d after SIGTERM, want 0", code)
	}

	if n := len(w.callsBy("CreateSnapshot", inst)); n != 1 {
		t.Errorf("%d CreateSnapshot calls, want exactly one down", n)
	}
	if n := len(w.callsBy("RecordLifecycleActionHeartbeat", inst)); n == 0 {
		t.Error("no RecordLifecycleActionHeartbeat while the 1 s pre-stop command outlasted the 100 ms interval")
	}
	if n := len(w.callsBy("CompleteLifecycleAction", inst)); n != 1 {
		t.Errorf("%d CompleteLifecycleAction calls, want 1", n)
	}
	if n := len(w.callsBy("DetachVolume", inst)); n != 1 {
		t.Errorf("%d DetachVolume calls, want 1", n)
	}
	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots, want 1", len(snaps))
	}
	s := snaps[0]
	want := map[string]string{cloud.TagGroup: w.group, cloud.TagSlot: "data", cloud.TagGeneration: "1", cloud.TagSourceVolume: vol, cloud.TagSourceInstance: inst, cloud.TagConsistent: "true"}
	for k, v := range want {
		if s.Tags[k] != v {
			t.Errorf("snapshot tag %s = %q, want %q (all: %v)", k, s.Tags[k], v, s.Tags)
		}
	}
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(mp); mounted {
		t.Errorf("%s is still mounted after down", mp)
	}
	out := run.stdout.String()
	if !strings.Contains(out, "consistent, unmounted") || !strings.Contains(out, "detached") || !strings.Contains(out, "completed "+terminateHook) {
		t.Errorf("down's summary is missing a step:\n%s", out)
	}
	// The volume ends up available in its zone for a replacement there.
	w.waitVolumeState(vol, "available")
}

func (w *downWorld) instanceAZ(id string) string {
	w.t.Helper()
	out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		w.t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	return aws.ToString(out.Reservations[0].Instances[0].Placement.AvailabilityZone)
}

// instanceWithMountedVolume runs an instance in us-east-1a with a mounted ext4 volume of slot data and
// returns the instance, the volume and the mount point.
func (w *downWorld) instanceWithMountedVolume(content string) (inst, vol, mp string) {
	w.t.Helper()
	inst = w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	vol = w.createSlotVolume("us-east-1a", 1, nil)
	w.attach(vol, inst)
	return inst, vol, w.mountNew(inst, vol, content)
}

// TestWatchSpotNoticeAndRestart: a Spot interruption notice makes watch run down (no hook; freeze, since
// no pre-stop command); a watcher restarted afterwards on the same state file does not run it again.
func TestWatchSpotNoticeAndRestart(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst, vol, mp := w.instanceWithMountedVolume("spot data")
	state := filepath.Join(w.dir, "watch.json")
	args := []string{"watch", "--state-file", state, "--poll-interval", "50ms", "--volume", "data:/dev/sdf:" + mp}

	run := w.startAgent(inst, args...)
	run.waitLog(t, "watching instance metadata")
	if err := w.sim.SetSpotAction(inst, "terminate", time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	run.waitLog(t, "hand-over done for this event")
	if code := run.stop(t); code != fail.CodeOK {
		t.Errorf("watch exit %d, want 0", code)
	}
	if !strings.Contains(run.stderr.String(), "Spot interruption scheduled: working inside the budget") {
		t.Errorf("down did not work under the Spot budget:\n%s", run.stderr.String())
	}
	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 || !snaps[0].Consistent || snaps[0].SourceVolume != vol {
		t.Fatalf("snapshots after the Spot notice = %+v, want one consistent snapshot of %s", snaps, vol)
	}
	assertWritable(t, mp) // frozen for the call only

	again := w.startAgent(inst, args...)
	again.waitLog(t, "event already handed over; not running down again")
	if code := again.stop(t); code != fail.CodeOK {
		t.Errorf("restarted watch exit %d, want 0", code)
	}
	if n := len(w.callsBy("CreateSnapshot", inst)); n != 1 {
		t.Errorf("%d CreateSnapshot calls after a restart, want 1", n)
	}
	if strings.Contains(again.stdout.String(), "snapshot") {
		t.Errorf("the restarted watcher ran down:\n%s", again.stdout.String())
	}
}

// TestDownThawsWhenCreateSnapshotFails: every CreateSnapshot fails (injected); down freezes, gives up at
// the freeze bound, thaws, fails with exit 1 and leaves the volume attached; the filesystem is writable.
// Once the API heals, a rerun converges.
func TestDownThawsWhenCreateSnapshotFails(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst, vol, mp := w.instanceWithMountedVolume("precious")
	w.sim.SetFaults(sim.Faults{ErrorRate: map[string]float64{"CreateSnapshot": 1}})
	args := []string{"down", "--release", "freeze", "--freeze-timeout", "500ms", "--volume", "data:/dev/sdf:" + mp}
	res := w.runAgent(w.ctx(), inst, nil, args...)
	if res.code != fail.CodeFailed {
		t.Fatalf("exit %d, want 1\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "msg=frozen") || !strings.Contains(res.stderr, "msg=thawed") {
		t.Errorf("the log does not show freeze then thaw:\n%s", res.stderr)
	}
	assertWritable(t, mp)
	if len(w.slotSnapshots("data")) != 0 {
		t.Error("a snapshot exists although every CreateSnapshot failed")
	}
	if v := w.describeVolume(vol); len(v.Attachments) != 1 || v.Attachments[0].State != ec2types.VolumeAttachmentStateAttached {
		t.Errorf("volume after the failed down: %+v, want still attached", v.Attachments)
	}

	w.sim.SetFaults(sim.Faults{})
	res = w.runAgent(w.ctx(), inst, nil, args...)
	if res.code != fail.CodeOK {
		t.Fatalf("rerun exit %d\n%s", res.code, res.stderr)
	}
	if snaps := w.slotSnapshots("data"); len(snaps) != 1 || !snaps[0].Consistent {
		t.Errorf("after the rerun: %+v, want one consistent snapshot", snaps)
	}
	assertWritable(t, mp)
}

// TestDownPreStopFailingOrHanging: a pre-stop command that fails or hangs is bounded and logged; the
// snapshot is still taken, but not tagged consistent, and down exits 1 saying so.
func TestDownPreStopFailingOrHanging(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		args    []string
		wantLog string
	}{
		{"failing", []string{"--pre-stop", "false"}, "pre-stop command failed"},
		{"hanging", []string{"--pre-stop", "sleep 600", "--pre-stop-timeout", "300ms"}, "pre-stop command timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDownWorld(t)
			inst, vol, mp := w.instanceWithMountedVolume("x")
			res := w.runAgent(w.ctx(), inst, nil, append([]string{"down", "--volume", "data:/dev/sdf:" + mp}, tc.args...)...)
			if res.code != fail.CodeFailed {
				t.Fatalf("exit %d, want 1\n%s", res.code, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.wantLog) || !strings.Contains(res.stderr, "no snapshot is marked consistent") {
				t.Errorf("stderr does not say what went wrong:\n%s", res.stderr)
			}
			snaps := w.slotSnapshots("data")
			if len(snaps) != 1 || snaps[0].SourceVolume != vol {
				t.Fatalf("snapshots = %+v, want one of %s", snaps, vol)
			}
			if v, ok := snaps[0].Tags[cloud.TagConsistent]; ok {
				t.Errorf("snapshot tagged %s=%s after a failed pre-stop command", cloud.TagConsistent, v)
			}
			if !strings.Contains(res.stdout, "NOT consistent") {
				t.Errorf("summary does not flag the snapshot:\n%s", res.stdout)
			}
		})
	}
}

// TestDownRerunConverges: a second down takes no second snapshot and makes no second detach; in freeze
// mode (volume left attached) the snapshot of the first run is found by its description.
func TestDownRerunConverges(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	t.Run("unmount", func(t *testing.T) {
		w := newDownWorld(t)
		inst, _, mp := w.instanceWithMountedVolume("x")
		// --wait-snapshot: down returns only once its snapshot is completed.
		args := []string{"down", "--pre-stop", "true", "--wait-snapshot", "--volume", "data:/dev/sdf:" + mp}
		for i := range 2 {
			if res := w.runAgent(w.ctx(), inst, nil, args...); res.code != fail.CodeOK {
				t.Fatalf("run %d: exit %d\n%s", i+1, res.code, res.stderr)
			}
			if snaps := w.slotSnapshots(cloud.DefaultSlot); len(snaps) != 1 || snaps[0].State != "completed" {
				t.Fatalf("after run %d with --wait-snapshot: %+v, want one completed snapshot", i+1, snaps)
			}
		}
		if c, d := len(w.callsBy("CreateSnapshot", inst)), len(w.callsBy("DetachVolume", inst)); c != 1 || d != 1 {
			t.Errorf("CreateSnapshot %d, DetachVolume %d after two downs; want 1 and 1", c, d)
		}
	})
	t.Run("freeze", func(t *testing.T) {
		w := newDownWorld(t)
		inst, _, mp := w.instanceWithMountedVolume("x")
		args := []string{"down", "--volume", "data:/dev/sdf:" + mp}
		first := w.runAgent(w.ctx(), inst, nil, args...)
		second := w.runAgent(w.ctx(), inst, nil, args...)
		if first.code != fail.CodeOK || second.code != fail.CodeOK {
			t.Fatalf("exits %d, %d\n%s\n%s", first.code, second.code, first.stderr, second.stderr)
		}
		if n := len(w.callsBy("CreateSnapshot", inst)); n != 1 {
			t.Errorf("%d CreateSnapshot calls after two downs, want 1", n)
		}
		if !strings.Contains(second.stdout, "already taken") {
			t.Errorf("the rerun does not report the earlier snapshot:\n%s", second.stdout)
		}
		// Safety rule: a mounted volume is never detached (freeze mode leaves it mounted).
		if n := len(w.callsBy("DetachVolume", inst)); n != 0 {
			t.Errorf("%d DetachVolume calls for a volume that stays mounted, want none", n)
		}
		assertWritable(t, mp)
	})
}

// TestDownDryRun prints the plan and changes nothing.
func TestDownDryRun(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst, vol, mp := w.instanceWithMountedVolume("x")
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), inst, nil, "down", "--dry-run", "--pre-stop", "systemctl stop app", "--release-eip", "--volume", "data:/dev/sdf:"+mp)
	if res.code != fail.CodeOK {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"pre-stop command \"systemctl stop app\"", "unmount " + mp, vol, "disassociate the group's Elastic IP"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, res.stdout)
		}
	}
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("dry run made mutating calls: %v", m)
	}
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(mp); !mounted {
		t.Error("dry run unmounted the filesystem")
	}
}

// downArgs is `down` for instance id with the default slot where upArgs mounts it.
func (w *downWorld) downArgs(id string, extra ...string) []string {
	return append([]string{"down", "--volume", "data:/dev/sdf:" + w.mountPoint(id)}, extra...)
}

// TestDownThenSameAZReplacementReattaches: down unmounts and detaches the volume; a replacement in the same
// zone reattaches it with no snapshot restore (no CreateVolume at all) and finds the data; the Elastic IP
// that down released (--release-eip) goes to the replacement.
func TestDownThenSameAZReplacementReattaches(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	old := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	data := w.writeData(w.mountPoint(old), "orders.db", 256<<10)

	res := w.runAgent(w.ctx(), old, nil, w.downArgs(old, "--pre-stop", "true", "--release-eip")...)
	if res.code != fail.CodeOK {
		t.Fatalf("down exit %d\n%s", res.code, res.stderr)
	}
	if h := w.addressHolder(alloc); h != "" {
		t.Errorf("address still on %s after down --release-eip", h)
	}

	repl := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	w.sim.ResetCalls()
	res = w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	mustSucceed(t, res)
	if n := w.calls("CreateVolume"); n != 0 {
		t.Errorf("the replacement made %d CreateVolume calls; the detached volume should have been reattached", n)
	}
	if n := w.calls("AttachVolume"); n != 1 {
		t.Errorf("%d AttachVolume calls, want 1", n)
	}
	got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data on the replacement differs (%d bytes, err %v)", len(got), err)
	}
	if h := w.addressHolder(alloc); h != repl {
		t.Errorf("address holder %q, want the replacement %s", h, repl)
	}
}

// TestUpPrefersTheSnapshotDownMade: a periodic snapshot exists, then more data is written and down takes
// its snapshot; a replacement in another zone waits for down's snapshot while it is pending and restores
// it, not the older periodic one, so the last write survives.
func TestUpPrefersTheSnapshotDownMade(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	old := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	w.writeData(w.mountPoint(old), "early.db", 64<<10)

	periodic := w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old))
	mustSucceed(t, periodic)
	snaps := w.slotSnapshots(cloud.DefaultSlot)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots after `handover snapshot`, want 1", len(snaps))
	}
	w.waitSnapshotState(snaps[0].ID, "completed")
	late := w.writeData(w.mountPoint(old), "late.db", 64<<10)

	// down's snapshot stays pending until the replacement is seen waiting for it.
	release := w.sim.Hold(sim.SnapshotComplete, "")
	defer release()
	res := w.runAgent(w.ctx(), old, nil, w.downArgs(old, "--pre-stop", "true", "--release-eip")...)
	if res.code != fail.CodeOK {
		t.Fatalf("down exit %d\n%s", res.code, res.stderr)
	}
	var downSnap cloud.Snapshot
	for _, s := range w.slotSnapshots(cloud.DefaultSlot) {
		if s.ID != snaps[0].ID {
			downSnap = s
		}
	}
	if downSnap.ID == "" || downSnap.State != "pending" || !downSnap.Consistent {
		t.Fatalf("down's snapshot = %+v, want a pending consistent one", downSnap)
	}

	repl := w.runInstance("us-east-1b", map[string]string{cloud.TagGroup: w.group}, true)
	run := w.startAgent(repl, w.upArgs(repl)...)
	run.waitLog(t, "waiting for it rather than restoring older data")
	release()
	res = run.wait(t)
	mustSucceed(t, res)
	var restored ec2types.Volume
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.AvailabilityZone) == "us-east-1b" {
			restored = v
		}
	}
	if got := aws.ToString(restored.SnapshotId); got != downSnap.ID {
		t.Errorf("the replacement restored %q, want down's snapshot %s (not the periodic %s)", got, downSnap.ID, snaps[0].ID)
	}
	if !strings.Contains(res.stderr, "action=wait-snapshot why=\"the newest snapshot "+downSnap.ID) {
		t.Errorf("up's log does not show it waiting for %s:\n%s", downSnap.ID, res.stderr)
	}
	got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), "late.db"))
	if err != nil || !bytes.Equal(got, late) {
		t.Fatalf("the write made after the periodic snapshot is lost on the replacement (err %v)", err)
	}
	if h := w.addressHolder(alloc); h != repl {
		t.Errorf("address holder %q, want %s", h, repl)
	}
}

// BenchmarkHandoverAtDefaultDelays measures the whole hand-over in the simulator at AWS-like delays
// (sim.DefaultDelays, Speed 1): the group terminates the instance, watch sees target-lifecycle-state
// Terminated and runs down (unmount, snapshot, detach, complete the hook), the group's replacement comes up
// in the other zone and `up` restores the snapshot and claims the Elastic IP. It reports the time from the
// trigger seen by watch to the replacement having the data and the address, against the simulator's
// delays on the critical path plus 2 s:
//
//	max(InstanceStart, Snapshot) + CreateVolumeFromSnapshot + Attach
//
// (the replacement launches as soon as the old instance is marked for replacement, so its start runs
// alongside down and the snapshot). Each iteration takes about a minute; run it with
//
//	sudo go test ./agent -run '^$' -bench HandoverAtDefaultDelays -benchtime 1x
func BenchmarkHandoverAtDefaultDelays(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (loop devices, mkfs, mount)")
	}
	d := sim.DefaultDelays
	critical := max(d.InstanceStart, d.Snapshot) + d.CreateVolumeFromSnapshot + d.Attach
	budget := critical + 2*time.Second
	var total time.Duration
	for range b.N {
		b.StopTimer()
		seen, done := handoverOnce(b)
		b.StartTimer()
		took := done.Sub(seen)
		total += took
		b.Logf("trigger seen -> replacement has data and EIP: %s (critical path %s, budget %s)", took.Round(time.Millisecond), critical, budget)
		if took > budget {
			b.Errorf("hand-over took %s, over the budget of %s", took.Round(time.Millisecond), budget)
		}
	}
	// The benchmark timer would count the setup; the hand-over itself is what ns/op reports.
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/handover")
	b.ReportMetric(critical.Seconds(), "s-critical-path")
}

// handoverOnce sets up a group with data and plays one hand-over; it returns when watch saw the trigger and
// when the replacement's up finished with the data and the address in place.
func handoverOnce(b *testing.B) (seen, done time.Time) {
	w := newDownWorld(b, func(o *sim.Options) { o.Speed = 1 })
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	asgName, old := w.autoScalingGroup(300)
	if res := w.runAgent(w.ctx(), old, nil, w.upArgs(old)...); res.code != fail.CodeOK {
		b.Fatalf("up on %s: exit %d\n%s", old, res.code, res.stderr)
	}
	data := w.writeData(w.mountPoint(old), "orders.db", 1<<20)
	watch := w.startAgent(old, "watch", "--volume", "data:/dev/sdf:"+w.mountPoint(old), "--pre-stop", "true",
		"--terminate-hook", terminateHook, "--state-file", filepath.Join(w.dir, "watch.json"), "--poll-interval", "100ms")
	watch.waitLog(b, "watching instance metadata")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(old), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		b.Fatal(err)
	}
	watch.waitLog(b, "hand-over triggered")
	seen = time.Now()
	repl := w.replacementOf(asgName, old)
	w.waitInstanceState(repl, "running")
	res := w.runAgent(ctx, repl, nil, w.upArgs(repl)...)
	done = time.Now()
	if res.code != fail.CodeOK {
		b.Fatalf("up on the replacement: exit %d\n%s", res.code, res.stderr)
	}
	watch.waitLog(b, "hand-over done for this event")
	watch.stop(b)
	got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		b.Fatalf("data on the replacement differs (err %v)", err)
	}
	if h := w.addressHolder(alloc); h != repl {
		b.Fatalf("address on %q, want the replacement %s", h, repl)
	}
	return seen, done
}

// replacementOf waits for the group to launch an instance other than old and returns it.
func (w *downWorld) replacementOf(asgName, old string) string {
	w.t.Helper()
	var repl string
	simtest.Eventually(w.t, waitBound, "a replacement for "+old+" in group "+asgName, func() (bool, string) {
		out, err := w.as.DescribeAutoScalingGroups(w.ctx(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
		if err != nil || len(out.AutoScalingGroups) != 1 {
			return false, fmt.Sprintf("DescribeAutoScalingGroups: %v", err)
		}
		for _, i := range out.AutoScalingGroups[0].Instances {
			if id := aws.ToString(i.InstanceId); id != old {
				repl = id
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", out.AutoScalingGroups[0].Instances)
	})
	return repl
}

// TestUsageErrorsFailBeforeMetadata: a bad flag is exit 2 at once, without waiting for instance metadata
// (here unreachable, which would be exit 3 after --imds-timeout).
func TestUsageErrorsFailBeforeMetadata(t *testing.T) {
	t.Parallel()
	env := mapEnv(map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1"})
	for _, args := range [][]string{
		{"down", "--release", "eject"},
		{"down", "--pre-stop-shell"},
		{"down", "--timeout", "0s"},
		{"snapshot", "--timeout", "-1m"},
		{"watch", "--poll-interval", "0s"},
		{"watch", "--state-file", "relative.json"},
		{"snapshot", "--keep", "-1"},
	} {
		var stderr bytes.Buffer
		code := Main(context.Background(), append(args, "--imds-timeout", "1m"), Env{Getenv: env, Stdout: io.Discard, Stderr: &stderr})
		if code != fail.CodeUsage || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("handover %s: exit %d, stderr %q; want exit 2 and one line", strings.Join(args, " "), code, stderr.String())
		}
	}
}

// TestDownWrongTerminateHook: a --terminate-hook the group does not have is bad configuration (exit 2)
// with a line naming the group's hooks, not "no active action" and exit 0; the instance stays held.
func TestDownWrongTerminateHook(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t)
	asgName, inst := w.autoScalingGroup(7200) // 72 s at the test speed: only down could end the wait
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(inst), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		t.Fatal(err)
	}
	w.waitLifecycle(asgName, inst, func(s string) bool { return s == "Terminating:Wait" })
	res := w.runAgent(w.ctx(), inst, nil, "down", "--terminate-hook", "handover-terminat")
	mustExit(t, res, fail.CodeUsage, "--terminate-hook handover-terminat", "no hook named handover-terminat on group "+asgName,
		"its hooks: "+terminateHook+" (autoscaling:EC2_INSTANCE_TERMINATING)")
	if s := w.lifecycleState(inst); s != "Terminating:Wait" {
		t.Errorf("lifecycle state after down with a wrong hook name: %s, want Terminating:Wait", s)
	}
}

// TestDownAndSnapshotReleaseTheLock: down and snapshot unlock the lock they share with up when they
// return, so that the next run in the same process (watch runs down in-process) need not wait for it.
func TestDownAndSnapshotReleaseTheLock(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t)
	id := w.runInstance("us-east-1a", groupTags, true)
	lockPath := w.agentEnv(id, nil)("HANDOVER_LOCK_FILE")
	for _, cmd := range []string{"down", "snapshot"} {
		res := w.runAgent(w.ctx(), id, nil, cmd) // no volume attached: down has nothing to do, snapshot refuses
		held, err := host.New("/dev", "/sys").Lock(context.Background(), lockPath, 0)
		if err != nil {
			t.Fatalf("after handover %s (exit %d) the lock is still held: %v\n%s", cmd, res.code, err, res.stderr)
		}
		held.Unlock()
	}
}
