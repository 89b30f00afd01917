package agent

// Data (issue 14): for each way the data moves — the same zone's volume reattached, a restore in another
// zone, a Spot interruption, an abrupt loss with only the periodic snapshot to go back to — files written
// before the trigger are read back after the recovery and compared by SHA-256, and the simulator's
// observer sees every DetachVolume: none is of a volume whose device is mounted.

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// TestDataSurvivesEveryPath plays each path once with checksummed files (TestChaosHandover plays the
// first two under faults; TestOrphan the abrupt loss whose volume can still be snapshotted).
func TestDataSurvivesEveryPath(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, path := range []string{"same-AZ reattach", "cross-AZ restore", "spot interruption", "abrupt loss with the periodic snapshot only"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(len(path)), 0xda7a))
			var w *downWorld
			switch path {
			case "same-AZ reattach", "cross-AZ restore":
				zone := sim.ReplaceAZSame
				if path == "cross-AZ restore" {
					zone = sim.ReplaceAZOther
				}
				w = newDownWorld(t, func(o *sim.Options) { o.Replacement = sim.Replacement{AZ: zone, Launch: sim.ReplaceLaunchAtOnce} })
			default:
				w = newDownWorld(t)
			}
			w.unmountOnCleanup()
			obs := observe(w.testRegion)
			alloc := w.allocateAddress(w.group)
			w.publicIP(alloc)
			var repl string
			var sums map[string]string
			switch path {
			case "same-AZ reattach", "cross-AZ restore":
				repl, sums = w.groupHandover(t, rng)
				created := len(w.callsBy("CreateVolume", repl))
				if path == "same-AZ reattach" && created != 0 {
					t.Errorf("the replacement in the same zone made %d volumes; it should have reattached the old one", created)
				}
				if path == "cross-AZ restore" && created != 1 {
					t.Errorf("the replacement in the other zone made %d volumes, want the one restored", created)
				}
			case "spot interruption":
				repl, sums = w.spotHandover(t, rng)
			default:
				repl, sums = w.lossWithPeriodicSnapshot(t, rng)
			}
			if bad := checksumMismatches(t, w.mountPoint(repl), sums); bad != 0 {
				t.Errorf("%s: %d of the %d files written before the trigger differ after the recovery", path, bad, len(sums))
			}
			if h := w.addressHolder(alloc); h != repl {
				t.Errorf("%s: the address is on %q, want %s", path, h, repl)
			}
			w.checkOneWriter()
			if two, re, mounted := obs.counts(t); two+re+mounted != 0 {
				t.Errorf("%s: %d changes left the address on two instances, %d took it from another, %d detaches of a mounted volume", path, two, re, mounted)
			}
		})
	}
}

// groupHandover: a group of one with both hooks; its instance's up makes the volume, files are written,
// the group terminates the instance, watch runs down (unmount), the replacement's up takes the data.
func (w *downWorld) groupHandover(t *testing.T, rng *rand.Rand) (string, map[string]string) {
	asgName := w.group + "-asg"
	old := w.handoverGroup(asgName)
	seen := map[string]bool{old: true}
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old, "--launch-hook", launchHook)...))
	sums := writeChecksummed(t, rng, w.mountPoint(old), 5)
	watch := w.startAgent(old, "watch", "--volume", "data:/dev/sdf:"+w.mountPoint(old), "--pre-stop", "sync",
		"--terminate-hook", terminateHook, "--heartbeat-interval", "500ms",
		"--state-file", filepath.Join(w.dir, "watch.json"), "--poll-interval", "50ms")
	watch.waitLog(t, "watching instance metadata")
	if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(old), ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		t.Fatal(err)
	}
	repl := w.newMember(asgName, seen)
	w.waitInstanceState(repl, "running")
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl, "--launch-hook", launchHook)...)
	mustSucceed(t, res)
	watch.waitLog(t, "hand-over done for this event")
	if code := watch.stop(t); code != fail.CodeOK {
		t.Errorf("watch exited %d", code)
	}
	return repl, sums
}

