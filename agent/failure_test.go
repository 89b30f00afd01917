package agent

// Failure tests (the fence issue's list): repeated hand-overs through the real path with EC2's eventual
// consistency on, an instance that dies without down, a holder stuck on its way out, and the race tests
// again under both ClientToken-across-zones rules and the consistency delay. Each asserts what handover
// leaves behind (the data, the address, the attachments, the call order), never how long it took.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// envCount reads a positive count from the environment variable name, default def.
func envCount(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// failureLag is the consistency delay of these tests: 1 s, far longer than any transition at testSpeed
// (detach 20 ms, attach 30 ms, snapshot 200 ms), so that every read after a change within a step is stale.
const failureLag = time.Second

// withLag turns EC2's eventual consistency on.
func withLag(lag time.Duration) func(*sim.Options) {
	return func(o *sim.Options) { o.Faults.ConsistencyDelay = lag }
}

// settle waits out the region's consistency delay, so that the reads a test checks its outcome with show
// the final state (the simulator's lag is deterministic: a read outside the window never lags).
func (w *testRegion) settle() {
	if w.lag > 0 {
		time.Sleep(w.lag + 50*time.Millisecond)
	}
}

// appendLine appends one line to dir/name and flushes it to the device.
func appendLine(t testing.TB, dir, name, line string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatalf("append to %s: %v", name, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
}

// readLines reads dir/name line by line (nil when it does not exist).
func readLines(t testing.TB, dir, name string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// describeInstance is an instance as DescribeInstances shows it (which does not lag).
func (w *testRegion) describeInstance(id string) ec2types.Instance {
	w.t.Helper()
	out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		w.t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0]
}

// attachedVolumes are the volumes attached to an instance, from its block device mappings (no lag).
func (w *testRegion) attachedVolumes(id string) []string {
	w.t.Helper()
	var vols []string
	for _, m := range w.describeInstance(id).BlockDeviceMappings {
		if m.Ebs != nil {
			vols = append(vols, aws.ToString(m.Ebs.VolumeId))
		}
	}
	return vols
}

// publicIP is the Elastic IP's address.
func (w *testRegion) publicIP(alloc string) string {
	w.t.Helper()
	var ip string
	simtest.Eventually(w.t, waitBound, "address "+alloc+" visible", func() (bool, string) {
		out, err := w.ec2.DescribeAddresses(w.ctx(), &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
		if err != nil || len(out.Addresses) != 1 {
			return false, fmt.Sprintf("DescribeAddresses: %v", err)
		}
		ip = aws.ToString(out.Addresses[0].PublicIp)
		return true, ""
	})
	return ip
}

// checkOneWriter checks the slot at the end of a test: no volume has two attachments, no generation has two
// volumes. It returns the attachments by volume.
func (w *testRegion) checkOneWriter() map[string][]string {
	w.t.Helper()
	w.settle()
	attached := map[string][]string{}
	perGen := map[string][]string{}
	for _, v := range w.slotVolumes() {
		id := aws.ToString(v.VolumeId)
		perGen[tagOf(v.Tags, cloud.TagGeneration)] = append(perGen[tagOf(v.Tags, cloud.TagGeneration)], id)
		for _, a := range v.Attachments {
			attached[id] = append(attached[id], aws.ToString(a.InstanceId))
		}
		if len(v.Attachments) > 1 {
			w.t.Errorf("%s has %d attachments: %+v", id, len(v.Attachments), v.Attachments)
		}
	}
	for g, vols := range perGen {
		if len(vols) > 1 {
			w.t.Errorf("generation %s has %d volumes: %v", g, len(vols), vols)
		}
	}
	return attached
}

// newMember waits for the group to launch an instance not in seen and returns it.
func (w *downWorld) newMember(asgName string, seen map[string]bool) string {
	w.t.Helper()
	var id string
	simtest.Eventually(w.t, waitBound, "a new instance in group "+asgName, func() (bool, string) {
		out, err := w.as.DescribeAutoScalingGroups(w.ctx(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
		if err != nil || len(out.AutoScalingGroups) != 1 {
			return false, fmt.Sprintf("DescribeAutoScalingGroups: %v", err)
		}
		for _, i := range out.AutoScalingGroups[0].Instances {
			if x := aws.ToString(i.InstanceId); !seen[x] {
				id = x
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", out.AutoScalingGroups[0].Instances)
	})
	seen[id] = true
	return id
}

// TestRollback: HANDOVER_CYCLES hand-overs in a row between us-east-1a and us-east-1b
// through the real path, with EC2's eventual consistency on: the group terminates the instance, watch sees
// target-lifecycle-state Terminated and runs down (pre-stop command, unmount, snapshot, detach, complete the
// hook), the group's replacement in the other zone runs up. Before each hand-over a line is appended to a
// journal on the data volume; after each, the replacement has every line written so far (nothing older was
// restored), the address, and the volume down's final snapshot was restored into. In "up first" the
// replacement's up is already waiting for the old instance's volume before the old instance's watch (and so
// its down) starts.
//
// A cycle takes about 7 s with the 1 s consistency delay (20 cycles: about 150 s), so the default is
// rollbackCycles cycles; the 20 is HANDOVER_CYCLES=20.
func TestRollback(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	cycles := envCount(t, "HANDOVER_CYCLES", defaultRollbackCycles)
	for _, tc := range []struct {
		name    string
		upFirst bool
		launch  string // when the group launches the replacement (sim.Replacement.Launch)
	}{
		{"down first", false, sim.ReplaceLaunchAtOnce},
		{"up first", true, sim.ReplaceLaunchAtOnce},
		{"replacement after the old one is gone", false, sim.ReplaceLaunchAfterGo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rollbackCycles(t, cycles, tc.upFirst, tc.launch)
		})
	}
}

// defaultRollbackCycles keeps TestRollback near a minute; HANDOVER_CYCLES=20 plays the count.
const defaultRollbackCycles = 6

func rollbackCycles(t *testing.T, cycles int, upFirst bool, launch string) {
	w := newDownWorld(t, withLag(failureLag), func(o *sim.Options) {
		o.Replacement = sim.Replacement{AZ: sim.ReplaceAZOther, Launch: launch}
	})
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	ip := w.publicIP(alloc)                  // once the new address shows in DescribeAddresses
	asgName, cur := w.autoScalingGroup(6000) // 60 s at the test speed: down's heartbeats keep the hook alive
	seen := map[string]bool{cur: true}
	// As for every replacement below: up runs once DescribeInstances shows the instance (up waits out a
	// younger one too, TestRollbackUpOfAJustLaunchedInstance, but that wait would only slow the cycles).
	w.waitInstanceState(cur, "running")
	mustSucceed(t, w.runAgent(w.ctx(), cur, nil, w.upArgs(cur)...))
	const journal = "journal.txt"
	var want []string
	for cycle := range cycles {
		old, oldAZ := cur, w.instanceAZ(cur)
		line := fmt.Sprintf("cycle %d written on %s in %s", cycle, old, oldAZ)
		appendLine(t, w.mountPoint(old), journal, line)
		want = append(want, line)

		watchArgs := []string{"watch", "--volume", "data:/dev/sdf:" + w.mountPoint(old), "--pre-stop", "sync",
			"--terminate-hook", terminateHook, "--heartbeat-interval", "500ms",
			"--state-file", filepath.Join(w.dir, "watch-"+old+".json"), "--poll-interval", "50ms"}
		var watch *agentRun
		if !upFirst {
			watch = w.startAgent(old, watchArgs...)
			watch.waitLog(t, "watching instance metadata")
		}
		w.sim.ResetCalls()
		if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
			InstanceId: aws.String(old), ShouldDecrementDesiredCapacity: aws.Bool(false),
		}); err != nil {
			t.Fatalf("cycle %d: TerminateInstanceInAutoScalingGroup: %v", cycle, err)
		}
		repl := w.newMember(asgName, seen)
		w.waitInstanceState(repl, "running")
		if az := w.instanceAZ(repl); az == oldAZ {
			t.Fatalf("cycle %d: the replacement %s is in %s, the old instance's zone", cycle, repl, az)
		}
		upRun := w.startAgent(repl, w.upArgs(repl)...)
		if upFirst {
			// up has claimed the address and now waits for the old instance to release the volume: only
			// then does the old instance's watch start and see the termination.
			upRun.waitLog(t, "action=wait-holder")
			watch = w.startAgent(old, watchArgs...)
		}
		res := upRun.wait(t)
		if res.code != fail.CodeOK {
			t.Fatalf("cycle %d: up on %s exited %d\nstdout:\n%s\nstderr:\n%s\nold instance's watch:\n%s", cycle, repl, res.code, res.stdout, res.stderr, watch.stderr.String())
		}
		watch.waitLog(t, "hand-over done for this event")
		if code := watch.stop(t); code != fail.CodeOK {
			t.Errorf("cycle %d: watch on %s exited %d", cycle, old, code)
		}
		w.waitInstanceState(old, "terminated")

		if got := readLines(t, w.mountPoint(repl), journal); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("cycle %d: the journal on %s is\n%s\nwant\n%s\nup's log:\n%s", cycle, repl, strings.Join(got, "\n"), strings.Join(want, "\n"), res.stderr)
		}
		if got := aws.ToString(w.describeInstance(repl).PublicIpAddress); got != ip {
			t.Errorf("cycle %d: the replacement %s has public IP %q, want the Elastic IP %s", cycle, repl, got, ip)
		}
		if n := len(w.callsBy("CreateSnapshot", old)); n != 1 {
			t.Errorf("cycle %d: the old instance's down made %d CreateSnapshot calls, want 1", cycle, n)
		}
		if n := len(w.callsBy("CompleteLifecycleAction", old)); n != 1 {
			t.Errorf("cycle %d: the old instance's down made %d CompleteLifecycleAction calls, want 1", cycle, n)
		}
		vols := w.attachedVolumes(repl)
		if len(vols) != 1 {
			t.Fatalf("cycle %d: %s has volumes %v attached, want one", cycle, repl, vols)
		}
		restored := w.describeVolume(vols[0])
		if snap, ok := w.describeSnapshot(aws.ToString(restored.SnapshotId)); !ok ||
			tagOf(snap.Tags, cloud.TagSourceInstance) != old || tagOf(snap.Tags, cloud.TagConsistent) != "true" {
			t.Errorf("cycle %d: %s was restored from %q (tags %v), want the consistent snapshot the old instance's down took", cycle, vols[0], aws.ToString(restored.SnapshotId), snap.Tags)
		}
		cur = repl
	}
	attached := w.checkOneWriter()
	for vol, ids := range attached {
		if len(ids) != 1 || ids[0] != cur {
			t.Errorf("%s is attached to %v; only the last instance %s should hold a volume", vol, ids, cur)
		}
	}
	if h := w.addressHolder(alloc); h != cur {
		t.Errorf("the address is on %q, want the last instance %s", h, cur)
	}
}

// TestRollbackUpOfAJustLaunchedInstance: the group's instance runs up as soon as it is running, while EC2
// may not know its ID everywhere yet (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html:
// a resource just created "might not have propagated", calls answer that it "does not exist"). IMDS has
// just told up its own ID, so AssociateAddress's InvalidInstanceID.NotFound is a stale read: up looks again
// (bounded by the claim's wait) and succeeds. (Found by this test: up used to exit 1 with the raw error.)
// The consistency delay here (5 s) is far longer than up takes to reach AssociateAddress.
func TestRollbackUpOfAJustLaunchedInstance(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t, withLag(5*time.Second))
	alloc := w.allocateAddress(w.group)
	w.publicIP(alloc) // the address itself is visible: only the instance is new
	_, id := w.autoScalingGroup(6000)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	if res.code != fail.CodeOK {
		t.Fatalf("FINDING: up on an instance launched less than the consistency delay ago exited %d, want 0 (retry the stale InvalidInstanceID.NotFound of its own instance):\n%s", res.code, res.stderr)
	}
	w.settle()
	if h := w.addressHolder(alloc); h != id {
		t.Errorf("the address is on %q, want %s", h, id)
	}
}

// TestOrphan: the instance writes a file after the last periodic snapshot (`handover snapshot`) and then dies
// without down (Region.KillInstance). The group's replacement in the other zone does not restore the
// periodic snapshot (which lacks the file): up snapshots the orphaned volume where it is, restores that, and
// says so; the file is there.
func TestOrphan(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t, func(o *sim.Options) {
		o.Replacement = sim.Replacement{AZ: sim.ReplaceAZOther, Launch: sim.ReplaceLaunchAtOnce}
	})
	w.unmountOnCleanup()
	alloc := w.allocateAddress(w.group)
	asgName, old := w.autoScalingGroup(6000)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	early := w.writeData(w.mountPoint(old), "early.db", 64<<10)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old)))
	snaps := w.slotSnapshots(cloud.DefaultSlot)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots after `handover snapshot`, want 1", len(snaps))
	}
	periodic := snaps[0].ID
	w.waitSnapshotState(periodic, "completed")
	late := w.writeData(w.mountPoint(old), "late.db", 64<<10)
	oldVol := w.attachedVolumes(old)[0]

	if err := w.sim.KillInstance(old); err != nil {
		t.Fatal(err)
	}
	repl := w.newMember(asgName, map[string]bool{old: true})
	w.waitInstanceState(repl, "running")
	if w.instanceAZ(repl) == w.instanceAZ(old) {
		t.Fatalf("the replacement %s is in the old instance's zone", repl)
	}
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	mustSucceed(t, res)
	for name, data := range map[string][]byte{"early.db": early, "late.db": late} {
		got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), name))
		if err != nil || string(got) != string(data) {
			t.Errorf("%s on the replacement differs (err %v): the writes after the periodic snapshot %s are lost", name, err, periodic)
		}
	}
	vols := w.attachedVolumes(repl)
	if len(vols) != 1 {
		t.Fatalf("%s has %v attached, want one volume", repl, vols)
	}
	from := aws.ToString(w.describeVolume(vols[0]).SnapshotId)
	snap, ok := w.describeSnapshot(from)
	switch {
	case from == periodic:
		t.Errorf("the replacement restored the periodic snapshot %s", periodic)
	case !ok || aws.ToString(snap.VolumeId) != oldVol || tagOf(snap.Tags, cloud.TagFinal) != "true":
		t.Errorf("restored from %s (%+v), want a final snapshot of the orphaned %s", from, snap, oldVol)
	}
	if !strings.Contains(res.stderr, "snapshotted it where it is") {
		t.Errorf("up does not say it snapshotted the orphan:\n%s", res.stderr)
	}
	if h := w.addressHolder(alloc); h != repl {
		t.Errorf("the address is on %q, want %s", h, repl)
	}
	w.checkOneWriter()
}

