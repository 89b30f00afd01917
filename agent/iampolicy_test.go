package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// The iam-policy tests hold the policy to what the commands do. Every command runs against the simulator
// in the scenarios that make different calls (iamScenarios), and the simulator's call log says which API
// operations the instance under test called. Then:
//
//  1. every call of a scenario has a row in awsCalls for the scenario's commands and options, and each
//     permission of that row is in the statement it belongs to in the policy `handover iam-policy` prints
//     for those commands and options (a missing permission is an AccessDenied in AWS);
//  2. every permission of the policy printed for one command with all its options was needed by some call
//     of a scenario of that command (a permission nothing calls is one too many).
//
// CreateTags of up is checked closer still: each call's tag keys and resource type against the statement
// conditions of the printed policy, for a tag on an existing resource is allowed for one key only.
// TestIAMPolicyChecksCanFail shows that both checks fail on a policy that lacks or adds an action.

// update (-update) rewrites the files tests compare with: agent/testdata/iam-policy-*.json and
// RELIABILITY.md's bad-input table.
var update = flag.Bool("update", false, "rewrite agent/testdata/iam-policy-*.json and RELIABILITY.md's bad-input table from the current output")

// iamRun is what one scenario's runs of handover did.
type iamRun struct {
	calls  []sim.Call             // the instance under test's API calls
	tagged []*ec2.CreateTagsInput // up's CreateTags, when the scenario records them
	uses   map[policyUse]bool     // what the scenario's iam-policy flags select (set by the test)
}

// iamScenario is one situation a command meets, with the iam-policy flags for its command and options.
type iamScenario struct {
	name   string
	group  string   // the handover group (default testGroup)
	policy []string // iam-policy flags: --commands and the options the runs use
	root   bool     // it mounts (loop devices, mkfs)
	run    func(t testing.TB, begin beginRun) iamRun
}

// beginRun starts the part of a scenario the policy is held to, just before the instance under test (id)
// runs handover: the call log is emptied, and the enforced test (iam_enforced_test.go) attaches the policy
// to the instance's role.
type beginRun func(w *testRegion, id string)

// resetCalls is the call-log test's beginRun: no policy is enforced.
func resetCalls(w *testRegion, _ string) { w.sim.ResetCalls() }

// callerOf is the access key the simulator gives an instance's agent (InstanceEnv).
func callerOf(id string) string { return "AKID" + strings.ReplaceAll(id, "-", "") }

// callsOf returns the calls instance id made since the last ResetCalls.
func (w *testRegion) callsOf(id string) []sim.Call {
	var out []sim.Call
	for _, c := range w.sim.Calls() {
		if c.Caller == callerOf(id) {
			out = append(out, c)
		}
	}
	return out
}

// tagRecorder records every CreateTags an EC2 client sends.
type tagRecorder struct {
	cloud.EC2
	mu  *sync.Mutex
	got *[]*ec2.CreateTagsInput
}

func (r tagRecorder) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, opts ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	r.mu.Lock()
	*r.got = append(*r.got, in)
	r.mu.Unlock()
	return r.EC2.CreateTags(ctx, in, opts...)
}

// upRecorded runs `handover up args...` as instance id, like runAgent but through up's client factory: the
// EC2 client is wrapped by wrap (when not nil), and every CreateTags it sends is recorded.
func (w *testRegion) upRecorded(ctx context.Context, id string, wrap func(cloud.EC2) cloud.EC2, args ...string) (agentResult, []*ec2.CreateTagsInput) {
	w.t.Helper()
	var mu sync.Mutex
	var tagged []*ec2.CreateTagsInput
	factory := func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error) {
		c, err := cloud.NewClients(ctx, getenv, region)
		if err != nil {
			return nil, err
		}
		if wrap != nil {
			c.EC2 = wrap(c.EC2)
		}
		c.EC2 = tagRecorder{EC2: c.EC2, mu: &mu, got: &tagged}
		return c, nil
	}
	var stdout, stderr bytes.Buffer
	err := up(ctx, Env{Getenv: w.agentEnv(id, nil), Stdout: w.tee(&stdout), Stderr: w.tee(&stderr)}, args[1:], factory)
	if err != nil {
		fmt.Fprintf(w.tee(&stderr), "handover up: %s\n", errorLine(err))
	}
	res := agentResult{code: ExitCode(err), stdout: stdout.String(), stderr: stderr.String()}
	if testing.Verbose() {
		w.t.Logf("handover %s as %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), id, res.code, res.stdout, res.stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	return res, append([]*ec2.CreateTagsInput(nil), tagged...)
}

// leaseMovesAfterCreateVolume is the EC2 API of a run whose lease moves to another instance while its
// CreateVolume is in flight: move runs once, when the first CreateVolume has returned.
type leaseMovesAfterCreateVolume struct {
	cloud.EC2
	move func()
	once *sync.Once
}

func (c leaseMovesAfterCreateVolume) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, opts ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	out, err := c.EC2.CreateVolume(ctx, in, opts...)
	if err == nil {
		c.once.Do(c.move)
	}
	return out, err
}

// iamTerminatingMember makes an Auto Scaling group (tagged handover:group, propagated) of one instance
// whose launch template keeps tags out of metadata, with the termination hook, and starts terminating
// the instance: it waits in Terminating:Wait, held there (no hook timeout) until the test ends.
func (w *downWorld) iamTerminatingMember() (asgName, instance string) {
	w.t.Helper()
	asgName = w.group + "-asg"
	if _, err := w.ec2.CreateLaunchTemplate(w.ctx(), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(asgName),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens: ec2types.LaunchTemplateHttpTokensStateRequired, InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateDisabled,
			},
		},
	}); err != nil {
		w.t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	if _, err := w.as.CreateAutoScalingGroup(w.ctx(), &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(asgName),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String(asgName)},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{"us-east-1a"},
		Tags:              []astypes.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(w.group), PropagateAtLaunch: aws.Bool(true)}},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{{
			LifecycleHookName: aws.String(terminateHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			HeartbeatTimeout: aws.Int32(300), DefaultResult: aws.String("CONTINUE"),
		}},
	}); err != nil {
		w.t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	instance = w.waitLifecycle(asgName, "", func(s string) bool { return s == "InService" })
	w.t.Cleanup(w.sim.Hold(sim.HookTimeout, ""))
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(instance), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		w.t.Fatal(err)
	}
	w.waitLifecycle(asgName, instance, func(s string) bool { return s == "Terminating:Wait" })
	return asgName, instance
}

