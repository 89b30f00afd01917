package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
)

func TestPlanRetention(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	snap := func(id, state, vol string, gen, hour int, consistent bool) cloud.Snapshot {
		return cloud.Snapshot{ID: id, State: state, SourceVolume: vol, Generation: gen, StartTime: at(hour), Consistent: consistent}
	}
	const done, pending, failed = "completed", "pending", "error"
	// The live volume vol-2 (generation 2) was restored from s-src (hour 2).
	live := liveLineage{VolumeID: "vol-2", Source: "s-src", Cut: at(2)}
	tests := []struct {
		name       string
		snaps      []cloud.Snapshot // newest first, as listSlotSnapshots orders them
		keep       int
		wantDelete []string
	}{
		{
			name: "keeps the newest N completed, deletes the older ones",
			snaps: []cloud.Snapshot{
				snap("s-9", done, "vol-2", 2, 9, true), snap("s-8", done, "vol-2", 2, 8, true),
				snap("s-7", done, "vol-2", 2, 7, true), snap("s-src", done, "vol-1", 1, 2, true), snap("s-old", done, "vol-1", 1, 1, true),
			},
			keep:       2,
			wantDelete: []string{"s-7", "s-src", "s-old"},
		},
		{
			name: "pending and error snapshots are neither deleted nor counted",
			snaps: []cloud.Snapshot{
				snap("s-new", pending, "vol-2", 2, 10, true), snap("s-bad", failed, "vol-2", 2, 9, true),
				snap("s-8", done, "vol-2", 2, 8, true), snap("s-7", done, "vol-2", 2, 7, true),
			},
			keep:       1,
			wantDelete: []string{"s-7"},
		},
		{
			name: "the newest consistent snapshot survives beyond N",
			snaps: []cloud.Snapshot{
				snap("s-9", done, "vol-2", 2, 9, false), snap("s-8", done, "vol-2", 2, 8, false),
				snap("s-7", done, "vol-2", 2, 7, true), snap("s-6", done, "vol-2", 2, 6, true),
			},
			keep:       1,
			wantDelete: []string{"s-8", "s-6"},
		},
		{
			name: "a snapshot of another volume newer than the live volume's source survives",
			snaps: []cloud.Snapshot{
				snap("s-9", done, "vol-2", 2, 9, true),
				snap("s-late", done, "vol-1", 1, 5, true), // vol-1 went on writing after the cut
				snap("s-src", done, "vol-1", 1, 2, true), snap("s-old", done, "vol-1", 1, 1, true),
			},
			keep:       1,
			wantDelete: []string{"s-src", "s-old"},
		},
		{
			name:  "keep larger than the count deletes nothing",
			snaps: []cloud.Snapshot{snap("s-9", done, "vol-2", 2, 9, true), snap("s-8", done, "vol-2", 2, 8, true)},
			keep:  5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range planRetention(tc.snaps, tc.keep, live) {
				if v.Why == "" {
					t.Errorf("%s has no reason", v.Snapshot.ID)
				}
				if v.Delete {
					got = append(got, v.Snapshot.ID)
				}
			}
			if !slices.Equal(got, tc.wantDelete) {
				t.Errorf("deleted %v, want %v", got, tc.wantDelete)
			}
		})
	}
}