// TestStuckHolder: the old instance hangs in shutting-down (Region.HangShutdown) with the address and the
// volume (mounted, data written). The replacement takes the address (its holder is leaving), waits
// --release-timeout (2 s here) for the volume, then recovers without the holder: in the other zone it
// snapshots the still-attached volume where it is and restores that; in the same zone it force-detaches the
// volume and attaches it. Either way it has the data, and no volume is ever attached to two instances: at the
// end DescribeVolumes shows one attachment each, and in the same zone the replacement's DetachVolume succeeded
// before its AttachVolume, which it made once.
func TestStuckHolder(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, tc := range []struct{ name, az string }{{"other zone", "us-east-1b"}, {"same zone", "us-east-1a"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newDownWorld(t)
			w.unmountOnCleanup()
			alloc := w.allocateAddress(w.group)
			old := w.runInstance("us-east-1a", groupTags, true)
			mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
			w.writeData(w.mountPoint(old), "early.db", 64<<10)
			mustSucceed(t, w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old)))
			periodic := w.slotSnapshots(cloud.DefaultSlot)[0].ID
			w.waitSnapshotState(periodic, "completed")
			late := w.writeData(w.mountPoint(old), "late.db", 64<<10)
			oldVol := w.attachedVolumes(old)[0]

			if err := w.sim.HangShutdown(old, true); err != nil {
				t.Fatal(err)
			}
			if _, err := w.ec2.TerminateInstances(w.ctx(), &ec2.TerminateInstancesInput{InstanceIds: []string{old}}); err != nil {
				t.Fatal(err)
			}
			w.waitInstanceState(old, "shutting-down")
			repl := w.runInstance(tc.az, groupTags, true)
			w.sim.ResetCalls()
			res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl, "--release-timeout", "2s")...)
			mustSucceed(t, res)
			if s := string(w.describeInstance(old).State.Name); s != "shutting-down" {
				t.Fatalf("the old instance is %s, want still shutting-down", s)
			}
			if !strings.Contains(res.stderr, "action=wait-holder") || !strings.Contains(res.stderr, "did not let go within --release-timeout") {
				t.Errorf("up's log does not show the wait for the holder and the recovery after --release-timeout:\n%s", res.stderr)
			}
			got, err := os.ReadFile(filepath.Join(w.mountPoint(repl), "late.db"))
			if err != nil || string(got) != string(late) {
				t.Errorf("the write made after the periodic snapshot is not on the replacement (err %v)", err)
			}
			if h := w.addressHolder(alloc); h != repl {
				t.Errorf("the address is on %q, want %s", h, repl)
			}
			attached := w.checkOneWriter()
			vols := w.attachedVolumes(repl)
			if len(vols) != 1 {
				t.Fatalf("%s has %v attached, want one volume", repl, vols)
			}
			if tc.az == "us-east-1a" {
				if vols[0] != oldVol || len(attached[oldVol]) != 1 || attached[oldVol][0] != repl {
					t.Errorf("attached to the replacement: %v; the old volume %s: %v; want the old volume moved over", vols, oldVol, attached[oldVol])
				}
				if n := w.calls("CreateVolume"); n != 0 {
					t.Errorf("%d CreateVolume calls; the volume is in this zone", n)
				}
				var order []string
				for _, c := range w.sim.Calls() {
					if (c.Action == "DetachVolume" || c.Action == "AttachVolume") && strings.Contains(c.Caller, strings.ReplaceAll(repl, "-", "")) {
						order = append(order, c.Action+"="+orDash(c.Code))
					}
				}
				if strings.Join(order, " ") != "DetachVolume=- AttachVolume=-" {
					t.Errorf("the replacement's detach/attach calls: %v, want one DetachVolume (forced) that succeeded, then one AttachVolume", order)
				}
				if !strings.Contains(res.stderr, "forcing the detach") {
					t.Errorf("up's log does not say it forced the detach:\n%s", res.stderr)
				}
				return
			}
			if len(attached[oldVol]) != 1 || attached[oldVol][0] != old {
				t.Errorf("the old volume %s is attached to %v, want still to the stuck %s only", oldVol, attached[oldVol], old)
			}
			from := aws.ToString(w.describeVolume(vols[0]).SnapshotId)
			if snap, ok := w.describeSnapshot(from); from == periodic || !ok || aws.ToString(snap.VolumeId) != oldVol || tagOf(snap.Tags, cloud.TagFinal) != "true" {
				t.Errorf("restored from %s (periodic %s), want a final snapshot of %s taken where it is", from, periodic, oldVol)
			}
			if n := w.calls("AttachVolume"); n != 1 {
				t.Errorf("%d AttachVolume calls, want the one of the restored volume", n)
			}
			if !strings.Contains(res.stderr, "snapshotted it where it is") {
				t.Errorf("up's log does not say it snapshotted the stuck volume:\n%s", res.stderr)
			}
		})
	}
}