// iamScenarios are the situations that make the commands call different things.
var iamScenarios = []*iamScenario{
	{name: "up first boot: a blank volume", policy: []string{"--commands", "up"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.unmountOnCleanup()
		w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id)...)
		mustSucceed(t, res)
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up in another AZ: restore the snapshot, tag the old volume superseded", policy: []string{"--commands", "up"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.unmountOnCleanup()
		w.allocateAddress(testGroup)
		old := w.runInstance("us-east-1a", groupTags, true)
		mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
		w.unmount(w.mountPoint(old))
		w.snapshot(aws.ToString(w.slotVolumes()[0].VolumeId), 1, true, true)
		w.terminate(old)
		id := w.runInstance("us-east-1b", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id)...)
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, "restored from") || len(tagged) == 0 {
			t.Errorf("not a restore that tags the old volume superseded (%d CreateTags):\n%s", len(tagged), res.stdout)
		}
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up in the same AZ: reattach; tags not in metadata", policy: []string{"--commands", "up"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.unmountOnCleanup()
		w.allocateAddress(testGroup)
		old := w.runInstance("us-east-1a", groupTags, true)
		mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
		w.unmount(w.mountPoint(old))
		w.terminate(old)
		id := w.runInstance("us-east-1a", groupTags, false)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id)...)
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, "reattached") {
			t.Errorf("not a reattach:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up --takeover: stop the live holder", policy: []string{"--commands", "up", "--takeover"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		live := w.runInstance("us-east-1a", groupTags, true)
		w.associate(alloc, live)
		id := w.runInstance("us-east-1b", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--takeover")...)
		mustSucceed(t, res)
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up with an orphaned newest volume: snapshot it first", policy: []string{"--commands", "up"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		old := w.createSlotVolume("us-east-1a", 1, nil)
		w.snapshot(old, 1, false, true)
		w.createSlotVolume("us-east-1a", 2, nil)
		id := w.runInstance("us-east-1b", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustSucceed(t, res)
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up --delete-superseded", policy: []string{"--commands", "up", "--delete-superseded"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		w.createSlotVolume("us-east-1a", 1, nil)
		newest := w.createSlotVolume("us-east-1a", 2, nil)
		w.snapshot(newest, 2, true, true)
		// In the volume's zone: up reattaches it, and its snapshot has completed, so retention may delete.
		id := w.runInstance("us-east-1a", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--delete-superseded")...)
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, "deleted") {
			t.Errorf("no superseded volume deleted:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up: the volume is attached to a stopped instance in this AZ", policy: []string{"--commands", "up"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		old := w.runInstance("us-east-1a", groupTags, true)
		(&downWorld{testRegion: w, group: testGroup}).attach(vol, old)
		w.stop(old)
		id := w.runInstance("us-east-1a", groupTags, true)
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustSucceed(t, res)
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "up in a group with a launch hook, heartbeating while it waits for a snapshot", policy: []string{"--commands", "up"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil) // us-east-1a, held in Pending:Wait by the hook "launch"
		vol := w.createSlotVolume("us-east-1b", 1, nil)
		release := w.sim.Hold(sim.SnapshotComplete, "")
		defer release()
		w.snapshot(vol, 1, true, false) // down's final snapshot, still pending: up waits for it
		begin(w, id)
		type result struct {
			res    agentResult
			tagged []*ec2.CreateTagsInput
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan result, 1)
		go func() {
			res, tagged := w.upRecorded(ctx, id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch")...)
			done <- result{res, tagged}
		}()
		defer func() { cancel(); <-done }() // the run ends before the test does, whatever happens
		// up heartbeats its launch hook every 10 s: wait for one before letting the snapshot complete.
		simtest.Eventually(t, 30*time.Second, "a heartbeat of the launch hook", func() (bool, string) {
			for _, c := range w.callsOf(id) {
				if c.Action == "RecordLifecycleActionHeartbeat" {
					return true, ""
				}
			}
			return false, "no RecordLifecycleActionHeartbeat yet"
		})
		release()
		var r result
		select {
		case r = <-done:
			done <- r // for the deferred wait
		case <-time.After(waitBound):
			t.Fatal("up did not finish after the snapshot completed")
		}
		mustSucceed(t, r.res)
		if !strings.Contains(r.res.stdout, "hook launch completed with CONTINUE") {
			t.Errorf("the launch hook was not completed:\n%s", r.res.stdout)
		}
		return iamRun{calls: w.callsOf(id), tagged: r.tagged}
	}},
	{name: "up loses the lease while CreateVolume runs: it deletes what it made", policy: []string{"--commands", "up"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		other := w.runInstance("us-east-1b", groupTags, true)
		id := w.runInstance("us-east-1a", groupTags, true)
		move := func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := w.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
			if err == nil && len(out.Addresses) == 1 {
				_, err = w.ec2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: out.Addresses[0].AssociationId})
			}
			if err == nil {
				_, err = w.ec2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(alloc), InstanceId: aws.String(other)})
			}
			if err != nil {
				t.Errorf("moving the lease: %v", err)
			}
		}
		begin(w, id)
		res, tagged := w.upRecorded(w.ctx(), id, func(c cloud.EC2) cloud.EC2 {
			return leaseMovesAfterCreateVolume{EC2: c, move: move, once: &sync.Once{}}
		}, w.upArgs(id, "--no-mount")...)
		mustExit(t, res, fail.CodeFenced, "no longer this instance's")
		if !strings.Contains(res.stderr, "deleted the volume made under a lease that moved") {
			t.Errorf("the volume made under the lost lease was not deleted:\n%s", res.stderr)
		}
		return iamRun{calls: w.callsOf(id), tagged: tagged}
	}},
	{name: "down with a wrong hook name, then rerun right: heartbeats, --release-eip; tags not in metadata", policy: []string{"--commands", "down"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		_, inst := w.iamTerminatingMember()
		w.associate(w.allocateAddress(w.group), inst)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(vol, inst)
		mp := w.mountNew(inst, vol, "written before termination")
		begin(w.testRegion, inst)
		vols := "data:/dev/sdf:" + mp
		first := w.runAgent(w.ctx(), inst, nil, "down", "--terminate-hook", "handover-terminte", "--pre-stop", "true", "--volume", vols)
		mustExit(t, first, fail.CodeUsage, "no hook named handover-terminte")
		second := w.runAgent(w.ctx(), inst, nil, "down", "--terminate-hook", terminateHook, "--pre-stop", "sleep 1", "--heartbeat-interval", "100ms",
			"--release-eip", "--volume", vols)
		mustSucceed(t, second)
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "down of two slots with one device not visible: one CreateSnapshots", policy: []string{"--commands", "down"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		inst := w.runInstance("us-east-1a", groupTags, true)
		data := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(data, inst)
		mp := w.mountNew(inst, data, "written before termination")
		wal := w.createSlotVolume("us-east-1a", 1, map[string]string{cloud.TagSlot: "wal"})
		if _, err := w.ec2.AttachVolume(w.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(wal), InstanceId: aws.String(inst), Device: aws.String("/dev/sdg")}); err != nil {
			t.Fatal(err)
		}
		w.waitVolumeUntil(wal, func(v ec2types.Volume) bool {
			return len(v.Attachments) == 1 && v.Attachments[0].State == ec2types.VolumeAttachmentStateAttached
		})
		// The wal volume is attached but its device is gone from this host (a lost NVMe namespace): live.
		link := filepath.Join(w.agentEnv(inst, nil)("HANDOVER_DEV_DIR"), "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(wal, "-", ""))
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
		begin(w.testRegion, inst)
		res := w.runAgent(w.ctx(), inst, nil, "down", "--pre-stop", "true", "--volume", "data:/dev/sdf:"+mp, "--volume", "wal:/dev/sdg:"+filepath.Join(w.dir, "wal"))
		if len(w.callsBy("CreateSnapshots", inst)) != 1 {
			t.Errorf("down with a slot whose device is not visible made no CreateSnapshots call (exit %d):\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "watch --on-rebalance=off: the group terminates the instance, watch runs down", policy: []string{"--commands", "watch"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		_, inst := w.autoScalingGroup(300)
		vol := w.createSlotVolume(w.instanceAZ(inst), 1, nil)
		w.attach(vol, inst)
		mp := w.mountNew(inst, vol, "written before termination")
		begin(w.testRegion, inst)
		run := w.startWatch(inst, mp, "--terminate-hook", terminateHook, "--heartbeat-interval", "100ms", "--pre-stop", "sleep 1")
		if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
			InstanceId: aws.String(inst), ShouldDecrementDesiredCapacity: aws.Bool(false),
		}); err != nil {
			t.Fatal(err)
		}
		run.waitLog(t, "hand-over done for this event")
		if code := run.stop(t); code != fail.CodeOK {
			t.Errorf("watch exit %d", code)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "watch --on-rebalance=snapshot", policy: []string{"--commands", "watch", "--on-rebalance=snapshot"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		inst, _, mp := w.instanceWithMountedVolume("rebalance data")
		begin(w.testRegion, inst)
		run := w.startWatch(inst, mp, "--on-rebalance=snapshot")
		if err := w.sim.SetRebalance(inst, time.Now()); err != nil {
			t.Fatal(err)
		}
		run.waitLog(t, "snapshot done for this event")
		if code := run.stop(t); code != fail.CodeOK {
			t.Errorf("watch exit %d", code)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "watch --on-rebalance=replace: ask the group, then hand over through the hook", policy: []string{"--commands", "watch", "--on-rebalance=replace"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		_, inst := w.autoScalingGroup(300)
		vol := w.createSlotVolume(w.instanceAZ(inst), 1, nil)
		w.attach(vol, inst)
		mp := w.mountNew(inst, vol, "written before the recommendation")
		begin(w.testRegion, inst)
		run := w.startWatch(inst, mp, "--on-rebalance=replace", "--terminate-hook", terminateHook, "--heartbeat-interval", "100ms", "--pre-stop", "true")
		if err := w.sim.SetRebalance(inst, time.Now()); err != nil {
			t.Fatal(err)
		}
		run.waitLog(t, "replacement requested for this event")
		run.waitLog(t, "hand-over done for this event")
		if code := run.stop(t); code != fail.CodeOK {
			t.Errorf("watch exit %d", code)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "snapshot; tags not in metadata", policy: []string{"--commands", "snapshot"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		inst := w.runInstance("us-east-1a", groupTags, false)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(vol, inst)
		begin(w.testRegion, inst)
		mustSucceed(t, w.runAgent(w.ctx(), inst, nil, "snapshot"))
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "snapshot --freeze=false of two slots: one CreateSnapshots", policy: []string{"--commands", "snapshot"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		w.unmountOnCleanup()
		w.allocateAddress(testGroup)
		inst := w.runInstance("us-east-1a", groupTags, true)
		if res := w.runAgent(w.ctx(), inst, nil, append([]string{"up", "--size", "1", "--unit-dir", w.unitDir(inst)}, w.twoSlotArgs(inst)...)...); res.code != fail.CodeOK {
			t.Fatalf("up: exit %d: %s", res.code, res.stderr)
		}
		begin(w, inst)
		res := w.runAgent(w.ctx(), inst, nil, append([]string{"snapshot", "--freeze=false"}, w.twoSlotArgs(inst)...)...)
		mustSucceed(t, res)
		if w.calls("CreateSnapshots") != 1 {
			t.Errorf("snapshot --freeze=false of two slots made no CreateSnapshots call:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "watch: a scheduled retirement, replaced before it (--replace-before)", policy: []string{"--commands", "watch"}, root: true, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		_, inst := w.autoScalingGroup(300)
		vol := w.createSlotVolume(w.instanceAZ(inst), 1, nil)
		w.attach(vol, inst)
		mp := w.mountNew(inst, vol, "written before the event")
		begin(w.testRegion, inst)
		run := w.startWatch(inst, mp, "--replace-before", "3h", "--terminate-hook", terminateHook, "--heartbeat-interval", "100ms", "--pre-stop", "true")
		if _, err := w.sim.ScheduleEvent(inst, sim.ScheduledEvent{Code: imds.EventInstanceRetirement, NotBefore: time.Now().Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		run.waitLog(t, "scheduled event: asking the group to replace this instance before it")
		run.waitLog(t, "hand-over done for this event")
		if code := run.stop(t); code != fail.CodeOK {
			t.Errorf("watch exit %d", code)
		}
		if len(w.callsBy("TerminateInstanceInAutoScalingGroup", inst)) != 1 {
			t.Errorf("no TerminateInstanceInAutoScalingGroup for the scheduled retirement")
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "snapshot --keep 1", policy: []string{"--commands", "snapshot", "--keep", "1"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t, func(o *sim.Options) { o.SnapshotInterval = -1 })
		inst := w.runInstance("us-east-1a", groupTags, true)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(vol, inst)
		for range 2 {
			time.Sleep(3 * time.Millisecond) // distinct start times at the API's millisecond
			w.snapshot(vol, 1, true, true)
		}
		begin(w.testRegion, inst)
		res := w.runAgent(w.ctx(), inst, nil, "snapshot", "--keep", "1")
		mustSucceed(t, res)
		if len(w.callsBy("DeleteSnapshot", inst)) == 0 {
			t.Errorf("retention deleted no snapshot:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "snapshot after a move: retires the older volumes", policy: []string{"--commands", "snapshot"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t, func(o *sim.Options) { o.SnapshotInterval = -1 })
		inst := w.runInstance("us-east-1a", groupTags, true)
		oldest := w.createSlotVolume("us-east-1a", 1, nil)
		w.snapshot(oldest, 1, true, true)
		w.createSlotVolume("us-east-1a", 2, nil)
		cur := w.createSlotVolume("us-east-1a", 3, nil)
		w.attach(cur, inst)
		w.snapshot(cur, 3, true, true) // the timer's earlier snapshot of the current volume, completed
		begin(w.testRegion, inst)
		res := w.runAgent(w.ctx(), inst, nil, "snapshot")
		mustSucceed(t, res)
		if len(w.callsBy("DeleteVolume", inst)) != 1 || !strings.Contains(res.stdout, "deleted ["+oldest+"]") {
			t.Errorf("snapshot did not retire %s:\n%s", oldest, res.stdout)
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "snapshot --lock-snapshots 7d", policy: []string{"--commands", "snapshot", "--lock-snapshots", "7d"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		inst := w.runInstance("us-east-1a", groupTags, true)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(vol, inst)
		begin(w.testRegion, inst)
		mustSucceed(t, w.runAgent(w.ctx(), inst, nil, "snapshot", "--lock-snapshots", "7d"))
		if len(w.callsBy("LockSnapshot", inst)) != 1 {
			t.Errorf("snapshot --lock-snapshots made no LockSnapshot call")
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "down --lock-snapshots 7d", policy: []string{"--commands", "down", "--lock-snapshots", "7d"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newDownWorld(t)
		inst := w.runInstance("us-east-1a", groupTags, true)
		vol := w.createSlotVolume("us-east-1a", 1, nil)
		w.attach(vol, inst)
		begin(w.testRegion, inst)
		mustSucceed(t, w.runAgent(w.ctx(), inst, nil, "down", "--pre-stop", "true", "--lock-snapshots", "7d"))
		if len(w.callsBy("LockSnapshot", inst)) != 1 {
			t.Errorf("down --lock-snapshots made no LockSnapshot call")
		}
		return iamRun{calls: w.callsOf(inst)}
	}},
	{name: "status: another instance holds the address; tags not in metadata", policy: []string{"--commands", "status"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		holder := w.runInstance("us-east-1a", groupTags, true)
		w.associate(alloc, holder)
		snap := w.snapshot(w.createSlotVolume("us-east-1a", 1, nil), 1, true, true)
		// A volume restored from it: status reads its initialization (DescribeVolumeStatus).
		if _, err := w.ec2.CreateVolume(w.ctx(), &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(snap),
			VolumeType: ec2types.VolumeTypeGp3, TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume,
				map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: "2"})}); err != nil {
			t.Fatal(err)
		}
		id := w.runInstance("us-east-1b", groupTags, false)
		begin(w, id)
		res := w.runAgent(w.ctx(), id, nil, "status")
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, holder) {
			t.Errorf("status does not show the holder:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(id)}
	}},
	{name: "failover --force --wait-status-ok --swap-roles to a stopped standby", group: "db", policy: []string{"--commands", "failover"}, run: func(t testing.TB, begin beginRun) iamRun {
		w := newFailoverWorld(t)
		w.stop(w.standby)
		w.waitHealthy(w.primary)
		begin(w.testRegion, w.standby)
		res := w.failover("--group", w.group, "--force", "--wait-status-ok", "--swap-roles")
		mustSucceed(t, res)
		if w.addressHolder(w.alloc) != w.standby {
			t.Errorf("the address did not move to the standby:\n%s", res.stdout)
		}
		return iamRun{calls: w.callsOf(w.standby)}
	}},
}

// printedPolicy runs `handover iam-policy args...` with an empty environment and parses what it prints.
func printedPolicy(t *testing.T, args ...string) policyDocument {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), append([]string{"iam-policy"}, args...), Env{Getenv: mapEnv(nil), Stdout: &stdout, Stderr: &stderr})
	if code != fail.CodeOK {
		t.Fatalf("handover iam-policy %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	var doc policyDocument
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("handover iam-policy %s printed no policy: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	return doc
}

// policyUses are the uses iam-policy's flags select, as the command parses them.
func policyUses(t *testing.T, args []string) map[policyUse]bool {
	t.Helper()
	var c iamPolicyConfig
	f := newFlags("iam-policy", mapEnv(nil), io.Discard, time.Second)
	c.register(f)
	if err := f.parse(args); err != nil {
		t.Fatal(err)
	}
	if err := f.check(c.validate); err != nil {
		t.Fatal(err)
	}
	return c.uses()
}

// grants are the (statement, action) pairs of a policy.
func grants(doc policyDocument) map[string]bool {
	out := map[string]bool{}
	for _, s := range doc.Statement {
		for _, a := range s.Action {
			out[s.Sid+" "+a] = true
		}
	}
	return out
}

// callRows are the rows of awsCalls for an operation made by one of uses.
func callRows(op string, uses map[policyUse]bool) []awsCall {
	var out []awsCall
	for _, r := range awsCalls {
		if r.op == op && madeBy(r, uses) {
			out = append(out, r)
		}
	}
	return out
}

// uncovered is check 1: the calls whose row is missing, or whose permissions the policy does not grant in
// the statement they belong to.
func uncovered(calls []sim.Call, uses map[policyUse]bool, doc policyDocument) []string {
	have := grants(doc)
	problems := map[string]bool{}
	for _, c := range calls {
		if c.Action == "" {
			continue // a request whose body never arrived whole (a client gone under load): no operation was authorized
		}
		rows := callRows(c.Action, uses)
		if len(rows) == 0 {
			problems[fmt.Sprintf("%s: no row in awsCalls for %s (the code makes this call: add a row with its permissions)", c.Action, useList(uses))] = true
		}
		for _, r := range rows {
			for _, p := range r.needs {
				if !have[p.in.sid+" "+p.action] {
					problems[fmt.Sprintf("%s needs %s in statement %s, which the policy lacks", c.Action, p.action, p.in.sid)] = true
				}
			}
		}
	}
	return sortedKeys(problems)
}

// unneeded is check 2: the (statement, action) pairs of the policy that no call of the runs needed.
func unneeded(doc policyDocument, runs []iamRun) []string {
	needed := map[string]bool{}
	for _, run := range runs {
		for _, c := range run.calls {
			for _, r := range callRows(c.Action, run.uses) {
				for _, p := range r.needs {
					needed[p.in.sid+" "+p.action] = true
				}
			}
		}
	}
	extra := map[string]bool{}
	for g := range grants(doc) {
		if !needed[g] {
			extra[g] = true
		}
	}
	return sortedKeys(extra)
}

// untaggable is the CreateTags check: each call's tag keys on its resources' type must be allowed by a
// statement of the policy for tagging existing resources (no ec2:CreateAction), whose aws:TagKeys and
// aws:RequestTag conditions the call meets.
func untaggable(doc policyDocument, calls []*ec2.CreateTagsInput) []string {
	problems := map[string]bool{}
	for _, in := range calls {
		for _, id := range in.Resources {
			rtype := map[string]string{"vol": "volume", "i": "instance", "snap": "snapshot", "eipalloc": "elastic-ip"}[strings.SplitN(id, "-", 2)[0]]
			if !taggingAllowed(doc, rtype, in.Tags) {
				problems[fmt.Sprintf("CreateTags %v on a %s: no statement of the policy allows these keys on an existing %s", tagKeys(in.Tags), rtype, rtype)] = true
			}
		}
	}
	return sortedKeys(problems)
}

func taggingAllowed(doc policyDocument, rtype string, tags []ec2types.Tag) bool {
	for _, s := range doc.Statement {
		if !contains(s.Action, "ec2:CreateTags") || !resourceOfType(s.Resource, rtype) || conditionHas(s.Condition, "ec2:CreateAction") {
			continue
		}
		if allowed, ok := s.Condition["ForAllValues:StringEquals"]["aws:TagKeys"]; ok && !allIn(tagKeys(tags), allowed) {
			continue
		}
		ok := true
		for _, tag := range tags {
			if want, cond := s.Condition["StringEquals"]["aws:RequestTag/"+aws.ToString(tag.Key)]; cond && !allIn([]string{aws.ToString(tag.Value)}, want) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func resourceOfType(resources []string, rtype string) bool {
	for _, r := range resources {
		if r == "*" || strings.HasSuffix(r, ":"+rtype+"/*") {
			return true
		}
	}
	return false
}

func conditionHas(pc policyCondition, key string) bool {
	for _, keys := range pc {
		if _, ok := keys[key]; ok {
			return true
		}
	}
	return false
}

// allIn reports whether every x is one of the condition values (a string or a list of them).
func allIn(xs []string, values any) bool {
	var vs []string
	switch v := values.(type) {
	case string:
		vs = []string{v}
	case []string:
		vs = v
	case []any:
		for _, e := range v {
			vs = append(vs, fmt.Sprint(e))
		}
	}
	for _, x := range xs {
		if !contains(vs, x) {
			return false
		}
	}
	return true
}

func tagKeys(tags []ec2types.Tag) []string {
	var out []string
	for _, t := range tags {
		out = append(out, aws.ToString(t.Key))
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func useList(uses map[policyUse]bool) string {
	var out []string
	for u := range uses {
		out = append(out, string(u))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// sameCode: a command whose runs also stand for another's, because it runs that command's code: watch
// runs down (in.down) for a termination or a Spot notice.
var sameCode = map[string][]string{"watch": {"down"}}

// TestIAMPolicyAgainstTheCallLog runs every scenario and holds each to the policy for its commands and
// options (check 1), then holds the policy for each command with all its options to the calls the
// scenarios of that command made (check 2).
func TestIAMPolicyAgainstTheCallLog(t *testing.T) {
	t.Parallel()
	runs := make([]iamRun, len(iamScenarios))
	ran := make([]bool, len(iamScenarios))
	t.Run("scenarios", func(t *testing.T) {
		for i, sc := range iamScenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				if sc.root {
					requireRoot(t)
				}
				group := sc.group
				if group == "" {
					group = testGroup
				}
				flags := append([]string{"--group", group}, sc.policy...)
				run := sc.run(t, resetCalls)
				if t.Failed() {
					return
				}
				run.uses = policyUses(t, flags)
				if len(run.calls) == 0 {
					t.Fatal("the call log shows no call of the instance under test: the scenario proves nothing")
				}
				doc := printedPolicy(t, flags...)
				for _, p := range uncovered(run.calls, run.uses, doc) {
					t.Errorf("handover iam-policy %s: %s", strings.Join(flags, " "), p)
				}
				for _, p := range untaggable(doc, run.tagged) {
					t.Errorf("handover iam-policy %s: %s", strings.Join(flags, " "), p)
				}
				runs[i], ran[i] = run, true
			})
		}
	})
	for i, ok := range ran {
		if !ok {
			t.Skipf("scenario %q did not complete: the policy is not checked for unneeded permissions", iamScenarios[i].name)
		}
	}
	for _, cmd := range policyCommands {
		t.Run("no unneeded permission for "+cmd, func(t *testing.T) {
			var of []iamRun
			for _, run := range runs {
				for _, c := range append([]string{cmd}, sameCode[cmd]...) {
					if run.uses[policyUse(c)] {
						of = append(of, run)
						break
					}
				}
			}
			for _, mode := range []string{"snapshot", "replace"} {
				flags := []string{"--group", testGroup, "--commands", cmd, "--takeover", "--delete-superseded", "--keep", "1", "--lock-snapshots", "7d", "--on-rebalance=" + mode}
				for _, g := range unneeded(printedPolicy(t, flags...), of) {
					t.Errorf("handover iam-policy %s grants %s, which no run of %s needed", strings.Join(flags, " "), g, cmd)
				}
			}
		})
	}
}

// TestIAMPolicyChecksCanFail: each check fails when it should. Check 1 on a policy without CreateVolume
// (and without the CreateTags its TagSpecifications need), and on a call with no row; check 2 on a policy
// with an action nothing calls; the CreateTags check on a tag up does not set.
func TestIAMPolicyChecksCanFail(t *testing.T) {
	t.Parallel()
	up := policyUses(t, []string{"--commands", "up"})
	doc := printedPolicy(t, "--commands", "up", "--group", testGroup)
	calls := []sim.Call{{Action: "DescribeVolumes"}, {Action: "CreateVolume"}, {Action: "AttachVolume"}}
	if p := uncovered(calls, up, doc); len(p) != 0 {
		t.Fatalf("the right policy fails check 1: %v", p)
	}

	t.Run("a permission missing", func(t *testing.T) {
		var lacking policyDocument
		lacking.Version = doc.Version
		for _, s := range doc.Statement {
			if s.Sid == scopeCreateVolumes.sid || s.Sid == scopeTagVolumesAtCreation.sid {
				continue
			}
			lacking.Statement = append(lacking.Statement, s)
		}
		got := uncovered(calls, up, lacking)
		want := []string{
			"CreateVolume needs ec2:CreateTags in statement TagVolumesOnlyAtCreation, which the policy lacks",
			"CreateVolume needs ec2:CreateVolume in statement CreateVolumesOnlyTaggedForTheGroup, which the policy lacks",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("check 1 on a policy without CreateVolume:\n got %q\nwant %q", got, want)
		}
	})
	t.Run("a call with no row", func(t *testing.T) {
		got := uncovered([]sim.Call{{Action: "DeleteTags"}}, up, doc)
		if len(got) != 1 || !strings.Contains(got[0], "DeleteTags: no row in awsCalls") {
			t.Errorf("check 1 on a call nothing lists: %q", got)
		}
		// A row of another command does not count: CreateVolume of down is not up's row.
		got = uncovered([]sim.Call{{Action: "CreateVolume"}}, policyUses(t, []string{"--commands", "down"}), printedPolicy(t, "--commands", "down"))
		if len(got) != 1 || !strings.Contains(got[0], "CreateVolume: no row in awsCalls for down") {
			t.Errorf("check 1 on a CreateVolume of down: %q", got)
		}
	})
	t.Run("a permission too many", func(t *testing.T) {
		extra := doc
		extra.Statement = append(append([]policyStatement(nil), doc.Statement...), policyStatement{Sid: "Extra", Effect: "Allow", Action: []string{"ec2:RebootInstances"}, Resource: []string{"*"}})
		var all []sim.Call
		for _, r := range awsCalls {
			if r.op != "" && madeBy(r, up) {
				all = append(all, sim.Call{Action: r.op})
			}
		}
		if got := unneeded(doc, []iamRun{{calls: all, uses: up}}); len(got) != 0 {
			t.Fatalf("check 2 on the right policy and every call of up: %q", got)
		}
		if got := unneeded(extra, []iamRun{{calls: all, uses: up}}); strings.Join(got, ",") != "Extra ec2:RebootInstances" {
			t.Errorf("check 2 on a policy with RebootInstances: %q", got)
		}
		if got := unneeded(doc, []iamRun{{calls: all[1:], uses: up}}); len(got) == 0 {
			t.Errorf("check 2 passes although %s was never called", all[0].Action)
		}
	})
	t.Run("a tag the policy does not allow", func(t *testing.T) {
		ok := &ec2.CreateTagsInput{Resources: []string{"vol-0123456789abcdef0"}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagSuperseded), Value: aws.String("true")}}}
		if p := untaggable(doc, []*ec2.CreateTagsInput{ok}); len(p) != 0 {
			t.Errorf("the superseded tag is refused: %q", p)
		}
		for _, bad := range []*ec2.CreateTagsInput{
			{Resources: []string{"vol-0123456789abcdef0"}, Tags: []ec2types.Tag{{Key: aws.String("handover:mkfs"), Value: aws.String("started")}}},
			{Resources: []string{"vol-0123456789abcdef0"}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagSuperseded), Value: aws.String("false")}}},
			{Resources: []string{"vol-0123456789abcdef0"}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String("other")}}},
			{Resources: []string{"i-0123456789abcdef0"}, Tags: []ec2types.Tag{{Key: aws.String(cloud.TagSuperseded), Value: aws.String("true")}}},
		} {
			if p := untaggable(doc, []*ec2.CreateTagsInput{bad}); len(p) != 1 {
				t.Errorf("CreateTags %v of %v: %q, want it refused", tagKeys(bad.Tags), bad.Resources, p)
			}
		}
	})
}

// TestIAMPolicyDefaultGolden: the default output, byte for byte (go test -run TestIAMPolicyDefaultGolden
// -update rewrites it). The CloudFormation templates embed it.
func TestIAMPolicyDefaultGolden(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"default":  nil,
		"mydb":     {"--group", "mydb"},
		"failover": {"--commands", "failover"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), append([]string{"iam-policy"}, args...), Env{Getenv: mapEnv(nil), Stdout: &stdout, Stderr: &stderr}); code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, stderr.String())
		}
		path := filepath.Join("testdata", "iam-policy-"+name+".json")
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestIAMPolicyDefaultGolden -update ./agent/ to write it)", err)
		}
		if !bytes.Equal(stdout.Bytes(), want) {
			t.Errorf("handover iam-policy %s differs from %s (run with -update and review the diff):\n%s", strings.Join(args, " "), path, stdout.String())
		}
		// Deterministic: a second run prints the same bytes.
		var again bytes.Buffer
		Main(context.Background(), append([]string{"iam-policy"}, args...), Env{Getenv: mapEnv(nil), Stdout: &again, Stderr: io.Discard})
		if !bytes.Equal(again.Bytes(), stdout.Bytes()) {
			t.Errorf("handover iam-policy %s printed different output twice", strings.Join(args, " "))
		}
	}
}

// TestIAMPolicyOptions: what each option adds, and what stays out without it.
func TestIAMPolicyOptions(t *testing.T) {
	t.Parallel()
	has := func(doc policyDocument, sid, action string) bool { return grants(doc)[sid+" "+action] }
	sidOf := func(doc policyDocument, sid string) *policyStatement {
		for i := range doc.Statement {
			if doc.Statement[i].Sid == sid {
				return &doc.Statement[i]
			}
		}
		return nil
	}
	base := printedPolicy(t, "--group", "mydb")
	for _, tc := range []struct {
		flags       []string
		sid, action string
	}{
		{[]string{"--takeover"}, scopeInstances.sid, "ec2:StopInstances"},
		{[]string{"--keep", "7"}, scopeSnapshots.sid, "ec2:DeleteSnapshot"},
		{[]string{"--commands", "failover"}, scopeInstances.sid, "ec2:StartInstances"},
	} {
		if has(base, tc.sid, tc.action) {
			t.Errorf("the default policy has %s in %s: it belongs to %v only", tc.action, tc.sid, tc.flags)
		}
		with := printedPolicy(t, append([]string{"--group", "mydb"}, tc.flags...)...)
		if !has(with, tc.sid, tc.action) {
			t.Errorf("%v: no %s in %s", tc.flags, tc.action, tc.sid)
		}
	}
	// watch asks the group to replace the instance before a scheduled stop or retirement unless
	// --replace-before off; then only --on-rebalance=replace needs it.
	const terminate = "autoscaling:TerminateInstanceInAutoScalingGroup"
	if !has(base, scopeAutoScalingGroup.sid, terminate) {
		t.Errorf("the default policy lacks %s (watch's --replace-before is on by default)", terminate)
	}
	if off := printedPolicy(t, "--group", "mydb", "--replace-before", "off"); has(off, scopeAutoScalingGroup.sid, terminate) {
		t.Errorf("--replace-before off: %s still granted", terminate)
	}
	if replace := printedPolicy(t, "--group", "mydb", "--replace-before", "off", "--on-rebalance=replace"); !has(replace, scopeAutoScalingGroup.sid, terminate) {
		t.Errorf("--replace-before off --on-rebalance=replace: no %s", terminate)
	}
	// An option of a command that is not in --commands adds nothing.
	if got, want := printedPolicy(t, "--commands", "status", "--takeover", "--keep", "3", "--on-rebalance=replace", "--delete-superseded"), printedPolicy(t, "--commands", "status"); !equalJSON(got, want) {
		t.Errorf("options of other commands changed status's policy")
	}
	// watch --on-rebalance=snapshot takes snapshot's snapshot, which needs nothing down does not.
	if !equalJSON(printedPolicy(t, "--commands", "watch", "--on-rebalance=snapshot"), printedPolicy(t, "--commands", "watch")) {
		t.Errorf("--on-rebalance=snapshot changed watch's policy")
	}
	// Every statement but the two unscoped ones requires the group's tag.
	for _, s := range printedPolicy(t, "--commands", "up,down,watch,snapshot,status,failover", "--takeover", "--delete-superseded", "--keep", "1", "--lock-snapshots", "7d", "--on-rebalance=replace").Statement {
		if s.Sid == scopeDescribe.sid || s.Sid == scopeInterfaces.sid {
			continue
		}
		if s.Condition["StringLike"]["aws:ResourceTag/"+cloud.TagGroup] != "?*" && s.Condition["StringLike"]["aws:RequestTag/"+cloud.TagGroup] != "?*" {
			t.Errorf("statement %s does not require the %s tag: %v", s.Sid, cloud.TagGroup, s.Condition)
		}
	}

	t.Run("kms-key", func(t *testing.T) {
		key := "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		doc := printedPolicy(t, "--kms-key", key)
		use, grant := sidOf(doc, scopeKMS.sid), sidOf(doc, scopeKMSGrant.sid)
		if use == nil || grant == nil {
			t.Fatalf("--kms-key: no KMS statements:\n%+v", doc)
		}
		want := []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}
		if strings.Join(use.Action, ",") != strings.Join(want, ",") || strings.Join(use.Resource, ",") != key ||
			use.Condition["StringEquals"]["kms:ViaService"] != "ec2.eu-west-1.amazonaws.com" {
			t.Errorf("KMS use statement: %+v", *use)
		}
		if strings.Join(grant.Action, ",") != "kms:CreateGrant" || grant.Condition["Bool"]["kms:GrantIsForAWSResource"] != "true" ||
			grant.Condition["StringEquals"]["kms:ViaService"] != "ec2.eu-west-1.amazonaws.com" {
			t.Errorf("KMS grant statement: %+v", *grant)
		}
		for _, s := range printedPolicy(t, "--commands", "down,watch,snapshot,status,failover", "--kms-key", key).Statement {
			if strings.HasPrefix(s.Sid, "KMS") {
				t.Errorf("KMS statement %s without up, the only command that creates or attaches volumes", s.Sid)
			}
		}
		cn := printedPolicy(t, "--partition", "aws-cn", "--kms-key", "arn:aws-cn:kms:cn-north-1:123456789012:key/k")
		if s := sidOf(cn, scopeKMS.sid); s == nil || s.Condition["StringEquals"]["kms:ViaService"] != "ec2.cn-north-1.amazonaws.com.cn" {
			t.Errorf("aws-cn: %+v", s)
		}
	})
	t.Run("region, account, partition fill the ARNs", func(t *testing.T) {
		doc := printedPolicy(t, "--region", "eu-west-1", "--account", "123456789012", "--partition", "aws-us-gov", "--commands", "up")
		for _, want := range map[string]string{
			scopeVolumes.sid:          "arn:aws-us-gov:ec2:eu-west-1:123456789012:volume/*",
			scopeSnapshots.sid:        "arn:aws-us-gov:ec2:eu-west-1::snapshot/*",
			scopeAddress.sid:          "arn:aws-us-gov:ec2:eu-west-1:123456789012:elastic-ip/*",
			scopeAutoScalingGroup.sid: "arn:aws-us-gov:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/*",
		} {
			found := false
			for _, s := range doc.Statement {
				found = found || contains(s.Resource, want)
			}
			if !found {
				t.Errorf("no statement on %s", want)
			}
		}
	})
	t.Run("from the environment", func(t *testing.T) {
		var stdout bytes.Buffer
		env := mapEnv(map[string]string{"HANDOVER_GROUP": "fromenv", "HANDOVER_KEEP": "5", "HANDOVER_COMMANDS": "snapshot"})
		if code := Main(context.Background(), []string{"iam-policy"}, Env{Getenv: env, Stdout: &stdout, Stderr: io.Discard}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		var doc policyDocument
		if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		if s := sidOf(doc, scopeSnapshots.sid); s == nil || !contains(s.Action, "ec2:DeleteSnapshot") || s.Condition["StringEquals"]["aws:ResourceTag/"+cloud.TagGroup] != "fromenv" {
			t.Errorf("HANDOVER_GROUP, HANDOVER_KEEP, HANDOVER_COMMANDS not followed: %s", stdout.String())
		}
	})
}

func equalJSON(a, b policyDocument) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestIAMPolicyBadFlags: a bad flag is exit 2 and one line that names it, and nothing on stdout.
func TestIAMPolicyBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--commands", "up,reboot"}, want: `"reboot" is not a command`},
		{args: []string{"--commands", ""}, want: "--commands"},
		{args: []string{"--group", "my db"}, want: "--group"},
		{args: []string{"--kms-key", "alias/ebs"}, want: "--kms-key"},
		{args: []string{"--kms-key", "arn:aws:kms:eu-west-1:123456789012:key/k", "--region", "us-east-1"}, want: "not --region us-east-1"},
		{args: []string{"--kms-key", "arn:aws:kms:eu-west-1:123456789012:key/k", "--partition", "aws-cn"}, want: "not --partition aws-cn"},
		{args: []string{"--keep", "-1"}, want: "--keep"},
		{args: []string{"--keep", "many"}, want: "-keep"},
		{args: []string{"--on-rebalance=down"}, want: "--on-rebalance"},
		{args: []string{"--on-rebalance", "replace"}, want: "--on-rebalance=replace"},
		{args: []string{"--region", "Europe"}, want: "--region"},
		{args: []string{"--account", "1234"}, want: "--account"},
		{args: []string{"--partition", "azure"}, want: "--partition"},
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
		{args: []string{"up"}, want: `unexpected argument "up"`},
		{env: map[string]string{"HANDOVER_COMMANDS": "up,nope"}, want: "HANDOVER_COMMANDS"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), append([]string{"iam-policy"}, tc.args...), Env{Getenv: mapEnv(tc.env), Stdout: &stdout, Stderr: &stderr})
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if code != fail.CodeUsage || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || stdout.Len() != 0 {
			t.Errorf("iam-policy %v %v: exit %d, stderr %q, stdout %q; want exit 2, one line naming %q", tc.args, tc.env, code, stderr.String(), stdout.String(), tc.want)
		}
	}
}

// TestIAMPolicyRowsAreWellFormed: every row says who makes it and where, its uses are real, and every
// statement has a valid Sid.
func TestIAMPolicyRowsAreWellFormed(t *testing.T) {
	t.Parallel()
	known := map[policyUse]bool{}
	for _, u := range []policyUse{useUp, useUpTakeover, useUpDeleteOld, useUpKMS, useDown, useWatch, useWatchReplace, useWatchSnapshot,
		useWatchEvents, useSnapshot, useDownLock, useWatchLock, useSnapshotLock, useSnapshotKeep, useStatus, useFailover} {
		known[u] = true
	}
	for _, r := range awsCalls {
		if len(r.by) == 0 || r.code == "" || len(r.needs) == 0 {
			t.Errorf("row %q: who (%v), where (%q) and what (%d permissions) must all be given", r.op, r.by, r.code, len(r.needs))
		}
		for _, u := range r.by {
			if !known[u] {
				t.Errorf("row %q: unknown use %q", r.op, u)
			}
		}
		for _, p := range r.needs {
			if !contains(scopeSids(), p.in.sid) {
				t.Errorf("row %q: %s is in a statement missing from policyScopes", r.op, p.action)
			}
		}
	}
	// cloud/aws.go lists exactly the SDK methods handover calls: each has a row, and each row's operation
	// is one of them. DeleteTags is in the interface, but no code calls it (a call would have no row, and
	// the call-log test would fail on it).
	methods := map[string]bool{}
	for _, it := range []reflect.Type{reflect.TypeOf((*cloud.EC2)(nil)).Elem(), reflect.TypeOf((*cloud.AutoScaling)(nil)).Elem()} {
		for i := range it.NumMethod() {
			methods[it.Method(i).Name] = true
		}
	}
	rows := map[string]bool{}
	for _, r := range awsCalls {
		if r.op != "" {
			rows[r.op] = true
			if !methods[r.op] {
				t.Errorf("row %q: not a method of cloud.EC2 or cloud.AutoScaling", r.op)
			}
		}
	}
	for m := range methods {
		if !rows[m] && m != "DeleteTags" {
			t.Errorf("cloud/aws.go has %s but awsCalls has no row for it: add the row (who calls it, which permissions)", m)
		}
	}

	seen := map[string]bool{}
	for _, s := range policyScopes {
		for _, r := range s.sid {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				t.Errorf("Sid %q: IAM allows letters and digits only", s.sid)
				break
			}
		}
		if seen[s.sid] {
			t.Errorf("Sid %q twice", s.sid)
		}
		seen[s.sid] = true
	}
}

func scopeSids() []string {
	var out []string
	for _, s := range policyScopes {
		out = append(out, s.sid)
	}
	return out
}

// TestIAMPolicyLintsClean: the printed policies, as the policies of IAM roles in a CloudFormation template,
// pass cfn-lint, which knows every IAM action name and the policy grammar (a misspelt action or condition
// operator fails). cfn-lint is preinstalled with the Python tools; without it the test fails in CI and is
// skipped elsewhere.
func TestIAMPolicyLintsClean(t *testing.T) {
	t.Parallel()
	lint, err := exec.LookPath("cfn-lint")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cfn-lint is not installed: the Python tools install it (pip install cfn-lint==1.51.0)")
		}
		t.Skip("cfn-lint is not installed (pip install cfn-lint==1.51.0)")
	}
	resources := map[string]any{}
	for i, args := range [][]string{
		nil,
		{"--group", "mydb", "--commands", "up,down,watch,snapshot,status,failover", "--takeover", "--delete-superseded", "--keep", "3",
			"--on-rebalance=replace", "--kms-key", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
			"--region", "eu-west-1", "--account", "123456789012"},
		{"--commands", "failover", "--group", "db"},
		{"--partition", "aws-cn", "--kms-key", "arn:aws-cn:kms:cn-north-1:123456789012:key/k"},
	} {
		resources[fmt.Sprintf("Role%d", i)] = map[string]any{"Type": "AWS::IAM::Role", "Properties": map[string]any{
			"AssumeRolePolicyDocument": map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
				"Effect": "Allow", "Principal": map[string]any{"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}}},
			"Policies": []any{map[string]any{"PolicyName": "handover", "PolicyDocument": printedPolicy(t, args...)}},
		}}
	}
	b, err := json.MarshalIndent(map[string]any{"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "roles.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, lint, path).CombinedOutput(); err != nil {
		t.Errorf("cfn-lint on the printed policies: %v\n%s", err, out)
	}
}