// TestSnapshotCommandRetention runs `handover snapshot --keep 1` in the simulator against a slot with a
// history: an old volume, the snapshot the live volume was restored from, periodic snapshots of the live
// volume, a late snapshot of the old volume, and one in error.
func TestSnapshotCommandRetention(t *testing.T) {
	t.Parallel()
	// The history this test builds snapshots one volume several times within EBS's 15 s per-volume rate
	// limit; the command under test takes one snapshot per volume and is not what the limit is about.
	w := newDownWorld(t, func(o *sim.Options) { o.SnapshotInterval = -1 })
	inst := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	v1 := w.createSlotVolume("us-east-1a", 1, nil)
	// Start times order the slot's snapshots; the pauses keep them distinct at the API's millisecond.
	snapshot := func(vol string, generation int) string {
		time.Sleep(3 * time.Millisecond)
		return w.snapshot(vol, generation, true, false)
	}
	old := snapshot(v1, 1)
	src := snapshot(v1, 1)
	w.waitSnapshotState(src, "completed")
	v2 := w.volumeFromSnapshot("us-east-1a", 2, src)
	w.attach(v2, inst)
	p1 := snapshot(v2, 2)
	late := snapshot(v1, 1)
	bad := snapshot(v2, 2)
	p2 := snapshot(v2, 2)
	if err := w.sim.FailSnapshot(bad); err != nil {
		t.Fatal(err)
	}
	w.waitSnapshotState(p2, "completed")
	w.waitSnapshotState(late, "completed")

	dry := w.runAgent(w.ctx(), inst, nil, "snapshot", "--keep", "1", "--dry-run")
	if dry.code != fail.CodeOK {
		t.Fatalf("dry run exit %d: %s", dry.code, dry.stderr)
	}
	for _, id := range []string{p1, src, old} {
		if !strings.Contains(dry.stdout, "would delete "+id) {
			t.Errorf("dry run does not announce deleting %s:\n%s", id, dry.stdout)
		}
	}
	if n := len(w.callsBy("DeleteSnapshot", "")) + len(w.callsBy("CreateSnapshot", inst)); n != 0 {
		t.Fatalf("dry run made %d mutating calls", n)
	}

	// The snapshot the command takes stays pending: retention must keep it.
	release := w.sim.Hold(sim.SnapshotComplete, "")
	defer release()
	res := w.runAgent(w.ctx(), inst, nil, "snapshot", "--keep", "1")
	if res.code != fail.CodeOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	creates := w.callsBy("CreateSnapshot", inst)
	if len(creates) != 1 {
		t.Fatalf("%d CreateSnapshot calls by the instance, want 1", len(creates))
	}
	var taken string
	for _, s := range w.slotSnapshots("data") {
		if s.SourceInstance == inst {
			taken = s.ID
			if s.SourceVolume != v2 || s.Generation != 2 || s.Tags[cloud.TagGroup] != w.group || s.Tags[cloud.TagSlot] != "data" {
				t.Errorf("new snapshot tags = %v", s.Tags)
			}
		}
	}
	if taken == "" {
		t.Fatalf("no snapshot with %s=%s", cloud.TagSourceInstance, inst)
	}
	for _, id := range []string{p1, src, old} {
		if _, ok := w.describeSnapshot(id); ok {
			t.Errorf("%s should have been deleted (beyond --keep 1, not protected)", id)
		}
	}
	for id, why := range map[string]string{
		taken: "pending (the one just taken)", p2: "newest completed", bad: "in error",
		late: "taken from the old volume after the live volume's source",
	} {
		if _, ok := w.describeSnapshot(id); !ok {
			t.Errorf("%s was deleted; it must be kept: %s", id, why)
		}
	}
	if got := len(w.callsBy("DeleteSnapshot", inst)); got != 3 {
		t.Errorf("%d DeleteSnapshot calls, want 3", got)
	}
}

// TestSnapshotCommandFreezesAMountedVolume: a mounted volume is frozen for the call (so the snapshot is
// tagged consistent) and writable afterwards.
func TestSnapshotCommandFreezesAMountedVolume(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newDownWorld(t)
	inst := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: w.group}, true)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	w.attach(vol, inst)
	mp := w.mountNew(inst, vol, "hello")
	res := w.runAgent(w.ctx(), inst, nil, "snapshot", "--volume", "data:/dev/sdf:"+mp)
	if res.code != fail.CodeOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	snaps := w.slotSnapshots("data")
	if len(snaps) != 1 || !snaps[0].Consistent || snaps[0].SourceVolume != vol {
		t.Fatalf("snapshots = %+v, want one consistent snapshot of %s", snaps, vol)
	}
	if !strings.Contains(res.stderr, "frozen") || !strings.Contains(res.stderr, "thawed") {
		t.Errorf("the log does not show the freeze and thaw:\n%s", res.stderr)
	}
	assertWritable(t, mp)
	if b, err := os.ReadFile(filepath.Join(mp, "data.txt")); err != nil || string(b) != "hello" {
		t.Errorf("data after the snapshot = %q, %v", b, err)
	}

	// No volume attached for a slot: one clear line, exit 3, nothing created.
	res = w.runAgent(w.ctx(), inst, nil, "snapshot", "--volume", "logs:/dev/sdg:/var/log/app")
	if res.code != fail.CodePrecondition || !strings.Contains(res.stderr, "handover up") {
		t.Errorf("snapshot of a slot with no volume: exit %d, stderr %q; want exit 3 saying to run up", res.code, res.stderr)
	}
	if got := len(w.callsBy("CreateSnapshot", inst)); got != 1 {
		t.Errorf("%d CreateSnapshot calls, want 1", got)
	}
}
