package agent

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

// TestUpRetentionOverTwentyMoves: twenty moves across AZs leave the current volume and the one kept as a
// way back (--keep-superseded 1, the default), not twenty idle volumes. Right after a move nothing older
// is deleted: the current volume has no completed snapshot yet (one more volume waits); once the
// snapshot timer's first snapshot of it has completed, retention (here a rerun of up; handover snapshot
// retires the same way) deletes it. The kept one is the source of the snapshot the current volume was
// restored from; even --keep-superseded 0 never deletes a volume before the current one is snapshotted.
func TestUpRetentionOverTwentyMoves(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	azs := []string{"us-east-1a", "us-east-1b"}
	up := func(id string, extra ...string) agentResult {
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, append([]string{"--no-mount"}, extra...)...)...)
		mustSucceed(t, res)
		return res
	}
	live := func() map[string]ec2types.Volume {
		m := map[string]ec2types.Volume{}
		for _, v := range w.slotVolumes() {
			m[aws.ToString(v.VolumeId)] = v
		}
		return m
	}
	// current is the slot's newest generation: the volume up just attached.
	current := func() (string, int) {
		id, gen := "", 0
		for vid, v := range live() {
			if g, _ := strconv.Atoi(tagOf(v.Tags, cloud.TagGeneration)); g > gen {
				id, gen = vid, g
			}
		}
		return id, gen
	}
	// timer is the snapshot timer's snapshot of the current volume, completed (final: nothing writes, as
	// down's would be): it is also what the next move restores.
	timer := func() string {
		vol, gen := current()
		w.snapshot(vol, gen, true, true)
		return vol
	}

	id := w.runInstance(azs[0], groupTags, true)
	up(id)
	prev := timer()
	for n := 1; n <= 20; n++ {
		w.terminate(id)
		w.waitVolumeState(prev, "available")
		id = w.runInstance(azs[n%2], groupTags, true)
		res := up(id)
		if want := min(n+1, 3); len(live()) != want {
			t.Fatalf("move %d, just moved: %d volumes, want %d (nothing deleted before a snapshot of the new volume completes)\n%s", n, len(live()), want, res.stdout)
		}
		if n >= 2 && !strings.Contains(res.stderr, "keeping the superseded volumes until a snapshot of the current volume completes") {
			t.Errorf("move %d: up does not say why it kept the older volumes:\n%s", n, res.stderr)
		}
		cur := timer()
		res = up(id)
		vols := live()
		if len(vols) != 2 {
			t.Fatalf("move %d, after the timer's snapshot: %d volumes left, want the current one and %s\n%s", n, len(vols), prev, res.stdout)
		}
		if _, ok := vols[prev]; !ok {
			t.Fatalf("move %d: %s, the previous generation, was deleted\n%s", n, prev, res.stdout)
		}
		if n >= 2 && !strings.Contains(res.stdout, "deleted    data: ") {
			t.Errorf("move %d: the summary does not say what was deleted:\n%s", n, res.stdout)
		}
		if tagOf(vols[prev].Tags, cloud.TagSuperseded) != "true" {
			t.Errorf("move %d: %s tags %v, want superseded", n, prev, cloud.TagMap(vols[prev].Tags))
		}
		prev = cur
	}
	if _, gen := current(); gen != 21 {
		t.Errorf("after twenty moves the current generation is %d, want 21", gen)
	}

	// One more move keeping none: nothing goes at once; after the timer's snapshot, the previous
	// generation goes too.
	before := prev
	w.terminate(id)
	w.waitVolumeState(prev, "available")
	id = w.runInstance(azs[21%2], groupTags, true)
	res := up(id, "--keep-superseded", "0")
	if _, ok := live()[before]; !ok {
		t.Fatalf("--keep-superseded 0 deleted %s before a snapshot of the new volume completed\n%s", before, res.stdout)
	}
	timer()
	res = up(id, "--keep-superseded", "0")
	if vols := live(); len(vols) != 1 {
		t.Errorf("--keep-superseded 0 after the timer's snapshot: volumes %v, want the current one alone\n%s", keys(vols), res.stdout)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestUpRetiresAfterTheLaunchHook: the superseded volumes are deleted only after the launch hook is
// completed, off the recovery's critical path (here --keep-superseded 0, so that the previous generation
// goes too: the current volume, reattached, is the newest snapshot's source).
func TestUpRetiresAfterTheLaunchHook(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	oldest := w.createSlotVolume("us-east-1a", 1, nil)
	w.snapshot(oldest, 1, true, true)
	prev := w.createSlotVolume("us-east-1a", 2, nil)
	w.snapshot(prev, 2, true, true)
	id := w.launchGroup("orders-asg", nil)
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch", "--keep-superseded", "0")...)
	mustSucceed(t, res)
	var order []string
	for _, c := range w.sim.Calls() {
		if c.Code == "" && (c.Action == "CompleteLifecycleAction" || c.Action == "DeleteVolume" || c.Action == "CreateTags") {
			order = append(order, c.Action)
		}
	}
	if !slices.Equal(order, []string{"CompleteLifecycleAction", "CreateTags", "DeleteVolume"}) {
		t.Errorf("calls %v, want the hook completed first, then the superseded tag and the delete of %s", order, oldest)
	}
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) == oldest {
			t.Errorf("%s, older than the previous generation and held by a completed snapshot, was not deleted", oldest)
		}
	}
}