// spotHandover: a Spot instance with the data gets an interruption notice; watch runs down (no hook, no
// pre-stop command: freeze for the snapshot); EC2 interrupts it when the notice said; an instance in the
// other zone restores down's snapshot.
func (w *downWorld) spotHandover(t *testing.T, rng *rand.Rand) (string, map[string]string) {
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	sums := writeChecksummed(t, rng, w.mountPoint(old), 5)
	watch := w.startAgent(old, "watch", "--volume", "data:/dev/sdf:"+w.mountPoint(old),
		"--state-file", filepath.Join(w.dir, "watch.json"), "--poll-interval", "50ms")
	watch.waitLog(t, "watching instance metadata")
	if err := w.sim.SetSpotAction(old, "terminate", time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	watch.waitLog(t, "hand-over done for this event")
	if code := watch.stop(t); code != fail.CodeOK {
		t.Errorf("watch exited %d", code)
	}
	// The interruption ends the instance and, with it, the mount freeze mode left in place.
	w.waitInstanceState(old, "shutting-down")
	w.unmountUnder(filepath.Dir(w.mountPoint(old)))
	w.waitInstanceState(old, "terminated")
	repl := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	mustSucceed(t, res)
	if n := len(w.callsBy("CreateVolume", repl)); n != 1 {
		t.Errorf("the replacement in the other zone made %d volumes, want the one restored", n)
	}
	return repl, sums
}

// lossWithPeriodicSnapshot: files are written, `handover snapshot` takes the periodic snapshot, more
// files are written, and the instance dies without down; the replacement in the other zone tries to
// snapshot the orphaned volume, that snapshot fails, and it restores the periodic one with a DATA LOSS
// warning. The files written before the periodic snapshot are there; the later ones are not (and the
// warning says so).
func (w *downWorld) lossWithPeriodicSnapshot(t *testing.T, rng *rand.Rand) (string, map[string]string) {
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	sums := writeChecksummed(t, rng, w.mountPoint(old), 5)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old)))
	snaps := w.slotSnapshots(cloud.DefaultSlot)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots after `handover snapshot`, want 1", len(snaps))
	}
	periodic := snaps[0].ID
	w.waitSnapshotState(periodic, "completed")
	w.writeData(w.mountPoint(old), "after-the-periodic-snapshot.db", 64<<10)
	if err := w.sim.KillInstance(old); err != nil {
		t.Fatal(err)
	}
	w.waitInstanceState(old, "terminated")
	repl := w.runInstance("us-east-1b", groupTags, true)
	release := w.sim.Hold(sim.SnapshotComplete, "")
	defer release()
	up := w.startAgent(repl, w.upArgs(repl)...)
	orphanSnap, err := w.sim.WaitHeld(w.ctx(), sim.SnapshotComplete, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.sim.FailSnapshot(orphanSnap); err != nil {
		t.Fatal(err)
	}
	release()
	res := up.wait(t)
	mustSucceed(t, res)
	if !strings.Contains(res.stderr, "DATA LOSS") || !strings.Contains(res.stderr, periodic) {
		t.Errorf("up restored without the DATA LOSS warning naming the periodic snapshot %s:\n%s", periodic, res.stderr)
	}
	vols := w.attachedVolumes(repl)
	if len(vols) != 1 {
		t.Fatalf("%s has %v attached, want one volume", repl, vols)
	}
	if from := aws.ToString(w.describeVolume(vols[0]).SnapshotId); from != periodic {
		t.Errorf("restored from %s, want the periodic snapshot %s", from, periodic)
	}
	return repl, sums
}

// TestDataAbruptLossWithConsistencyDelay: TestOrphan with EC2's eventual consistency on. The instance
// dies without down after a periodic snapshot and more writes; the replacement in the other zone
// snapshots the orphaned volume where it is. That snapshot is not listed by DescribeSnapshots for a
// moment after CreateSnapshot (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html);
// up must wait for it, not take it for failed and restore the periodic snapshot, which lacks the later
// writes. (Found by the fault-injection runs: up fell back, and without an older snapshot refused with
// exit 3.)
func TestDataAbruptLossWithConsistencyDelay(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t, withLag(failureLag))
	w.unmountOnCleanup()
	rng := rand.New(rand.NewPCG(11, 0xda7a))
	alloc := w.allocateAddress(w.group)
	w.publicIP(alloc)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	sums := writeChecksummed(t, rng, w.mountPoint(old), 3)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old)))
	w.settle()
	snaps := w.slotSnapshots(cloud.DefaultSlot)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots after `handover snapshot`, want 1", len(snaps))
	}
	periodic := snaps[0].ID
	w.waitSnapshotState(periodic, "completed")
	for k, v := range writeChecksummed(t, rng, filepath.Join(w.mountPoint(old), "late"), 3) {
		sums[filepath.Join("late", k)] = v
	}
	if err := w.sim.KillInstance(old); err != nil {
		t.Fatal(err)
	}
	w.waitInstanceState(old, "terminated")
	w.unmountUnder(filepath.Dir(w.mountPoint(old)))
	repl := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	mustSucceed(t, res)
	if strings.Contains(res.stderr, "DATA LOSS") {
		t.Errorf("up fell back to an older snapshot:\n%s", res.stderr)
	}
	if bad := checksumMismatches(t, w.mountPoint(repl), sums); bad != 0 {
		t.Errorf("%d of the %d files differ on the replacement: the writes after the periodic snapshot %s are lost", bad, len(sums), periodic)
	}
	w.settle()
	vols := w.attachedVolumes(repl)
	if len(vols) != 1 {
		t.Fatalf("%s has %v attached, want one volume", repl, vols)
	}
	if from := aws.ToString(w.describeVolume(vols[0]).SnapshotId); from == periodic {
		t.Errorf("restored the periodic snapshot %s, not a snapshot of the orphaned volume", periodic)
	}
}