// raceVariantRounds is how many rounds each race variant plays: HANDOVER_RACE_VARIANT_ROUNDS, default 20.
func raceVariantRounds(t *testing.T) int { return envCount(t, "HANDOVER_RACE_VARIANT_ROUNDS", 20) }

// raceLag is the races' consistency delay: longer than any transition at testSpeed (snapshot 200 ms), so
// every read within a racer's step is stale, and half of failureLag, since most of a round is its setup
// waiting for the lag to pass.
const raceLag = 500 * time.Millisecond

// tokenModes are the two rules for a CreateVolume whose ClientToken was used in another zone.
var tokenModes = []string{"first", "new"}

// TestRaceFirstBootTokenModes: TestRaceFirstBoot (two claimants in two zones, no volume yet) with
// TokenAcrossAZ "first" and "new" and EC2's eventual consistency on: exactly one winner with the volume,
// the filesystem and the mount; the loser exits 4 with one line, made no filesystem and no mount; no
// generation has two volumes.
func TestRaceFirstBootTokenModes(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, mode := range tokenModes {
		t.Run("token-across-az="+mode, func(t *testing.T) {
			for round := range raceVariantRounds(t) {
				t.Run(strconv.Itoa(round), func(t *testing.T) {
					t.Parallel()
					raceFirstBootRound(t, round, 2, withLag(raceLag), func(o *sim.Options) { o.TokenAcrossAZ = mode })
				})
			}
		})
	}
}

// TestRaceStoppedHolderTokenModes: TestRaceReplacementsOfAStoppedHolder (one replacement in the stopped
// holder's zone, one in the other) with TokenAcrossAZ "first" and "new" and the consistency delay on.
func TestRaceStoppedHolderTokenModes(t *testing.T) {
	t.Parallel()
	for _, mode := range tokenModes {
		t.Run("token-across-az="+mode, func(t *testing.T) {
			for round := range raceVariantRounds(t) {
				t.Run(strconv.Itoa(round), func(t *testing.T) {
					t.Parallel()
					raceStoppedHolderRound(t, round, withLag(raceLag), func(o *sim.Options) { o.TokenAcrossAZ = mode })
				})
			}
		})
	}
}