// TestSnapshotLockAndRetention: `snapshot --lock-snapshots 7d` locks its consistent snapshot in
// governance mode; retention (--keep 1) later deletes the older unlocked snapshot beyond the newest
// completed one and never tries the locked one, older still (no DeleteSnapshot answered SnapshotLocked),
// which stays.
func TestSnapshotLockAndRetention(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t, func(o *sim.Options) { o.SnapshotInterval = -1 })
	inst := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	w.attach(vol, inst)
	args := []string{"snapshot", "--volume", "data:/dev/sdf:" + w.mountPoint(inst)}

	res := w.runAgent(w.ctx(), inst, nil, append(args, "--lock-snapshots", "7d")...)
	if res.code != fail.CodeOK {
		t.Fatalf("snapshot --lock-snapshots: exit %d\n%s", res.code, res.stderr)
	}
	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 || !snaps[0].Consistent || !strings.Contains(res.stdout, "snapshot "+snaps[0].ID+" locked (governance) until ") {
		t.Fatalf("snapshots %+v, output:\n%s", snaps, res.stdout)
	}
	locked := snaps[0].ID
	locks, err := cloud.LockedSnapshots(w.ctx(), w.ec2)
	if err != nil || locks[locked].State != "governance" {
		t.Fatalf("locks %+v, %v; want %s in governance mode", locks, err, locked)
	}
	w.waitSnapshotState(locked, "completed")
	var unlocked []string
	for range 2 {
		res = w.runAgent(w.ctx(), inst, nil, args...)
		if res.code != fail.CodeOK {
			t.Fatalf("snapshot: exit %d\n%s", res.code, res.stderr)
		}
	}
	for _, s := range w.slotSnapshots("data") {
		w.waitSnapshotState(s.ID, "completed")
		if s.ID != locked {
			unlocked = append(unlocked, s.ID)
		}
	}
	w.sim.ResetCalls()
	res = w.runAgent(w.ctx(), inst, nil, append(args, "--keep", "1")...)
	if res.code != fail.CodeOK {
		t.Fatalf("snapshot --keep 1: exit %d\n%s", res.code, res.stderr)
	}
	if _, ok := w.describeSnapshot(locked); !ok {
		t.Fatalf("the locked snapshot %s is gone", locked)
	}
	for _, c := range w.sim.Calls() {
		if c.Action == "DeleteSnapshot" && c.Code != "" {
			t.Errorf("retention tried a DeleteSnapshot that failed with %s (the locked one)", c.Code)
		}
	}
	// unlocked is newest first: the newest completed one stays (--keep 1), the other goes.
	if _, ok := w.describeSnapshot(unlocked[0]); !ok {
		t.Errorf("%s, the newest completed snapshot, was deleted\n%s", unlocked[0], res.stdout)
	}
	if _, ok := w.describeSnapshot(unlocked[1]); ok {
		t.Errorf("%s, beyond --keep 1 and not locked, was kept\n%s", unlocked[1], res.stdout)
	}
	if !strings.Contains(res.stdout, "deleted 1 ["+unlocked[1]+"]") {
		t.Errorf("retention output:\n%s", res.stdout)
	}
	// A locked snapshot cannot be deleted by hand either: that is the point.
	_, err = w.ec2.DeleteSnapshot(w.ctx(), &ec2.DeleteSnapshotInput{SnapshotId: aws.String(locked)})
	if !cloud.HasCode(err, "SnapshotLocked") {
		t.Errorf("DeleteSnapshot of the locked snapshot: %v, want SnapshotLocked", err)
	}
}

// TestLockDays: --lock-snapshots takes whole days as 30d or a duration of whole days, within EBS's range.
func TestLockDays(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"30d": 30, "720h": 30, "1d": 1, "0": 0, "off": 0, "36500d": 36500} {
		var d lockDays
		if err := d.Set(in); err != nil || int(d) != want {
			t.Errorf("%q: %d, %v; want %d", in, d, err, want)
		}
	}
	for _, in := range []string{"36h", "0d", "36501d", "x", "-1d", "90m"} {
		var d lockDays
		if err := d.Set(in); err == nil {
			t.Errorf("%q accepted as %d days", in, d)
		}
	}
}
