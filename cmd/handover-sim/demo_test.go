package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim"
)

// demoNeedsRoot: the demo mounts real filesystems, so it fails under CI=true without root and is skipped
// elsewhere.
func demoNeedsRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the demo needs root (loop devices, mkfs, mount); CI runs the suite as root")
		}
		t.Skip("the demo needs root (loop devices, mkfs, mount)")
	}
}

// TestDemo plays the demo at 100 times AWS's speed and checks the story's outcome in the world, not only
// in what it prints: the file written just before the termination is back byte for byte on the
// replacement in the other zone, which holds the Elastic IP; the only snapshot was taken by handover down
// on the old instance (none by the demo), consistent, and is what the replacement restored; both hooks were
// completed by the agent, the termination hook after the snapshot and with heartbeats before.
func TestDemo(t *testing.T) {
	t.Parallel()
	demoNeedsRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	d, err := startDemo(t.TempDir(), 100, &out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	if err := d.play(ctx); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s", err, out.String())
	}

	if az := instanceAZ(t, d, d.first); az != azA {
		t.Errorf("first instance %s in %s, want %s", d.first, az, azA)
	}
	if az := instanceAZ(t, d, d.second); az != azB {
		t.Errorf("replacement %s in %s, want %s", d.second, az, azB)
	}
	got, err := os.ReadFile(filepath.Join(d.mountPoint(d.second), demoFile))
	if err != nil || len(d.data) != 1<<20 || !bytes.Equal(got, d.data) {
		t.Errorf("%s on the replacement: %d bytes (err %v), want the %d bytes written before the termination", demoFile, len(got), err, len(d.data))
	}
	addr, err := d.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{d.alloc}})
	if err != nil || len(addr.Addresses) != 1 {
		t.Fatalf("DescribeAddresses: %v", err)
	}
	if holder := aws.ToString(addr.Addresses[0].InstanceId); holder != d.second {
		t.Errorf("Elastic IP on %q, want the replacement %s", holder, d.second)
	}

	calls := d.sim.Calls()
	first, second := instanceCaller(d.first), instanceCaller(d.second)
	for _, c := range []struct {
		action, caller string
		want           int
	}{
		{"CreateSnapshot", first, 1}, {"CreateSnapshot", demoCaller, 0}, {"CreateSnapshot", second, 0},
		{"DetachVolume", first, 1}, {"DetachVolume", demoCaller, 0},
		{"CompleteLifecycleAction", first, 2}, // launch (up), then termination (down)
		{"CompleteLifecycleAction", second, 1}, {"CompleteLifecycleAction", demoCaller, 0},
		{"TerminateInstanceInAutoScalingGroup", demoCaller, 1}, {"TerminateInstances", demoCaller, 0},
	} {
		if n := len(callsOf(calls, c.action, c.caller)); n != c.want {
			t.Errorf("%d successful %s calls by %s, want %d", n, c.action, c.caller, c.want)
		}
	}
	if n := len(callsOf(calls, "RecordLifecycleActionHeartbeat", first)); n == 0 {
		t.Error("no RecordLifecycleActionHeartbeat by the old instance while down worked")
	}
	snaps, completions := callsOf(calls, "CreateSnapshot", first), callsOf(calls, "CompleteLifecycleAction", first)
	if len(snaps) == 1 && len(completions) == 2 && !completions[1].Time.After(snaps[0].Time) {
		t.Errorf("the termination hook was completed (%s) before the snapshot was taken (%s)", completions[1].Time, snaps[0].Time)
	}
	for _, c := range calls {
		if c.Caller == demoCaller && c.Mutating && !demoMayCall[c.Action] {
			t.Errorf("the demo itself called %s: the agent's work, no API shortcut", c.Action)
		}
	}

	checkRestoredFromDown(ctx, t, d)

	text := out.String()
	for _, want := range []string{
		"running in us-east-1a", "created blank", "formatted (created blank)", "hook launch completed with CONTINUE",
		"watch: lifecycle state changed: target InService -> target Terminated", "watch: hand-over triggered: running down",
		"-> snapshot " + d.downSnapshot + " (new, consistent, unmounted), detached", "lifecycle: completed terminate in orders-asg with CONTINUE",
		"running in us-east-1b", "restored from " + d.downSnapshot, "orders.db is back on " + d.second, "byte for byte",
		"the Elastic IP 198.51.100.", "timeline", "- pre-stop command", "- unmount", "- CreateSnapshot " + d.downSnapshot,
		"- DetachVolume", "- RecordLifecycleActionHeartbeat x", "- CompleteLifecycleAction terminate CONTINUE", "total",
		"the demo (operator):", "handover on " + d.first + " (us-east-1a):",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}

// demoMayCall is what the demo does as the operator: build the world and terminate the instance.
var demoMayCall = map[string]bool{
	"AllocateAddress": true, "CreateLaunchTemplate": true, "CreateAutoScalingGroup": true,
	"UpdateAutoScalingGroup": true, "TerminateInstanceInAutoScalingGroup": true,
}

// checkRestoredFromDown: the replacement's volume was made from the one snapshot of the group, which down
// took on the old instance, tagged consistent.
func checkRestoredFromDown(ctx context.Context, t *testing.T, d *demoRun) {
	t.Helper()
	vols, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{d.second}}}})
	if err != nil || len(vols.Volumes) != 1 {
		t.Fatalf("the replacement's volumes: %d (err %v), want 1", len(vols.Volumes), err)
	}
	snaps, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil || len(snaps.Snapshots) != 1 {
		t.Fatalf("snapshots: %d (err %v), want only down's", len(snaps.Snapshots), err)
	}
	s := snaps.Snapshots[0]
	if got := aws.ToString(vols.Volumes[0].SnapshotId); got != aws.ToString(s.SnapshotId) || got != d.downSnapshot {
		t.Errorf("the replacement's volume comes from %q, want down's snapshot %s", got, aws.ToString(s.SnapshotId))
	}
	tags := map[string]string{}
	for _, tg := range s.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["handover:consistent"] != "true" || tags["handover:source-instance"] != d.first || tags["handover:group"] != demoGroup {
		t.Errorf("down's snapshot tags %v: want handover:consistent=true, source instance %s, group %s", tags, d.first, demoGroup)
	}
}

func instanceAZ(t *testing.T, d *demoRun, id string) string {
	t.Helper()
	i, err := d.describeInstance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(i.Placement.AvailabilityZone)
}

// callsOf returns the successful calls of action by caller.
func callsOf(calls []sim.Call, action, caller string) []sim.Call {
	var out []sim.Call
	for _, c := range calls {
		if c.Action == action && c.Caller == caller && c.Code == "" {
			out = append(out, c)
		}
	}
	return out
}

// TestDemoCommand plays the demo through its command line, with the agents' logs shown (--verbose), as
// `make demo` runs it.
func TestDemoCommand(t *testing.T) {
	t.Parallel()
	demoNeedsRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"demo", "--speed", "100", "--verbose", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"] INFO hand-over triggered: running down", "] INFO up done", "byte for byte", "timeline"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo --verbose output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestDemoRefusesArguments(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"demo", "extra"}, &stdout, &stderr); code != 2 {
		t.Errorf("demo extra: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"demo", "--speed", "0"}, &stdout, &stderr); code != 2 {
		t.Errorf("demo --speed 0: exit %d, want 2", code)
	}
}
